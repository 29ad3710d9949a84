"""Model families."""

from .gaussian_mixture import GaussianMixture as GaussianMixture
from .gaussian_mixture import GaussianMixtureParams as GaussianMixtureParams
from .gaussian_mixture import GaussianMixtureStatistics as GaussianMixtureStatistics

# Latent-variable families beyond Gaussian mixtures (issue 4).
from ._linear_gaussian import LatentFactorPosterior as LatentFactorPosterior
from ._linear_gaussian import LatentFactorStatistics as LatentFactorStatistics
from ._product_mixture import ProductMixtureStatistics as ProductMixtureStatistics
from .bernoulli_mixture import BernoulliMixture as BernoulliMixture
from .bernoulli_mixture import BernoulliMixtureParams as BernoulliMixtureParams
from .factor_analysis import FactorAnalysis as FactorAnalysis
from .factor_analysis import FactorAnalysisParams as FactorAnalysisParams
from .poisson_mixture import PoissonMixture as PoissonMixture
from .poisson_mixture import PoissonMixtureParams as PoissonMixtureParams
from .ppca import PPCA as PPCA
from .ppca import PPCAParams as PPCAParams

# issue 18: mixtures of factor analysers and of probabilistic PCA.
from ._mixture_linear_gaussian import MixtureFactorPosterior as MixtureFactorPosterior
from ._mixture_linear_gaussian import MixtureFactorStatistics as MixtureFactorStatistics
from .mixture_factor_analyzers import MixtureOfFactorAnalyzers as MixtureOfFactorAnalyzers
from .mixture_factor_analyzers import (
    MixtureOfFactorAnalyzersParams as MixtureOfFactorAnalyzersParams)
from .mixture_ppca import MixturePPCA as MixturePPCA
from .mixture_ppca import MixturePPCAParams as MixturePPCAParams
