"""Poisson emissions: `PoissonHMM` (the M-step is `PoissonMixture`'s, on γ-weighted frames)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ... import _prior
from ..._init import init_from_responsibilities
from ..poisson_mixture import PoissonMixture, PoissonMixtureParams
from ._base import HiddenMarkovModel


class PoissonHMMParams(NamedTuple):
    """initial_probs (K,), transition_matrix (K, K), rates (K, D): E[x_td | z_t = k]."""

    initial_probs: jax.Array
    transition_matrix: jax.Array
    rates: jax.Array


@dataclasses.dataclass(frozen=True)
class PoissonHMM(HiddenMarkovModel):
    """An HMM whose emissions are products of independent Poissons,
    log p(x_t | z_t = k) = Σ_d [x_td log λ_kd - λ_kd - log Γ(x_td + 1)]; the M-step
    λ_kd = Σ w γ x / Σ w γ is `PoissonMixture`'s (floored at ``min_rate``).

    Args:
      n_states: K.
      min_rate: floor of the rates.
      inference: "sequential", "parallel" or "auto" (see `GaussianHMM`).
      prior: None (maximum likelihood), a `jaxem.HMMPrior` (MAP Baum-Welch: Dirichlet rows on π
        and A, and the emission prior (a `jaxem.GammaPrior` on the rates); `jaxem.fit` then reports the log posterior), or
        "default" (resolved by `jaxem.fit` with `jaxem.default_prior`).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.poisson(jax.random.key(0), 3.0, (2, 100, 1)).astype(float)
      >>> model = jaxem.PoissonHMM(n_states=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
    """

    n_states: int
    min_rate: float = 1e-6
    inference: str = "auto"
    prior: Any = None
    _support_message = "PoissonHMM needs non-negative X (counts); fix the negative entries"

    def __post_init__(self):
        self._check_config()
        _prior.check_prior(self, _prior.HMMPrior)
        if isinstance(self.prior, _prior.HMMPrior) and not isinstance(
                self.prior.emission, (type(None), _prior.GammaPrior)):
            raise ValueError("PoissonHMM's HMMPrior emission must be None or a jaxem.GammaPrior.")
        self._pm

    @property
    def _pm(self) -> PoissonMixture:
        p = self.prior
        emission = p.emission if isinstance(p, _prior.HMMPrior) else None
        if emission is not None:
            emission = dataclasses.replace(emission, weights_concentration=1.0)
        return PoissonMixture(self.n_states, self.min_rate, prior=emission)

    def _emission_log_prior(self, prior, params):
        return self._pm._theta_log_kernel(prior, params.rates)

    def n_features(self, params) -> int:
        return params.rates.shape[-1]

    def _valid(self, X):
        return (X >= 0).all(-1)

    def _mixture_params(self, params):
        return PoissonMixtureParams(jnp.ones(self.n_states, params.rates.dtype), params.rates)

    def _log_emission_fn(self, params):
        return self._pm._log_joint_fn(self._mixture_params(params))

    def _emission_statistics(self, params, frames, rw):
        """(N_k, Σ_n r_nk x_n): `PoissonMixture`'s statistics."""
        return self._pm._stats(rw, frames)

    def _emission_maximize(self, est, params):
        new, status = self._pm._params_from_stats(est[0], est[1], self._mixture_params(params))
        return params._replace(rates=new.rates), status

    def _emission_init(self, key, frames, w, pi, A):
        pm = init_from_responsibilities(self._pm, key, frames, w, "kmeans")
        return PoissonHMMParams(pi, A, pm.rates)

    def _draw(self, key, params, z):
        return jax.random.poisson(key, params.rates[z]).astype(params.rates.dtype)

    def _n_emission_parameters(self, params) -> int:
        return int(params.rates.size)
