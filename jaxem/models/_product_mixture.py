"""Mixtures of product distributions whose M-step is a weighted mean (Bernoulli, Poisson).

For a mixture of D-dimensional products of one-parameter exponential families with mean parameter
θ_kd (the Bernoulli probability, the Poisson rate), ℓ_nk = log π_k + Σ_d log p(x_nd | θ_kd) and EM is
(McLachlan & Peel 2000, §1.6; Bishop 2006, §9.3.3):
  E-step: r_nk = softmax_k ℓ_nk;
  M-step: N_k = Σ_n w_n r_nk,  π_k = N_k / Σ_j N_j,  θ_kd = clip(Σ_n w_n r_nk x_nd / N_k).
Q is concave in each θ_kd, so the clipped mean is the exact maximiser over the clipped box and every
iteration is still an EM step (the log-likelihood never decreases). N_k carries +10·eps (as in the
Gaussian mixture) and an (almost) empty component keeps its previous θ_k with
``Status.EMPTY_COMPONENT``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._chunk import chunked_sum
from .._init import init_from_responsibilities
from .._status import Status, flag
from .._validate import as_data, is_concrete, validate
from .._where import select, where
from ._base import Mixture, weighted_posterior


class ProductMixture(Mixture):
    """Shared machinery; subclasses provide ``_clip``, ``_log_joint_fn``, ``_make``, ``_theta``,
    ``_valid`` and ``_data_message``."""

    n_components: int
    chunk_size: int | None = None

    def n_features(self, params) -> int:
        return self._theta(params).shape[-1]

    def n_parameters(self, params) -> int:
        K, D = self._theta(params).shape[-2:]
        return K * D + K - 1

    def log_joint_matrix(self, params, X):
        """(N, K) log π_k + Σ_d log p(x_nd | θ_kd)."""
        return self._log_joint_fn(params)(X)

    # --- data checks ----------------------------------------------------------------------------
    def check_data(self, X) -> None:
        """ValueError (outside jit) if X is outside the family's support."""
        if is_concrete(X) and not bool(jnp.all(self._valid(X) | ~jnp.isfinite(X))):
            raise ValueError(self._data_message)

    # --- M-step ---------------------------------------------------------------------------------
    @staticmethod
    def _stats(rw, x):
        return jnp.sum(rw, 0), rw.T @ x

    def _params_from_stats(self, nk, sx, prev=None):
        eps = 10 * jnp.finfo(sx.dtype).eps
        nk_e = nk + eps
        weights = nk_e / jnp.sum(nk_e)
        theta = self._clip(sx / nk_e[:, None])
        empty = nk < eps * jnp.sum(nk)
        if prev is not None:
            theta = where(empty[:, None], self._theta(prev), theta)
        return self._make(weights, theta), flag(jnp.any(empty), Status.EMPTY_COMPONENT)

    def m_step(self, posterior, X, weights=None, params=None):
        """Closed-form M-step from responsibilities ``posterior (N, K)``."""
        X, w = as_data(X, weights)
        nk, sx = self._stats(posterior * w[:, None], X)
        return self._params_from_stats(nk, sx, params)[0]

    def em_update(self, params, X, weights):
        """Fused E+M step streamed over row blocks. Data outside the support (under jit) returns
        the parameters unchanged with ``Status.INVALID_INPUT``."""
        lj = self._log_joint_fn(params)

        def chunk(x, wc):
            rw, ll = weighted_posterior(lj(x), wc)
            return self._stats(rw, x), ll

        (nk, sx), ll = chunked_sum(chunk, X, weights, self.chunk_size, self.n_components)
        new, status = self._params_from_stats(nk, sx, params)
        bad = ~jnp.all(self._valid(X) | (weights == 0)[:, None])
        new = select(bad, params, new)
        return new, ll, status | flag(bad, Status.INVALID_INPUT)

    def init(self, key, X, weights=None, method: str = "kmeans"):
        """Parameters from ``method`` ("kmeans", "k-means++", "random", "random_from_data")
        responsibilities followed by one M-step (`jaxem._init.init_from_responsibilities`)."""
        X, w = as_data(X, weights)
        validate(X, w, self.n_components)
        self.check_data(X)
        return init_from_responsibilities(self, key, X, w, method)

    def sample(self, key, params, n: int, return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)`` (and their components if ``return_labels``)."""
        kz, kx = jax.random.split(key)
        z = jax.random.categorical(kz, jnp.log(params.weights), shape=(n,))
        x = self._draw(kx, self._theta(params)[z])
        return (x, z) if return_labels else x
