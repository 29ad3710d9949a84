"""Mixtures of multivariate Bernoulli distributions (latent class analysis) for binary data."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import _prior
from .._checks import float_in_open_interval
from ._product_mixture import ProductMixture


class BernoulliMixtureParams(NamedTuple):
    """weights (K,), probs (K, D): p(x_d = 1 | z = k)."""

    weights: jax.Array
    probs: jax.Array


@dataclasses.dataclass(frozen=True)
class BernoulliMixture(ProductMixture):
    """A K-component mixture of products of Bernoullis, fitted by EM.

    ℓ_nk = log π_k + Σ_d [x_nd log p_kd + (1 - x_nd) log(1 - p_kd)]
         = log π_k + x_nᵀ logit(p_k) + Σ_d log(1 - p_kd)        (one matrix product for all k);
    E-step r_nk = softmax_k ℓ_nk; M-step π_k = N_k / Σ_j N_j,
    p_kd = clip(Σ_n w_n r_nk x_nd / N_k, min_prob, 1 - min_prob)   (Bishop 2006, §9.3.3).
    X must be in [0, 1] (binary; fractional values are accepted and give a cross-entropy, not a
    normalised density).

    Args:
      n_components: K.
      min_prob: probabilities are clipped to [min_prob, 1 - min_prob] (no log 0).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).
      prior: None (maximum likelihood), a `jaxem.BetaPrior` (MAP estimation: the M-step is
        p_kd = clip((s_kd + a_d - 1) / (N_k + a_d + b_d - 2)) and `jaxem.fit` reports the log
        posterior; see `jaxem._prior`), or "default" (resolved by `jaxem.fit`,
        `jaxem.default_prior`).

    Example:
      >>> import jax, jaxem
      >>> X = (jax.random.uniform(jax.random.key(0), (200, 8)) < 0.3).astype(float)
      >>> model = jaxem.BernoulliMixture(n_components=3)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
    """

    n_components: int
    min_prob: float = 1e-6
    chunk_size: int | None = None
    prior: Any = None
    _data_message = (
        "BernoulliMixture needs X with values in [0, 1] (binary data); binarise it, e.g. "
        "X = (X > threshold).astype(float)."
    )

    def __post_init__(self):
        super().__post_init__()
        float_in_open_interval("min_prob", self.min_prob, 0.0, 0.5)
        _prior.check_prior(self, _prior.BetaPrior)

    def _posterior_mode(self, prior, nk, sx):
        a, b = (_prior._array(v, sx.dtype) for v in (prior.a, prior.b))
        return (sx + a - 1.0) / (nk[:, None] + a + b - 2.0)

    def _theta_log_kernel(self, prior, probs):
        a, b = (_prior._array(v, probs.dtype) for v in (prior.a, prior.b))
        p = self._clip(probs)
        return jnp.sum((a - 1.0) * jnp.log(p) + (b - 1.0) * jnp.log1p(-p))

    _theta_name = "probs"

    def _theta(self, params):
        return params.probs

    def _make(self, weights, probs):
        return BernoulliMixtureParams(weights, probs)

    def _clip(self, p):
        return jnp.clip(p, self.min_prob, 1.0 - self.min_prob)

    @staticmethod
    def _valid(X):
        return (X >= 0) & (X <= 1)

    def _log_joint_fn(self, params):
        p = self._clip(params.probs)
        logit = jnp.log(p) - jnp.log1p(-p)
        c = jnp.sum(jnp.log1p(-p), 1) + jnp.log(params.weights)
        return lambda X: X @ logit.T + c[None]

    def _draw(self, key, probs):
        return jax.random.bernoulli(key, probs).astype(probs.dtype)
