"""Gaussian mixture models with full, diagonal, spherical or tied covariances.

Notation (Bishop 2006, §9.2; scikit-learn's layout). With Σ_k = L_k L_kᵀ and P_k = L_k⁻ᵀ (so
P_k P_kᵀ = Σ_k⁻¹), the whitened residual y_nk = (x_n - μ_k)ᵀ P_k gives
  ℓ_nk = log π_k + log N(x_n | μ_k, Σ_k) = log π_k - D/2 log 2π + log|P_k| - ½ ||y_nk||².
E-step: r_nk = softmax_k ℓ_nk. M-step from weighted statistics of the same residuals,
  N_k = Σ_n w_n r_nk,  s_k = Σ_n w_n r_nk y_nk,  S_yy,k = Σ_n w_n r_nk y_nk y_nkᵀ,
un-whitened with L_k: d_k = L_k s_k / N_k, S_k = L_k S_yy,k L_kᵀ, and
  π_k = N_k / Σ_j N_j,  μ_k ← μ_k + d_k,  Σ_k ← S_k / N_k - d_k d_kᵀ + reg_covar · I.
The residuals are taken about each component's own previous mean, so the moments never cancel
catastrophically (float32 stays exact to rounding), and the E-step's GEMM output is reused.
N_k is floored at 10·eps·Σ_j N_j (scikit-learn adds 10·eps, which is not invariant under a
rescaling of the weights), so that an empty component never divides by zero.

Full covariances take a faster route ("moments", `jaxem.models._gaussian_moments`): two GEMMs
of raw moment features per block, in float64 always, in float32 where a bound computed from the
current parameters each iteration says the moments' cancellation is harmless (`MOMENT_TOLERANCE`),
the residual route otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _prior
from .._chunk import chunked_sum_rows
from .._compile import compiled
from .._init import init_from_responsibilities
from .._labels import clamp, labelled_sum
from .._linalg import cholesky_factors
from .._missing import (allows_missing, check_missing, complete_rows, mean_imputed,
                        observed_weights)
from .._status import Status, flag
from .._checks import as_key, nonnegative_float, one_of
from .._validate import as_data, check_sample_params, check_values, is_concrete, validate
from .._where import cond, where
from . import _gaussian_missing, _gaussian_moments
from ._gaussian_moments import MOMENT_TOLERANCE as MOMENT_TOLERANCE
from ._base import Mixture, weighted_posterior

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
STATISTICS = ("auto", "residuals", "moments")


class GaussianMixtureParams(NamedTuple):
    """weights (K,), means (K, D), covariances: full (K, D, D), diag (K, D), spherical (K,), tied (D, D)."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class _Stats(NamedTuple):
    """Weighted statistics of whitened residuals y_nk about the current means."""

    nk: jax.Array  # (K,)   Σ_n w_n r_nk
    sy: jax.Array  # (K, D) Σ_n w_n r_nk y_nk
    syy: jax.Array  # full (K,D,D) | tied (D,D) | diag/spherical (K,D)


class GaussianMixtureStatistics(NamedTuple):
    """Expected complete-data sufficient statistics of a Gaussian mixture (additive over rows).

    About a reference point ref_k per component (by default the means of the parameters they were
    computed at; `GaussianMixture.sufficient_statistics`), with r_nk the responsibilities:

    Attributes:
      counts: ``(K,)`` N_k = Σ_n w_n r_nk.
      sum_x: ``(K, D)`` Σ_n w_n r_nk (x_n - ref_k).
      sum_xx: Σ_n w_n r_nk (x_n - ref_k)(x_n - ref_k)ᵀ: full ``(K, D, D)``; tied ``(D, D)``
        (summed over k); diag and spherical ``(K, D)`` (the diagonal only).
      log_likelihood: ``()`` Σ_n w_n log p(x_n | θ) at the parameters of the E-step.
      total_weight: ``()`` Σ_n w_n.
    """

    counts: jax.Array
    sum_x: jax.Array
    sum_xx: jax.Array
    log_likelihood: jax.Array
    total_weight: jax.Array


