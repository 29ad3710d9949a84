"""Gaussian mixture models with full, diagonal, spherical or tied covariances.

Notation (Bishop 2006, §9.2; scikit-learn's layout). With precision Cholesky factors P_k
(P_k P_kᵀ = Σ_k⁻¹), ℓ_nk = log π_k + log N(x_n | μ_k, Σ_k)
  = log π_k - D/2 log 2π + log|P_k| - ½ ||(x_n - μ_k)ᵀ P_k||².
E-step: r_nk = softmax_k ℓ_nk. M-step from weighted sufficient statistics
  N_k = Σ_n w_n r_nk,  s_k = Σ_n w_n r_nk y_n,  S_k = Σ_n w_n r_nk y_n y_nᵀ  (y_n = x_n - c),
  π_k = N_k / Σ_j N_j,  μ_k = c + s_k / N_k,  Σ_k = S_k / N_k - d_k d_kᵀ + reg_covar · I,
with d_k = μ_k - c and a shift c (the current mixture mean) that keeps the moments well conditioned.
As scikit-learn, N_k carries +10·eps so that an empty component never divides by zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._chunk import chunked_sum
from .._init import initial_responsibilities
from .._status import Status, flag
from .._validate import as_data, validate
from ._base import Mixture

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


class GaussianMixtureParams(NamedTuple):
    """weights (K,), means (K, D), covariances: full (K, D, D), diag (K, D), spherical (K,), tied (D, D)."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class _Stats(NamedTuple):
    nk: jax.Array  # (K,)   Σ w r
    sx: jax.Array  # (K, D) Σ w r y
    sxx: jax.Array  # full (K,D,D) | diag/spherical (K,D) | tied (D,D)


