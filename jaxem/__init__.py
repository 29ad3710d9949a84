"""jaxem: differentiable Expectation-Maximization in JAX."""

from ._elbo import elbo as elbo
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._mstep import ClosedFormMStep as ClosedFormMStep
from ._status import Status as Status
from ._status import describe_status as describe_status
from .models import GaussianMixture as GaussianMixture
from .models import GaussianMixtureParams as GaussianMixtureParams

# generalized EM (issue 3)
from ._fisher import fisher_score as fisher_score
from ._mixture import MixtureModel as MixtureModel
from ._mstep import GradientMStep as GradientMStep

__version__ = "0.1.0"
