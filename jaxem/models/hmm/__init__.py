"""Hidden Markov models: inference (`_inference`), the Baum-Welch base (`_base`), emission families."""

from ._base import HMMPosterior as HMMPosterior
from ._base import HMMStatistics as HMMStatistics
from .categorical import CategoricalHMM as CategoricalHMM
from .categorical import CategoricalHMMParams as CategoricalHMMParams
from .gaussian import GaussianHMM as GaussianHMM
from .gaussian import GaussianHMMParams as GaussianHMMParams
from .poisson import PoissonHMM as PoissonHMM
from .poisson import PoissonHMMParams as PoissonHMMParams
from .generic import HMM as HMM
from .generic import HMMParams as HMMParams
