"""Model families."""

from .gaussian_mixture import GaussianMixture as GaussianMixture
from .gaussian_mixture import GaussianMixtureParams as GaussianMixtureParams
