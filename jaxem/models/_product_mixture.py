"""Mixtures of product distributions whose M-step is a weighted mean (Bernoulli, Poisson).

For a mixture of D-dimensional products of one-parameter exponential families with mean parameter
θ_kd (the Bernoulli probability, the Poisson rate), ℓ_nk = log π_k + Σ_d log p(x_nd | θ_kd) and EM is
(McLachlan & Peel 2000, §1.6; Bishop 2006, §9.3.3):
  E-step: r_nk = softmax_k ℓ_nk;
  M-step: N_k = Σ_n w_n r_nk,  π_k = N_k / Σ_j N_j,  θ_kd = clip(Σ_n w_n r_nk x_nd / N_k).
The expected sufficient statistics are N_k and Σ_n w_n r_nk x_n (`ProductMixtureStatistics`).
Q is concave in each θ_kd, so the clipped mean is the exact maximiser over the clipped box and every
iteration is still an EM step (the log-likelihood never decreases). N_k is floored at
10·eps·Σ_j N_j (as in the Gaussian mixture: invariant under w -> c·w) and an (almost) empty
component keeps its previous θ_k with ``Status.EMPTY_COMPONENT``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import _prior
from .._checks import as_key
from .._labels import clamp, labelled_sum
from .._init import init_from_responsibilities
from .._status import Status, flag
from .._validate import as_data, check_sample_params, is_concrete, validate
from .._where import select, where
from ._base import Mixture, weighted_posterior


class ProductMixtureStatistics(NamedTuple):
    """Expected sufficient statistics of a product mixture (additive over rows).

    Attributes:
      counts: ``(K,)`` N_k = Σ_n w_n r_nk.
      sum_x: ``(K, D)`` Σ_n w_n r_nk x_n.
      log_likelihood: ``()`` Σ_n w_n log p(x_n | θ).
      total_weight: ``()`` Σ_n w_n.
      n_invalid: ``()`` rows with positive weight outside the family's support (0 for valid data).
    """

    counts: jax.Array
    sum_x: jax.Array
    log_likelihood: jax.Array
    total_weight: jax.Array
    n_invalid: jax.Array


class ProductMixture(Mixture):
    """Shared machinery; subclasses provide ``_clip``, ``_log_joint_fn``, ``_make``, ``_theta``,
    ``_valid`` and ``_data_message``."""

    n_components: int
    chunk_size: int | None = None

    def n_features(self, params) -> int:
        return self._theta(params).shape[-1]

    def _param_shapes(self, params) -> dict:
        K, D = self.n_components, self._theta(params).shape[-1]
        return {"weights": (K,), self._theta_name: (K, D)}

    def score_samples(self, params, X):
        """``(N,)`` log p(x_n | params); -inf for a row outside the family's support (its
        probability is 0), NaN for a row with NaN."""
        lp = super().score_samples(params, X)
        X = jnp.asarray(X, lp.dtype)
        return where(jnp.all(self._valid(X) | jnp.isnan(X), axis=1), lp, -jnp.inf)

    def log_likelihood(self, params, X, weights=None, *, labels=None):
        """Weighted sum of log p(x_n | params): -inf if a row with positive weight lies outside
        the family's support (``labels``: see `Mixture.log_likelihood`)."""
        X, w = as_data(X, weights, self.n_features(params))
        ll = super().log_likelihood(params, X, w, labels=labels)
        outside = jnp.any(~jnp.all(self._valid(X) | jnp.isnan(X), axis=1) & (w > 0))
        return where(outside, -jnp.inf, ll)

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

    # --- statistics and M-step ------------------------------------------------------------------
    def sufficient_statistics(self, params, X, weights=None, *, reference=None, labels=None
                              ) -> ProductMixtureStatistics:
        """Expected sufficient statistics at ``params`` (a `ProductMixtureStatistics`), additive
        over rows (``reference`` is not used: the statistics are first moments). ``labels (N,)``
        (-1 unknown) clamp the labelled rows' responsibilities (`jaxem._labels`)."""
        X, w = as_data(X, weights, self.n_features(params))
        return self._statistics(params, X, w, labels)

    @staticmethod
    def _stats(rw, x):
        return jnp.sum(rw, 0), rw.T @ x

    def _statistics(self, params, X, weights, labels=None) -> ProductMixtureStatistics:
        """One pass streamed over row blocks; rows outside the support with positive weight are
        counted (``n_invalid``), so that `maximize` refuses them under jit."""
        lj = self._log_joint_fn(params)

        def chunk(x, lb, wc):
            rw, ll = weighted_posterior(clamp(lj(x), lb), wc)
            bad = jnp.sum(where(jnp.all(self._valid(x), 1) | (wc == 0), 0.0, 1.0))
            return self._stats(rw, x), ll, bad

        (nk, sx), ll, bad = labelled_sum(chunk, X, weights, labels, self.chunk_size,
                                         self.n_components)
        return ProductMixtureStatistics(nk, sx, ll, jnp.sum(weights), bad)

    def _maximize(self, st: ProductMixtureStatistics, params, reference=None):
        """θ_kd = clip(Σ w r x / N_k); data outside the support (``n_invalid > 0``) leaves the
        parameters unchanged with ``Status.INVALID_INPUT``."""
        new, status = self._params_from_stats(st.counts, st.sum_x, params)
        bad = st.n_invalid > 0
        return select(bad, params, new), status | flag(bad, Status.INVALID_INPUT)

    def _params_from_stats(self, nk, sx, prev=None):
        eps = 10 * jnp.finfo(sx.dtype).eps
        # N_k floored at 10·eps of the total: invariant under w -> c·w (see GaussianMixture).
        nk_e = jnp.maximum(nk, jnp.maximum(eps * jnp.sum(nk), jnp.finfo(sx.dtype).tiny))
        prior = _prior.active(self)
        if prior is None:
            weights = nk_e / jnp.sum(nk_e)
            theta = self._clip(sx / nk_e[:, None])
        else:  # the posterior mode (MAP M-step), see `jaxem._prior`
            weights = _prior.dirichlet_mode(nk_e, prior.weights_concentration)
            theta = self._clip(self._posterior_mode(prior, nk_e, sx))
        empty = nk < eps * jnp.sum(nk)
        if prev is not None:
            theta = where(empty[:, None], self._theta(prev), theta)
        return self._make(weights, theta), flag(jnp.any(empty), Status.EMPTY_COMPONENT)

    def _log_prior(self, params):
        """θ-dependent part of log p(θ) under ``prior`` (see `jaxem._prior`)."""
        p = _prior.active(self)
        return (_prior.dirichlet_log_kernel(params.weights, p.weights_concentration)
                + self._theta_log_kernel(p, self._theta(params)))

    def m_step(self, posterior, X, weights=None, params=None):
        """Closed-form M-step from responsibilities ``posterior (N, K)``."""
        X, w = as_data(X, weights)
        nk, sx = self._stats(posterior * w[:, None], X)
        return self._params_from_stats(nk, sx, params)[0]

    def init(self, key, X, weights=None, method: str = "kmeans"):
        """Parameters from ``method`` ("kmeans", "k-means++", "random", "random_from_data")
        responsibilities followed by one M-step (`jaxem._init.init_from_responsibilities`).
        ``key``: a `jax.random` key or an int seed."""
        key = as_key(key)
        X, w = as_data(X, weights)
        validate(X, w, self.n_components)
        self.check_data(X)
        return init_from_responsibilities(_prior.for_init(self, X, w), key, X, w, method)

    def sample(self, key, params, n: int, return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)`` (and their components if ``return_labels``); ValueError
        outside jit if the weights are not a distribution or the parameters are not finite."""
        self.check_params(params)
        check_sample_params(params.weights, self._theta(params), names=(self._theta_name,))
        kz, kx = jax.random.split(key)
        z = jax.random.categorical(kz, jnp.log(params.weights), shape=(n,))
        x = self._draw(kx, self._theta(params)[z])
        return (x, z) if return_labels else x