class _Geometry(NamedTuple):
    """Per-parameter quantities of the E-step: Σ = L Lᵀ, P = L⁻ᵀ (std-devs / precisions' roots for
    diag and spherical), log|P| and log π."""

    means: jax.Array
    L: jax.Array
    P: jax.Array
    log_det: jax.Array
    log_pi: jax.Array


@compiled(static_argnames=("model",))
def _impute(model, params, X):
    return _gaussian_missing.impute(model, params, X)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), tree)


@dataclasses.dataclass(frozen=True)
class GaussianMixture(Mixture):
    """A K-component Gaussian mixture fitted by EM.

    Args:
      n_components: K.
      covariance_type: "full", "diag", "spherical" or "tied" (scikit-learn's meanings and layouts).
      reg_covar: added to the diagonal of every covariance at each M-step, as scikit-learn does
        (finite, >= 0, in units of X squared: EM is equivariant under x -> s·x + c only with
        reg_covar scaled by s², or 0).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).
      accumulate_dtype: dtype in which the per-block statistics are summed and the M-step solved
        (None: the data's). ``jnp.float64`` with float32 data computes the E-step in float32 and
        accumulates in float64 (needs ``jax_enable_x64``); parameters stay float32.
      statistics: how a fused EM iteration forms its statistics (see the module docstring):
        "residuals" (whitened residuals about each component's mean; exact to rounding),
        "moments" (full covariances only: raw moments φ(x) = [vech(x xᵀ), x, 1], two GEMMs per
        iteration, about 2x faster; float32 data "guarded": each iteration whose parameters bound
        the moments' cancellation above `MOMENT_TOLERANCE` takes the residual route instead) or
        "auto" (moments for full covariances, guarded in float32, residuals otherwise).
      prior: None (maximum likelihood), a `jaxem.GaussianPrior` (EM then finds the MAP estimate,
        Fraley & Raftery 2007: the M-step is the posterior mode, and `jaxem.fit`'s ``trace`` and
        ``log_likelihood`` report the log posterior; see `jaxem._prior`), or "default" (resolved
        by `jaxem.fit` from the data with `jaxem.default_prior`, mclust's ``defaultPrior``).
      missing: "error" (NaN in X is a ValueError outside jit, ``Status.INVALID_INPUT`` under it)
        or "marginalize": NaN entries are missing values, integrated out exactly in the E-step
        (Ghahramani & Jordan 1994; ``jaxem.models._gaussian_missing``): each row is scored by its
        observed entries' marginal, and E[x_m | x_o], Cov[x_m | x_o] fill the sufficient
        statistics, so `sufficient_statistics`/`maximize`, `jaxem.fit`, `fit_stream` and sharded
        fits run EM on the observed-data likelihood. A row with no observed entry has weight 0.
        `impute` fills NaN with E[x_m | x_o]. The posterior-based `m_step` needs complete data;
        `q_function` scores the observed entries, so `jaxem.GradientMStep` fits such data too.
        Costs one sweep of Σ (O(D³)) per row, and per component for "full".

    A component whose mass N_k falls below 10·eps·Σw keeps its previous mean and covariance (its
    weight goes to ~0) and the fit reports ``Status.EMPTY_COMPONENT``. A component whose weight is
    exactly 0 is switched off: it stays at weight 0 with its mean and covariance unchanged, takes no
    responsibility, and is not reported as empty (`jaxem.select_n_components` pads K this way).

    Example:
      >>> import jax, jax.numpy as jnp, jaxem
      >>> noise = jax.random.normal(jax.random.key(0), (200, 2))
      >>> X = noise + jnp.where(jnp.arange(200)[:, None] < 100, -3.0, 3.0)  # blobs at ∓(3, 3)
      >>> model = jaxem.GaussianMixture(n_components=2)
      >>> params = model.init(0, X)                    # an int seed or a jax.random key
      >>> result = jaxem.fit(model, params, X)
      >>> bool(result.converged), sorted(round(float(m)) for m in result.params.means[:, 0])
      (True, [-3, 3])
      >>> [round(float(w), 1) for w in result.params.weights]
      [0.5, 0.5]
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    chunk_size: int | None = None
    accumulate_dtype: Any = None
    statistics: str = "auto"
    prior: Any = None
    missing: str = "error"

    def __post_init__(self):
        super().__post_init__()
        _prior.check_prior(self, _prior.GaussianPrior)
        check_missing(self.missing)
        one_of("covariance_type", self.covariance_type, COVARIANCE_TYPES)
        one_of("statistics", self.statistics, STATISTICS)
        if self.statistics == "moments" and self.covariance_type != "full":
            raise ValueError("statistics='moments' is for covariance_type='full'; use 'auto' or "
                             "'residuals' with other covariance types.")
        nonnegative_float("reg_covar", self.reg_covar)

    # --- shapes ---------------------------------------------------------------------------------
    def n_features(self, params) -> int:
        return params.means.shape[-1]

    def _param_shapes(self, params) -> dict:
        K, D = self.n_components, params.means.shape[-1]
        cov = {"full": (K, D, D), "diag": (K, D), "spherical": (K,), "tied": (D, D)}
        return {"weights": (K,), "means": (K, D), "covariances": cov[self.covariance_type]}

    def n_parameters(self, params) -> int:
        K, D = params.means.shape[-2:]
        cov = {"full": K * D * (D + 1) // 2, "diag": K * D, "tied": D * (D + 1) // 2, "spherical": K}
        return cov[self.covariance_type] + K * D + K - 1

    # --- initialisation -------------------------------------------------------------------------
    def init(self, key, X, weights=None, method: str = "kmeans") -> GaussianMixtureParams:
        """Parameters from ``method`` ("kmeans", "k-means++", "random", "random_from_data")
        responsibilities followed by one M-step, as scikit-learn's ``init_params``. ``key``: a
        `jax.random` key or an int seed."""
        key = as_key(key)
        X, w = as_data(X, weights)
        if allows_missing(self):  # started from the column-mean imputed data
            w = observed_weights(X, w)
            validate(X, w, self.n_components, allow_nan=True)
            X, w = mean_imputed(X, w)
        else:
            validate(X, w, self.n_components)
        return init_from_responsibilities(_prior.for_init(self, X, w), key, X, w, method)

    # --- geometry: everything the E-step needs from the parameters, computed once per iteration ----
    def _geometry(self, params) -> _Geometry:
        """Cholesky factors L (Σ = L Lᵀ; std-devs for diag/spherical) and P = L⁻ᵀ (LAPACK, batched
        over K: `cholesky_factors`), log|P| and log π."""
        cov, ct = params.covariances, self.covariance_type
        if ct in ("full", "tied"):
            # Only the lower triangle is read (the M-step's Σ is symmetric; of a user's Σ the
            # lower triangle counts).
            L, P = cholesky_factors(cov)
            eye = np.eye(cov.shape[-1], dtype=cov.dtype)
            log_det = jnp.sum(jnp.log(jnp.sum(P * eye, -1)), -1)  # diag(P) without a gather
        else:
            L, P = jnp.sqrt(cov), jax.lax.rsqrt(cov)
            log_det = jnp.sum(jnp.log(P), -1) if ct == "diag" else params.means.shape[1] * jnp.log(P)
        return _Geometry(params.means, L, P, log_det, jnp.log(params.weights))

    def _whiten(self, g: _Geometry, X):
        """(n, K, D) whitened residuals y_nk = (x_n - μ_k)ᵀ P_k; for full covariances one GEMM
        (n, D) @ (D, K·D) for all components."""
        ct = self.covariance_type
        if ct == "full":
            return jnp.einsum("nd,kde->nke", X, g.P) - jnp.einsum("kd,kde->ke", g.means, g.P)[None]
        if ct == "tied":
            return (X @ g.P)[:, None, :] - (g.means @ g.P)[None]
        P = g.P if ct == "diag" else g.P[:, None]
        return (X[:, None, :] - g.means[None]) * P[None]

    def _whiten_T(self, g: _Geometry, X):
        """`_whiten` component-major: ``(K, D, n)`` with y_k = P_kᵀ (xᵀ - μ_k). For full
        covariances one GEMM (K·D, D) @ (D, n). In this layout every later step (the squared
        norms, the statistics' products over n) reads contiguous rows and the statistics are
        batched GEMMs contracting the minor axis, where the ``(n, K, D)`` layout cost XLA two
        transposes of the block per iteration (2-3x the time of the whole block in float32)."""
        ct, K = self.covariance_type, self.n_components
        xT = X.T
        if ct == "full":
            D = X.shape[1]
            PT = jnp.swapaxes(g.P, 1, 2).reshape(K * D, D)
            b = jnp.einsum("kd,kde->ke", g.means, g.P)
            return (PT @ xT).reshape(K, D, -1) - b[..., None]
        if ct == "tied":
            return (g.P.T @ xT)[None] - (g.means @ g.P)[..., None]
        P = g.P if ct == "diag" else g.P[:, None]
        return (xT[None] - g.means[..., None]) * P[..., None]

    def _log_joint_from_whitened(self, g: _Geometry, y):
        D = y.shape[-1]
        return -0.5 * (D * math.log(2 * math.pi) + jnp.sum(y * y, -1)) + g.log_det + g.log_pi

    def _log_joint_from_whitened_T(self, g: _Geometry, yT):
        """``(n, K)`` log π_k + log N(x_n | μ_k, Σ_k) from component-major ``yT (K, D, n)``."""
        D = yT.shape[1]
        return -0.5 * (D * math.log(2 * math.pi) + jnp.sum(yT * yT, 1).T) + g.log_det + g.log_pi

    def _log_joint_fn(self, params):
        if allows_missing(self):  # the observed entries' marginal
            return _gaussian_missing.log_joint_fn(self, params)
        g = self._geometry(params)
        return lambda X: self._log_joint_from_whitened(g, self._whiten(g, X))

    def log_joint_matrix(self, params, X):
        """(N, K) log π_k + log N(x_n | μ_k, Σ_k)."""
        return self._log_joint_fn(params)(X)

    def _width(self, X):
        if allows_missing(self):
            return _gaussian_missing.width(self, X)
        return self.n_components * X.shape[1]

    def impute(self, params, X):
        """``X (N, D)`` with every NaN entry replaced by its conditional mean under the mixture,
        E[x_m | x_o] = Σ_k r_k(x_o) (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o - μ_k,o)), r_k(x_o) the
        responsibilities of the observed entries (Ghahramani & Jordan 1994). Observed entries are
        returned as they are; a row with nothing observed gets the mixture mean Σ_k π_k μ_k.

        Example:
          >>> import jax, jax.numpy as jnp, jaxem
          >>> X = jax.random.normal(jax.random.key(0), (100, 3))
          >>> model = jaxem.GaussianMixture(2, missing="marginalize")
          >>> Xm = X.at[0, 1].set(jnp.nan)
          >>> params = jaxem.fit(model, model.init(jax.random.key(1), Xm), Xm).params
          >>> Xf = model.impute(params, Xm)  # Xf[0, 1] = E[x_01 | x_00, x_02]
        """
        X, _ = as_data(X, None, self.n_features(params))
        self.check_params(params)
        if is_concrete(X):
            check_values(X, jnp.ones(X.shape[0], X.dtype), allow_nan=True)
        return _impute(self, params, X)

    def _effective_weights(self, X, w):
        return observed_weights(X, w) if allows_missing(self) else w

    # --- sufficient statistics and M-step -------------------------------------------------------
    def _stats(self, rw, y) -> _Stats:
        """Σ r, Σ r y, Σ r y yᵀ (full/tied) or Σ r y∘y (diag/spherical), per component."""
        ct = self.covariance_type
        nk = jnp.sum(rw, 0)
        sy = jnp.einsum("nk,nkd->kd", rw, y)
        if ct == "full":
            syy = jnp.einsum("nk,nkd,nke->kde", rw, y, y)
        elif ct == "tied":
            syy = jnp.einsum("nk,nkd,nke->de", rw, y, y)
        else:
            syy = jnp.einsum("nk,nkd->kd", rw, y * y)
        return _Stats(nk, sy, syy)

    def _stats_T(self, rT, yT) -> _Stats:
        """`_stats` from component-major ``rT (K, n)`` and ``yT (K, D, n)``: products over n as
        batched GEMMs contracting the minor axis."""
        ct = self.covariance_type
        ry = rT[:, None, :] * yT
        nk, sy = jnp.sum(rT, 1), jnp.sum(ry, 2)
        if ct in ("full", "tied"):
            syy = jax.lax.dot_general(ry, yT, (((2,), (2,)), ((0,), (0,))))  # (K, D, D)
            syy = jnp.sum(syy, 0) if ct == "tied" else syy
        else:
            syy = jnp.sum(ry * yT, 2)
        return _Stats(nk, sy, syy)

    def _params_from_stats(self, st: _Stats, g: _Geometry, prev=None):
        """Closed-form maximiser of Q from statistics of whitened residuals about g.means.

        Un-whitening with L: d_k = L_k s_k / N_k (= μ_k^new - μ_k^old), S_k = L_k S_yy,k L_kᵀ, and
        Σ_k = S_k / N_k - (2 - N_k / N_k^ε) d_k d_kᵀ + reg_covar·I (the exact centring, ≈ S/N - ddᵀ).
        Returns ``(params, status)``.
        """
        ct, dtype = self.covariance_type, st.sy.dtype
        eps = 10 * jnp.finfo(dtype).eps
        # N_k floored at 10·eps of the total (scikit-learn adds 10·eps in absolute terms, which is
        # not invariant under w -> c·w): exact for every component that is not (almost) empty.
        nk_e = jnp.maximum(st.nk, jnp.maximum(eps * jnp.sum(st.nk), jnp.finfo(dtype).tiny))
        # A component whose weight is exactly 0 is switched off (padding in model selection): it
        # keeps weight 0. With no exact zero, nk_on == nk_e and the iterates are unchanged.
        on = jnp.ones(st.nk.shape, bool) if prev is None else prev.weights > 0
        nk_on = where(on, nk_e, 0.0)
        weights = nk_on / jnp.sum(nk_on)
        shrink = 2.0 - st.nk / nk_e
        D = st.sy.shape[1]
        L = g.L  # None: the statistics are in data coordinates (L = I, nothing to un-whiten)
        if ct == "full":
            d = (st.sy if L is None else jnp.einsum("kde,ke->kd", L, st.sy)) / nk_e[:, None]
            S = st.syy if L is None else jnp.einsum("kde,kef,kgf->kdg", L, st.syy, L)
            cov = S / nk_e[:, None, None] - shrink[:, None, None] * d[:, :, None] * d[:, None, :]
        elif ct == "tied":
            d = (st.sy if L is None else st.sy @ L.T) / nk_e[:, None]
            S = st.syy if L is None else L @ st.syy @ L.T
            cov = (S - jnp.einsum("k,kd,ke->de", 2 * nk_e - st.nk, d, d)) / jnp.sum(nk_on)
        else:
            scale = 1.0 if L is None else (L if ct == "diag" else L[:, None])
            d = st.sy * scale / nk_e[:, None]
            cov = st.syy * scale**2 / nk_e[:, None] - shrink[:, None] * d * d
        means = g.means + d
        prior = _prior.active(self)
        if prior is not None:  # the posterior mode (MAP M-step) from the same ML pieces
            weights = _prior.dirichlet_mode(nk_on, prior.weights_concentration, on=on)
            n = jnp.sum(nk_on) if ct == "tied" else (nk_e[:, None, None] if ct == "full"
                                                      else nk_e[:, None])
            means, cov = _prior.gaussian_mode(prior, ct, nk_e, means, cov * n, on)
        elif ct == "spherical":
            cov = jnp.mean(cov, 1)
        cov = cov + (self.reg_covar * np.eye(D, dtype=dtype) if ct in ("full", "tied")
                     else self.reg_covar)
        empty = st.nk < eps * jnp.sum(st.nk)
        status = flag(jnp.any(empty & on), Status.EMPTY_COMPONENT)
        if prev is not None:
            means = where(empty[:, None], prev.means, means)
            if ct != "tied":
                mask = empty.reshape((-1,) + (1,) * (cov.ndim - 1))
                cov = where(mask, prev.covariances, cov)
        return GaussianMixtureParams(weights, means, cov), status

    def _log_prior(self, params):
        """θ-dependent part of log p(θ) under ``prior`` (see `jaxem._prior`)."""
        p = _prior.active(self)
        return (_prior.dirichlet_log_kernel(params.weights, p.weights_concentration)
                + _prior.gaussian_log_kernel(p, self.covariance_type, params.means,
                                             params.covariances))

    def m_step(self, posterior, X, weights=None, params=None) -> GaussianMixtureParams:
        """Closed-form M-step from responsibilities ``posterior (N, K)``, in two passes as
        scikit-learn: the means, then the covariances about them (exact in float32 too)."""
        X, w = as_data(X, weights)
        complete_rows(self, X, "m_step")
        return self._m_step_streamed(lambda r, wb: r * wb[:, None], posterior, X, w, params)

    def _m_step_labels(self, labels, X, w, centers=None) -> GaussianMixtureParams:
        """`m_step` of one-hot responsibilities given as ``labels (N,)`` (-1: no component),
        without ever forming the (N, K) matrix (used by ``init``). With ``centers`` (K, D) near
        the labels' means (every hard start of ``init`` gives exactly them) one streamed pass
        suffices: the statistics are taken about the centers and the exact centring of
        `_params_from_stats` moves them."""
        K = self.n_components
        onehot = lambda l, wb: jax.nn.one_hot(l, K, dtype=X.dtype) * wb[:, None]
        return self._m_step_streamed(onehot, labels, X, w, None, centers)

    def _m_step_streamed(self, rw_of, R, X, w, params, means=None):
        """Both passes of `m_step` streamed over row blocks of (X, R, w); ``rw_of(R_block,
        w_block)`` gives the block's weighted responsibilities (N, K). Given ``means``, the first
        pass (the means) is skipped."""
        width = self._width(X)
        if means is None:
            def first(x, r, wb):
                rw = rw_of(r, wb)
                return jnp.sum(rw, 0), rw.T @ x

            nk, sx = chunked_sum_rows(first, (X, R, w), self.chunk_size, width)
            tiny = 10 * jnp.finfo(X.dtype).eps * jnp.sum(nk) + jnp.finfo(X.dtype).tiny
            means = sx / jnp.maximum(nk, tiny)[:, None]
        # Residuals about the means, in data coordinates (nothing to un-whiten).
        second = lambda x, r, wb: self._stats(rw_of(r, wb), x[:, None, :] - means[None])
        st = chunked_sum_rows(second, (X, R, w), self.chunk_size, width)
        return self._params_from_stats(st, self._identity_geometry(means), params)[0]

    @staticmethod
    def _identity_geometry(means) -> _Geometry:
        """Statistics taken about ``means (K, D)`` in data coordinates: L = P = I, given as None
        so that nothing is multiplied by an identity."""
        return _Geometry(means, None, None, None, None)

    # --- expected sufficient statistics (the public unit of EM) and their maximiser -------------
    def statistics_reference(self, params):
        """Default reference point of `sufficient_statistics`: the means ``(K, D)``."""
        return params.means

    def sufficient_statistics(self, params, X, weights=None, *, reference=None, labels=None
                              ) -> GaussianMixtureStatistics:
        """Expected complete-data sufficient statistics at ``params`` (a `GaussianMixtureStatistics`).

        Additive over rows: the statistics of a row-concatenation are the sum of the parts'
        (``jax.tree_util.tree_map(jnp.add, a, b)``) when the parts share ``reference`` (``(K, D)``;
        None: ``params.means``, which every part at the same ``params`` shares). Taken about the
        reference point, they stay accurate in float32 for data far from the origin.
        `maximize` of them (with the same ``reference``) is one EM iteration. ``labels (N,)``
        (-1 unknown) clamp the labelled rows' responsibilities to one-hot (`jaxem._labels`).
        """
        X, w = as_data(X, weights, self.n_features(params))
        st = self._statistics(params, X, w, labels)
        return st if reference is None else self._shift(st, params.means - reference)

    def _shift(self, st: GaussianMixtureStatistics, delta) -> GaussianMixtureStatistics:
        """The same statistics about ref_k - delta_k instead of ref_k (residuals x - ref + delta):
        Σ r (x - ref + δ) = s + N δ,  Σ r (x - ref + δ)(·)ᵀ = S + δ sᵀ + s δᵀ + N δ δᵀ."""
        n, sx, sxx = st.counts, st.sum_x, st.sum_xx
        if self.covariance_type in ("full", "tied"):
            outer = lambda a, b: a[:, :, None] * b[:, None, :]
            dS = outer(delta, sx) + outer(sx, delta) + n[:, None, None] * outer(delta, delta)
            sxx = sxx + (dS if self.covariance_type == "full" else jnp.sum(dS, 0))
        else:  # the diagonal only: (K, D)
            sxx = sxx + 2 * delta * sx + n[:, None] * delta * delta
        return st._replace(sum_x=sx + n[:, None] * delta, sum_xx=sxx)

    def _maximize(self, st: GaussianMixtureStatistics, params, reference=None):
        """`maximize` and its status, computed in the statistics' dtype and cast to the params'."""
        acc = st.sum_x.dtype
        ref = params.means if reference is None else reference
        prev = _cast(params, acc)
        new, status = self._params_from_stats(
            _Stats(st.counts, st.sum_x, st.sum_xx),
            self._identity_geometry(jnp.asarray(ref, acc)), prev)
        return _cast(new, params.means.dtype), status

    def _maximize_fixed(self, st: GaussianMixtureStatistics, params, fixed, reference=None):
        """`_maximize` with ``fixed`` fields held (ECM, `jaxem._fixed`). The weights' and means'
        maximisers depend on nothing else; the covariances' depend on the means: with the means
        fixed, Σ_k = Σ_n w_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ / N_k about the fixed μ_k, i.e. the
        statistics about the means (their reference in the fit loop) with the first moment
        zeroed (d_k = 0). The fixed fields are restored by the caller. ``reference``: that of
        the statistics (None: the means); with the means fixed it must be them (as it is in every
        driver: fixed means never move, so `jaxem.fit_online`'s fixed reference is them too)."""
        if "means" in fixed:
            st = self._condition_on_means(st, params)
        return self._maximize(st, params, reference)

    def _condition_on_means(self, st: GaussianMixtureStatistics, params):
        """Statistics (about the means) whose `_maximize` gives the covariances' maximiser at the
        fixed means: the first moment zeroed (d_k = 0). With a prior on the means (κ_P > 0) the
        conditional mode is Σ_k = (Λ_P + S_k + κ_P e_k e_kᵀ) / (ν_P + n_k + D + 1 + b), e_k = μ_k -
        μ_P, while the joint mode's term is κ_P n_k / (n_k + κ_P) e_k e_kᵀ: the difference,
        κ_P² / (n_k + κ_P) e_k e_kᵀ, is added to the scatter (`jaxem._prior.gaussian_mode`)."""
        st = st._replace(sum_x=jnp.zeros_like(st.sum_x))
        prior = _prior.active(self)
        if prior is None or not prior.shrinkage > 0:
            return st
        kappa, dtype, ct = prior.shrinkage, st.sum_xx.dtype, self.covariance_type
        nk = st.counts
        nk_e = jnp.maximum(nk, jnp.maximum(10 * jnp.finfo(dtype).eps * jnp.sum(nk),
                                           jnp.finfo(dtype).tiny))  # as in `_params_from_stats`
        c = where(params.weights > 0, kappa**2 / (nk_e + kappa), 0.0).astype(dtype)
        e = params.means.astype(dtype) - _prior._mean(prior, params.means.shape[1], dtype)
        if ct == "full":
            extra = c[:, None, None] * e[:, :, None] * e[:, None, :]
        elif ct == "tied":
            extra = jnp.einsum("k,kd,ke->de", c, e, e)
        else:  # diag and spherical: the (K, D) diagonals
            extra = c[:, None] * e * e
        return st._replace(sum_xx=st.sum_xx + extra)

    def _statistics(self, params, X, weights, labels=None) -> GaussianMixtureStatistics:
        """`sufficient_statistics` (about the means) by a fused pass streamed over row blocks: the
        whitened residuals of the E-step are reused for the statistics, so each block costs two
        GEMM-shaped passes and nothing of size N·K·D is ever alive beyond one block; they are
        un-whitened once at the end (d_k = L_k s_k, S_k = L_k S_yy,k L_kᵀ). Full covariances use
        the moment route (module docstring; guarded in float32): two GEMMs of width
        T = D(D+1)/2 + D + 1 per block. ``labels (N,)`` (-1 unknown) mask the log joint of
        labelled rows."""
        acc = self._accumulate_dtype(X.dtype)
        if allows_missing(self):
            return _gaussian_missing.statistics(self, params, X, weights, acc, labels)
        total = jnp.sum(weights.astype(acc))
        route = _gaussian_moments.route(self, X.dtype)
        if route == "moments":
            return _gaussian_moments.statistics(self, params, X, weights, acc, total, labels)
        if route == "guarded":
            # One scalar test per iteration, no recompilation. Under jax.vmap with batched
            # parameters the cond becomes a select and both routes run.
            g = self._geometry(params)  # one Cholesky per iteration, shared by guard and routes
            safe = _gaussian_moments.error_bound(self, params, g) <= MOMENT_TOLERANCE
            moments = lambda: _gaussian_moments.statistics(self, params, X, weights, acc, total,
                                                           labels, g)
            residuals = lambda: self._statistics_residuals(params, X, weights, acc, total, labels,
                                                           g)
            return cond(safe, moments, residuals)  # eager: one route, in Python
        return self._statistics_residuals(params, X, weights, acc, total, labels)

    def _statistics_residuals(self, params, X, weights, acc, total, labels=None, g=None):
        """`_statistics` by whitened residuals about each component's mean."""
        g = self._geometry(params) if g is None else g

        def block(x, lb, wb):
            if self.covariance_type in ("full", "tied"):  # GEMM-shaped: component-major
                yT = self._whiten_T(g, x)
                rw, ll = weighted_posterior(
                    clamp(self._log_joint_from_whitened_T(g, yT), lb), wb)
                return _cast((self._stats_T(rw.T, yT), ll), acc)
            y = self._whiten(g, x)  # elementwise (diag/spherical): the (n, K, D) layout is faster
            rw, ll = weighted_posterior(clamp(self._log_joint_from_whitened(g, y), lb), wb)
            return _cast((self._stats(rw, y), ll), acc)

        st, ll = labelled_sum(block, X, weights, labels, self.chunk_size, self._width(X))
        L, ct = _cast(g.L, acc), self.covariance_type
        if ct == "full":
            sx = jnp.einsum("kde,ke->kd", L, st.sy)
            sxx = jnp.einsum("kde,kef,kgf->kdg", L, st.syy, L)
        elif ct == "tied":
            sx, sxx = st.sy @ L.T, L @ st.syy @ L.T
        else:
            scale = L if ct == "diag" else L[:, None]
            sx, sxx = st.sy * scale, st.syy * scale**2
        return GaussianMixtureStatistics(st.nk, sx, sxx, ll, total)

    def _accumulate_dtype(self, dtype):
        if self.accumulate_dtype is None:
            return dtype
        acc = jnp.dtype(self.accumulate_dtype)
        if acc.itemsize > 4 and not jax.config.read("jax_enable_x64"):
            raise ValueError(
                "accumulate_dtype=float64 needs 64-bit JAX: call "
                "jax.config.update('jax_enable_x64', True) first, or use accumulate_dtype=None.")
        return jnp.promote_types(acc, dtype)

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, key, params, n: int, return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)`` (and their components if ``return_labels``).

        Raises ValueError outside jit if the weights are not a distribution (NaN, negative) or the
        means/covariances are not finite."""
        self.check_params(params)
        check_sample_params(params.weights, params.means, params.covariances,
                            names=("means", "covariances"))
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

