"""jaxem: differentiable Expectation-Maximization in JAX."""

from ._compile import COMPILER_OPTIONS as COMPILER_OPTIONS
from ._elbo import elbo as elbo
from ._fisher import fisher_score as fisher_score
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._io import load as load
from ._io import save as save
from ._online import fit_online as fit_online
from ._precision import PrecisionWarning as PrecisionWarning
from ._mixture import MixtureModel as MixtureModel
from ._mstep import ClosedFormMStep as ClosedFormMStep
from ._mstep import GradientMStep as GradientMStep
from ._status import Status as Status
from ._status import describe_status as describe_status
from .models import BernoulliMixture as BernoulliMixture
from .models import BernoulliMixtureParams as BernoulliMixtureParams
from .models import FactorAnalysis as FactorAnalysis
from .models import FactorAnalysisParams as FactorAnalysisParams
from .models import GaussianMixture as GaussianMixture
from .models import GaussianMixtureParams as GaussianMixtureParams
from .models import GaussianMixtureStatistics as GaussianMixtureStatistics
from .models import LatentFactorPosterior as LatentFactorPosterior
from .models import LatentFactorStatistics as LatentFactorStatistics
from .models import PoissonMixture as PoissonMixture
from .models import PoissonMixtureParams as PoissonMixtureParams
from .models import PPCA as PPCA
from .models import PPCAParams as PPCAParams
from .models import ProductMixtureStatistics as ProductMixtureStatistics

# issue 7: restarts, progress, model selection (jaxem.sklearn is a submodule, imported on demand)
from ._batch import batched as batched
from ._restarts import fit_restarts as fit_restarts
from ._select import SelectionResult as SelectionResult
from ._select import SelectionWarning as SelectionWarning
from ._select import select_n_components as select_n_components

# issue 16: hidden Markov models
from .models.hmm import CategoricalHMM as CategoricalHMM
from .models.hmm import CategoricalHMMParams as CategoricalHMMParams
from .models.hmm import GaussianHMM as GaussianHMM
from .models.hmm import GaussianHMMParams as GaussianHMMParams
from .models.hmm import HMM as HMM
from .models.hmm import HMMParams as HMMParams
from .models.hmm import HMMPosterior as HMMPosterior
from .models.hmm import HMMStatistics as HMMStatistics
from .models.hmm import PoissonHMM as PoissonHMM
from .models.hmm import PoissonHMMParams as PoissonHMMParams

__version__ = "0.1.0"

# issue 14: EM larger than memory
from ._blocks import StreamError as StreamError
from ._stream import fit_stream as fit_stream
from ._stream_init import init_stream as init_stream

# issue 18: standard errors
from ._information import ObservedInformation as ObservedInformation
from ._information import information_coordinates as information_coordinates
from ._information import observed_information as observed_information
from ._information import standard_errors as standard_errors

# issue 18: MAP estimation with conjugate priors (Fraley & Raftery 2007)
from ._prior import BetaPrior as BetaPrior
from ._prior import GammaPrior as GammaPrior
from ._prior import GaussianPrior as GaussianPrior
from ._prior import HMMPrior as HMMPrior
from ._prior import default_prior as default_prior
from ._prior import log_prior as log_prior

# issue 18: mixtures of factor analysers and of probabilistic PCA
from .models import MixtureFactorPosterior as MixtureFactorPosterior
from .models import MixtureFactorStatistics as MixtureFactorStatistics
from .models import MixtureOfFactorAnalyzers as MixtureOfFactorAnalyzers
from .models import MixtureOfFactorAnalyzersParams as MixtureOfFactorAnalyzersParams
from .models import MixturePPCA as MixturePPCA
from .models import MixturePPCAParams as MixturePPCAParams
