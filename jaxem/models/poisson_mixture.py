"""Mixtures of products of independent Poisson distributions for count data."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import _prior
from .._checks import positive_float
from ._product_mixture import ProductMixture


class PoissonMixtureParams(NamedTuple):
    """weights (K,), rates (K, D): E[x_d | z = k]."""

    weights: jax.Array
    rates: jax.Array


@dataclasses.dataclass(frozen=True)
class PoissonMixture(ProductMixture):
    """A K-component mixture of products of Poissons, fitted by EM.

    ℓ_nk = log π_k + Σ_d [x_nd log λ_kd - λ_kd - log Γ(x_nd + 1)]
         = log π_k + x_nᵀ log λ_k - Σ_d λ_kd - Σ_d log Γ(x_nd + 1);
    E-step r_nk = softmax_k ℓ_nk; M-step π_k = N_k / Σ_j N_j,
    λ_kd = max(Σ_n w_n r_nk x_nd / N_k, min_rate)   (McLachlan & Peel 2000, §1.6).
    X must be non-negative (counts; non-integer values are accepted, through Γ).

    Args:
      n_components: K.
      min_rate: rates are floored at this value (no log 0 for a feature a component never sees).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).
      prior: None (maximum likelihood), a `jaxem.GammaPrior` (MAP estimation: the M-step is
        λ_kd = max((s_kd + shape_d - 1) / (N_k + rate), min_rate) and `jaxem.fit` reports the log
        posterior; see `jaxem._prior`), or "default" (resolved by `jaxem.fit`,
        `jaxem.default_prior`).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.poisson(jax.random.key(0), 3.0, (200, 4)).astype(float)
      >>> model = jaxem.PoissonMixture(n_components=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
    """

    n_components: int
    min_rate: float = 1e-6
    chunk_size: int | None = None
    prior: Any = None
    _data_message = (
        "PoissonMixture needs non-negative X (counts); remove or fix the negative entries."
    )

    def __post_init__(self):
        super().__post_init__()
        positive_float("min_rate", self.min_rate)
        _prior.check_prior(self, _prior.GammaPrior)

    def _posterior_mode(self, prior, nk, sx):
        shape = _prior._array(prior.shape, sx.dtype)
        return (sx + shape - 1.0) / (nk[:, None] + prior.rate)

    def _theta_log_kernel(self, prior, rates):
        shape = _prior._array(prior.shape, rates.dtype)
        lam = self._clip(rates)
        return jnp.sum((shape - 1.0) * jnp.log(lam) - prior.rate * lam)

    _theta_name = "rates"

    def _theta(self, params):
        return params.rates

    def _make(self, weights, rates):
        return PoissonMixtureParams(weights, rates)

    def _clip(self, rates):
        return jnp.maximum(rates, self.min_rate)

    @staticmethod
    def _valid(X):
        return X >= 0

    def _log_joint_fn(self, params):
        lam = self._clip(params.rates)
        c = jnp.log(params.weights) - jnp.sum(lam, 1)
        log_lam = jnp.log(lam)
        # Γ at max(x, 0) + 1: a negative count then gives a finite (meaningless) value, which the
        # fused step reports as INVALID_INPUT instead of as a non-finite likelihood.
        return lambda X: (
            X @ log_lam.T
            + c[None]
            - jnp.sum(jax.scipy.special.gammaln(jnp.maximum(X, 0.0) + 1.0), 1)[:, None]
        )

    def _draw(self, key, rates):
        return jax.random.poisson(key, rates).astype(rates.dtype)