@dataclasses.dataclass(frozen=True)
class GaussianMixture(Mixture):
    """A K-component Gaussian mixture fitted by EM.

    Args:
      n_components: K.
      covariance_type: "full", "diag", "spherical" or "tied" (scikit-learn's meanings and layouts).
      reg_covar: added to the diagonal of every covariance at each M-step, as scikit-learn does.
      chunk_size: rows per block of the streamed E/M pass (None: automatic).

    A component whose mass N_k falls below 10·eps·Σw keeps its previous mean and covariance (its
    weight goes to ~0) and the fit reports ``Status.EMPTY_COMPONENT``. A component whose weight is
    exactly 0 is switched off: it stays at weight 0 with its mean and covariance unchanged, takes no
    responsibility, and is not reported as empty (`jaxem.select_n_components` pads K this way).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 2))
      >>> model = jaxem.GaussianMixture(n_components=2)
      >>> params = model.init(jax.random.key(1), X)
      >>> result = jaxem.fit(model, params, X)
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    chunk_size: int | None = None

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"unknown covariance_type {self.covariance_type!r}; choose one of {COVARIANCE_TYPES}."
            )
        if int(self.n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}.")
        if self.reg_covar < 0:
            raise ValueError(f"reg_covar must be non-negative, got {self.reg_covar}.")

    # --- shapes ---------------------------------------------------------------------------------
    def n_features(self, params) -> int:
        return params.means.shape[-1]

    def n_parameters(self, params) -> int:
        K, D = params.means.shape[-2:]
        cov = {"full": K * D * (D + 1) // 2, "diag": K * D, "tied": D * (D + 1) // 2, "spherical": K}
        return cov[self.covariance_type] + K * D + K - 1

    # --- initialisation -------------------------------------------------------------------------
    def init(self, key, X, weights=None, method: str = "kmeans") -> GaussianMixtureParams:
        """Parameters from ``method`` ("kmeans", "k-means++", "random", "random_from_data")
        responsibilities followed by one M-step, as scikit-learn's ``init_params``."""
        X, w = as_data(X, weights)
        validate(X, w, self.n_components)
        resp = initial_responsibilities(key, X, w, self.n_components, method)
        return self.m_step(resp, X, w)

    # --- log densities --------------------------------------------------------------------------
    def _precision_cholesky(self, cov):
        """P with P Pᵀ = Σ⁻¹ by a triangular solve against the Cholesky factor of Σ."""
        if self.covariance_type in ("full", "tied"):
            L = jnp.linalg.cholesky(cov)
            eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
            Linv = jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
            return jnp.swapaxes(Linv, -1, -2)
        return jax.lax.rsqrt(cov)

    def _log_det(self, P, D):
        if self.covariance_type == "full":
            return jnp.sum(jnp.log(jnp.diagonal(P, axis1=-2, axis2=-1)), -1)
        if self.covariance_type == "tied":
            return jnp.sum(jnp.log(jnp.diagonal(P)))
        if self.covariance_type == "diag":
            return jnp.sum(jnp.log(P), -1)
        return D * jnp.log(P)

    def _log_gauss(self, X, means, P):
        """(N, K) log N(x_n | μ_k, Σ_k), with one matrix product for all components."""
        N, D = X.shape
        ct = self.covariance_type
        if ct == "full":
            y = jnp.einsum("nd,kde->nke", X, P) - jnp.einsum("kd,kde->ke", means, P)[None]
            maha = jnp.sum(y * y, -1)
        elif ct == "tied":
            y = (X @ P)[:, None, :] - (means @ P)[None]
            maha = jnp.sum(y * y, -1)
        elif ct == "diag":
            prec = P * P
            maha = (
                jnp.sum(means**2 * prec, 1)[None]
                - 2.0 * X @ (means * prec).T
                + (X * X) @ prec.T
            )
        else:
            prec = P * P
            maha = (
                jnp.sum(means**2, 1)[None] * prec[None]
                - 2.0 * (X @ means.T) * prec[None]
                + jnp.sum(X * X, 1)[:, None] * prec[None]
            )
        return -0.5 * (D * math.log(2 * math.pi) + maha) + self._log_det(P, D)

    def _log_joint_fn(self, params):
        P = self._precision_cholesky(params.covariances)
        log_pi = jnp.log(params.weights)
        return lambda X: self._log_gauss(X, params.means, P) + log_pi[None]

    def log_joint_matrix(self, params, X):
        """(N, K) log π_k + log N(x_n | μ_k, Σ_k)."""
        return self._log_joint_fn(params)(X)

    # --- sufficient statistics and M-step -------------------------------------------------------
    def _width(self, X):
        return self.n_components * X.shape[1]

    def _stats(self, rw, y):
        """Weighted sufficient statistics from weighted responsibilities rw (n, K) and y = x - c."""
        nk = jnp.sum(rw, 0)
        sx = rw.T @ y
        ct = self.covariance_type
        if ct == "full":
            sxx = jnp.einsum("nk,nd,ne->kde", rw, y, y)
        elif ct == "tied":
            sxx = (jnp.sum(rw, 1)[:, None] * y).T @ y
        else:
            sxx = rw.T @ (y * y)
        return _Stats(nk, sx, sxx)

    def _params_from_stats(self, st: _Stats, c, prev=None):
        """Closed-form maximiser of Q given the statistics; returns ``(params, status)``."""
        dtype = st.sx.dtype
        eps = 10 * jnp.finfo(dtype).eps
        nk_e = st.nk + eps
        total = jnp.sum(st.nk)
        # A component whose weight is exactly 0 is switched off (padding in model selection): it
        # keeps weight 0. With no exact zero, nk_on == nk_e and the iterates are unchanged.
        on = jnp.ones(st.nk.shape, bool) if prev is None else prev.weights > 0
        nk_on = jnp.where(on, nk_e, 0.0)
        weights = nk_on / jnp.sum(nk_on)
        d = st.sx / nk_e[:, None]
        means = c + d
        D = d.shape[1]
        ct = self.covariance_type
        shrink = (2.0 - st.nk / nk_e)  # exact centring correction (≈1)
        if ct == "full":
            cov = st.sxx / nk_e[:, None, None] - shrink[:, None, None] * d[:, :, None] * d[:, None, :]
            cov = cov + self.reg_covar * jnp.eye(D, dtype=dtype)
        elif ct == "tied":
            cov = (st.sxx - jnp.einsum("k,kd,ke->de", nk_on, d, d)) / jnp.sum(nk_on)
            cov = cov + self.reg_covar * jnp.eye(D, dtype=dtype)
        else:
            cov = st.sxx / nk_e[:, None] - shrink[:, None] * d * d + self.reg_covar
            if ct == "spherical":
                cov = jnp.mean(cov, 1)
        empty = st.nk < eps * total
        status = flag(jnp.any(empty & on), Status.EMPTY_COMPONENT)
        if prev is not None:
            means = jnp.where(empty[:, None], prev.means, means)
            if ct != "tied":
                mask = empty.reshape((-1,) + (1,) * (cov.ndim - 1))
                cov = jnp.where(mask, prev.covariances, cov)
        return GaussianMixtureParams(weights, means, cov), status

    @staticmethod
    def _center(X, w, params=None):
        if params is not None:
            return jnp.einsum("k,kd->d", params.weights, params.means) / jnp.sum(params.weights)
        return (w @ X) / jnp.sum(w)

    def m_step(self, posterior, X, weights=None, params=None) -> GaussianMixtureParams:
        """Closed-form M-step from responsibilities ``posterior (N, K)``."""
        X, w = as_data(X, weights)
        c = self._center(X, w, params)
        st = self._stats(posterior * w[:, None], X - c)
        return self._params_from_stats(st, c, params)[0]

    def em_update(self, params, X, weights):
        """Fused E+M step, streamed over row blocks: no (N, K, D) intermediate for large N."""
        lj = self._log_joint_fn(params)
        c = jax.lax.stop_gradient(self._center(X, weights, params))

        def chunk(x, wc):
            l = lj(x)
            lse = jax.scipy.special.logsumexp(l, axis=1)
            rw = jnp.exp(l - lse[:, None]) * wc[:, None]
            ll = jnp.sum(jnp.where(wc > 0, wc * lse, 0.0))
            return self._stats(rw, x - c), ll

        st, ll = chunked_sum(chunk, X, weights, self.chunk_size, self._width(X))
        new, status = self._params_from_stats(st, c, params)
        return new, ll, status

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, key, params, n: int, return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)`` (and their components if ``return_labels``)."""
        kz, ke = jax.random.split(key)
        K, D = params.means.shape
        z = jax.random.categorical(kz, jnp.log(params.weights), shape=(n,))
        eps = jax.random.normal(ke, (n, D), params.means.dtype)
        ct = self.covariance_type
        if ct == "full":
            L = jnp.linalg.cholesky(params.covariances)
            x = params.means[z] + jnp.einsum("nde,ne->nd", L[z], eps)
        elif ct == "tied":
            x = params.means[z] + eps @ jnp.linalg.cholesky(params.covariances).T
        elif ct == "diag":
            x = params.means[z] + eps * jnp.sqrt(params.covariances[z])
        else:
            x = params.means[z] + eps * jnp.sqrt(params.covariances[z])[:, None]
        return (x, z) if return_labels else x

