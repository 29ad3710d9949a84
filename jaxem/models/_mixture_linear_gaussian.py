"""Mixtures of linear-Gaussian latent factor models (shared by `MixtureOfFactorAnalyzers` and
`MixturePPCA`).

Notation (Ghahramani & Hinton 1996, "The EM algorithm for mixtures of factor analyzers", Tech. Rep.
CRG-TR-96-1; Tipping & Bishop 1999, "Mixtures of probabilistic principal component analyzers",
Neural Computation 11(2)). Component k (prior π_k) generates x = W_k z + μ_k + ε, z ~ N(0, I_q),
ε ~ N(0, Ψ_k), with Ψ_k = diag(ψ_k) (factor analysers, one diagonal per component) or Ψ_k = σ_k² I
(PPCA). With the whitened loadings W̃_k = Ψ_k^{-1/2} W_k and the q x q matrix
  G_k = I_q + W̃_kᵀ W̃_k = I_q + W_kᵀ Ψ_k⁻¹ W_k = L_k L_kᵀ  (Cholesky; = M_k / σ_k² for PPCA),
the marginal of component k is N(μ_k, C_k), C_k = W_k W_kᵀ + Ψ_k, and by the matrix determinant
lemma and Woodbury's identity (ỹ_nk = Ψ_k^{-1/2} (x_n - μ_k), u_nk = L_k⁻¹ W̃_kᵀ ỹ_nk)
  log|C_k| = Σ_d log ψ_kd + 2 Σ_j log (L_k)_jj,
  (x_n - μ_k)ᵀ C_k⁻¹ (x_n - μ_k) = ||ỹ_nk||² - ||u_nk||²,
so ℓ_nk = log π_k + log N(x_n | μ_k, C_k) costs O(D q) per (n, k) and no D x D matrix is formed:
one EM iteration is O(N K D q).

E-step: h_nk = softmax_k ℓ_nk (the responsibilities), and q(z_n | k) = N(m_nk, Σ_k) with
  Σ_k = G_k⁻¹,   m_nk = G_k⁻¹ W̃_kᵀ ỹ_nk = β_k (x_n - μ_k),   β_k = W_kᵀ C_k⁻¹
(Ghahramani & Hinton's E[z | x, ω_k] = β_k (x - μ_k), E[zzᵀ | x, ω_k] = I - β_k W_k + β_k (x - μ_k)
(x - μ_k)ᵀ β_kᵀ; I - β_k W_k = G_k⁻¹).

M-step (Ghahramani & Hinton, eqs. for the augmented loading W̃_k = [W_k μ_k] and z̃ = [z; 1]), with
residuals y_nk = x_n - c_k about a reference point c_k (statistics are moments about it):
  A_k = Σ_n w_n h_nk E[z̃ z̃ᵀ | x_n, k] = [[Σ w h (Σ_k + m mᵀ), Σ w h m], [Σ w h mᵀ, N_k]],
  B_k = Σ_n w_n h_nk y_nk E[z̃ | x_n, k]ᵀ,
  [W_k, μ_k - c_k] = B_k A_k⁻¹,   ψ_kd = (Σ_n w_n h_nk y_nkd² - Σ_j [B_k A_k⁻¹]_dj [B_k]_dj) / N_k,
  π_k = N_k / Σ_j N_j,  N_k = Σ_n w_n h_nk,
and σ_k² = mean_d ψ_kd for PPCA (the maximiser of Q under Ψ_k = σ_k² I, since the regression
coefficients B_k A_k⁻¹ do not depend on Ψ_k). Ghahramani & Hinton share one Ψ among components
(ψ_d = Σ_k (...)_kd / N); here each component has its own Ψ_k (the common modern choice, e.g.
McLachlan & Peel 2000, §8.7), and its M-step is the same with the sum over k dropped. Updating μ_k
jointly with W_k is an exact EM step for the complete data (k, z) from any start; Tipping & Bishop's
Appendix C updates μ_k first (a two-stage, AECM-type scheme) and has the same fixed points.

Each ψ_kd (σ_k²) is floored at 10·eps times the pooled within-component feature variance (Heywood
cases and components collapsed onto one row stay finite). N_k is floored at 10·eps·Σ_j N_j; a
component with less mass keeps its previous parameters (its weight goes to ~0) and the fit reports
``Status.EMPTY_COMPONENT``; a component whose weight is exactly 0 is switched off (stays at weight
0, is not reported), as in `GaussianMixture`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _shard
from .._checks import positive_int
from .._chunk import chunked_sum_rows
from .._compile import compiled
from .._init import _hard_start
from .._labels import clamp, labelled_sum
from .._status import Status, flag
from .._validate import (as_data, check_init_result, check_sample_params, finite_rows,
                         is_concrete, validate)
from .._where import where
from ._base import Mixture, weighted_posterior


class MixtureFactorPosterior(NamedTuple):
    """q(k, z_n) = h_nk N(z_n | m_nk, Σ_k).

    Attributes:
      responsibilities: ``(N, K)`` h_nk = p(k | x_n).
      mean: ``(N, K, q)`` m_nk = E[z_n | x_n, k].
      covariance: ``(K, q, q)`` Σ_k = Cov[z_n | x_n, k] (the same for every n).
    """

    responsibilities: jax.Array
    mean: jax.Array
    covariance: jax.Array


class MixtureFactorStatistics(NamedTuple):
    """Expected sufficient statistics of a mixture of factor analysers / PPCA (additive over rows),
    with residuals y_nk = x_n - c_k about a reference point c_k (by default the means of the
    parameters they were computed at), responsibilities h_nk and q(z_n | k) = N(m_nk, Σ_k):

    Attributes:
      counts: ``(K,)`` N_k = Σ_n w_n h_nk.
      sum_z: ``(K, q)`` Σ_n w_n h_nk m_nk.
      sum_zz: ``(K, q, q)`` Σ_n w_n h_nk E[z zᵀ | x_n, k] = Σ w h (Σ_k + m mᵀ).
      sum_y: ``(K, D)`` Σ_n w_n h_nk y_nk.
      sum_yz: ``(K, D, q)`` Σ_n w_n h_nk y_nk m_nkᵀ.
      sum_yy: ``(K, D)`` Σ_n w_n h_nk y_nk² (the diagonal: all the M-step needs).
      log_likelihood: ``()`` Σ_n w_n log p(x_n | θ).
      total_weight: ``()`` Σ_n w_n.
    """

    counts: jax.Array
    sum_z: jax.Array
    sum_zz: jax.Array
    sum_y: jax.Array
    sum_yz: jax.Array
    sum_yy: jax.Array
    log_likelihood: jax.Array
    total_weight: jax.Array


class _Geometry(NamedTuple):
    """Per-parameter quantities of the E-step: means (K, D), s = Ψ^{-1/2} (K, D), the rows of
    L⁻¹ W̃ᵀ Ψ^{-1/2} (K, q, D) (so u = that · (x - μ)), L⁻¹ (K, q, q) with G = L Lᵀ, and the
    constants log π_k - ½ (D log 2π + log|C_k|) (K,)."""

    means: jax.Array
    s: jax.Array
    B: jax.Array
    Linv: jax.Array
    const: jax.Array


def _tri(L, B, transpose=False):
    """L⁻¹ B (or L⁻ᵀ B), batched over leading axes, for lower-triangular L."""
    return jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=True, transpose_a=transpose)


def _floor(psi, var, nk):
    """Noise variances floored at 10·eps of the pooled within-component feature variance
    Σ_k N_k mean_d var_kd / Σ_k N_k (``var (K, D)``, ``nk (K,)``): a component collapsed onto one
    row (var_k = 0) keeps a finite Ψ_k; with one component it is `FactorAnalysis`'s floor."""
    fi = jnp.finfo(psi.dtype)
    pooled = jnp.sum(nk * jnp.mean(var, -1)) / jnp.sum(nk)
    return jnp.maximum(psi, 10 * fi.eps * jnp.maximum(pooled, fi.tiny))


class MixtureLinearGaussian(Mixture):
    """Shared machinery of `MixtureOfFactorAnalyzers` and `MixturePPCA`; subclasses set
    ``isotropic`` and ``_make``."""

    n_components: int
    n_factors: int
    chunk_size: int | None = None
    isotropic = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "n_factors", positive_int("n_factors", self.n_factors))

    # --- shapes and parameters ------------------------------------------------------------------
    def n_features(self, params) -> int:
        return params.means.shape[-1]

    def _param_shapes(self, params) -> dict:
        K, q, D = self.n_components, self.n_factors, params.means.shape[-1]
        return {"weights": (K,), "means": (K, D), "loadings": (K, D, q),
                "noise_variance": (K,) if self.isotropic else (K, D)}

    def _make(self, weights, means, loadings, psi):
        raise NotImplementedError

    def _psi(self, params):
        """``(K, D)`` noise variances (Ψ_k)_dd."""
        nv = params.noise_variance
        return jnp.broadcast_to(nv[:, None], params.means.shape) if self.isotropic else nv

    def n_parameters(self, params) -> int:
        """Free parameters: K - 1 weights and, per component, μ_k (D), W_k (Dq minus the
        q(q-1)/2 rotation) and the noise (1 or D)."""
        K, D = params.means.shape[-2:]
        q = self.n_factors
        return K - 1 + K * (D + D * q - q * (q - 1) // 2 + (1 if self.isotropic else D))

    def _width(self, X) -> int:
        return self.n_components * (X.shape[1] + self.n_factors)

    # --- the E-step -----------------------------------------------------------------------------
    def _geometry(self, params) -> _Geometry:
        psi = self._psi(params)
        s = jax.lax.rsqrt(psi)
        Wt = params.loadings * s[:, :, None]
        q = Wt.shape[-1]
        eye = np.eye(q, dtype=Wt.dtype)
        L = jnp.linalg.cholesky(eye + jnp.einsum("kdi,kdj->kij", Wt, Wt))
        # L⁻¹ of the q x q factor (batched triangular solves against I: XLA's CPU solve is slow
        # for many right-hand sides, a (q x q) product per row is not).
        Linv = _tri(L, jnp.broadcast_to(eye, L.shape))
        B = jnp.einsum("kij,kdj->kid", Linv, Wt * s[:, :, None])
        D = psi.shape[-1]
        log_det = jnp.sum(jnp.log(psi), -1) + 2.0 * jnp.sum(
            jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
        const = jnp.log(params.weights) - 0.5 * (D * math.log(2 * math.pi) + log_det)
        return _Geometry(params.means, s, B, Linv, const)

    @staticmethod
    def _rows(g: _Geometry, X):
        """For a block of rows: residuals y ``(n, K, D)``, posterior means m ``(n, K, q)`` and the
        log joint ℓ ``(n, K)``: u = L⁻¹ W̃ᵀ ỹ, m = L⁻ᵀ u, ℓ = const - ½ (||ỹ||² - ||u||²)."""
        y = X[:, None, :] - g.means[None]
        yt = y * g.s[None]
        u = jnp.einsum("nkd,kqd->nkq", y, g.B)
        m = jnp.einsum("nki,kij->nkj", u, g.Linv)
        lj = g.const[None] - 0.5 * (jnp.sum(yt * yt, -1) - jnp.sum(u * u, -1))
        return y, m, lj

    @staticmethod
    def _posterior_cov(Linv):
        """Σ_k = G_k⁻¹ = L_k⁻ᵀ L_k⁻¹ ``(K, q, q)``."""
        return jnp.einsum("kji,kjl->kil", Linv, Linv)

    def _log_joint_fn(self, params):
        g = self._geometry(params)
        return lambda X: self._rows(g, X)[2]

    def log_joint_matrix(self, params, X):
        """(N, K) log π_k + log N(x_n | μ_k, W_k W_kᵀ + Ψ_k)."""
        return self._log_joint_fn(params)(X)

    def e_step(self, params, X, weights=None, *, labels=None):
        """The posterior q(k, z_n) (a `MixtureFactorPosterior`) and the weighted log-likelihood
        (``labels (N,)``, -1 unknown: a labelled row's h_n is one-hot, `jaxem._labels`)."""
        X, w = as_data(X, weights, self.n_features(params))
        self.check_params(params)
        return _run(self, "_e_step", params, X, w, labels)

    def _e_step(self, params, X, w, labels=None):
        g = self._geometry(params)
        _, m, lj = self._rows(g, X)
        lj = clamp(lj, labels)
        lse = jax.scipy.special.logsumexp(lj, axis=1)
        resp = jnp.exp(lj - lse[:, None])
        post = MixtureFactorPosterior(resp, m, self._posterior_cov(g.Linv))
        return post, jnp.sum(where(w > 0, w * lse, 0.0))

    def predict_proba(self, params, X):
        """``(N, K)`` responsibilities p(k | x_n)."""
        return self.e_step(params, X)[0].responsibilities

    def transform(self, params, X):
        """``(N, K, q)`` per-component posterior means E[z_n | x_n, k] = β_k (x_n - μ_k)
        (weight them by `predict_proba` for the mixture's E[z_n | x_n])."""
        X, _ = as_data(X, None, self.n_features(params))
        self.check_params(params)
        return _run(self, "_transform", params, X)

    def _predict_traced(self, params, X):
        return Mixture.predict(self, params, X)

    def _transform(self, params, X):
        return self._rows(self._geometry(params), X)[1]

    def score_samples(self, params, X):
        """``(N,)`` per-sample log p(x_n | params), streamed over row blocks."""
        X, _ = as_data(X, None, self.n_features(params))
        return _run(self, "_score_samples", params, X)

    def _score_samples(self, params, X):
        return super().score_samples(params, X)

    def log_likelihood(self, params, X, weights=None, *, labels=None):
        """Weighted sum over samples of log p(x_n | params), streamed over row blocks (with
        ``labels``: log p(x_n, z_n = y_n) for a labelled row, `jaxem._labels`)."""
        X, w = as_data(X, weights, self.n_features(params))
        return _run(self, "_log_likelihood", params, X, w, labels)

    def _log_likelihood(self, params, X, w, labels=None):
        return super().log_likelihood(params, X, w, labels=labels)

    def q_function(self, params, posterior, X, weights=None):
        """Q = Σ_n w_n Σ_k h_nk (log π_k + E_q[log N(x_n | W_k z + μ_k, Ψ_k) + log N(z | 0, I)])
        with E_q[(x - Wz - μ)ᵀΨ⁻¹(·)] = ||ỹ||² - 2 ỹᵀW̃ m + tr(W̃ᵀW̃ (Σ + m mᵀ))."""
        X, w = as_data(X, weights, self.n_features(params))
        return _run(self, "_q_function", params, MixtureFactorPosterior(*posterior), X, w)

    def _q_function(self, params, posterior, X, w):
        h, m, S = posterior
        psi = self._psi(params)
        s = jax.lax.rsqrt(psi)
        Wt = params.loadings * s[:, :, None]
        yt = (X[:, None, :] - params.means[None]) * s[None]
        D, q = Wt.shape[-2:]
        WtW = jnp.einsum("kdi,kdj->kij", Wt, Wt)
        quad = (jnp.sum(yt * yt, -1) - 2.0 * jnp.einsum("nkd,kdq,nkq->nk", yt, Wt, m)
                + jnp.einsum("nki,kij,nkj->nk", m, WtW, m) + jnp.sum(WtW * S, (-2, -1))[None])
        prior = jnp.trace(S, axis1=-2, axis2=-1)[None] + jnp.sum(m * m, -1)
        const = (jnp.log(params.weights)
                 - 0.5 * ((D + q) * math.log(2 * math.pi) + jnp.sum(jnp.log(psi), -1)))
        lj = const[None] - 0.5 * (quad + prior)
        return jnp.sum(w * jnp.sum(where(h > 0, h * lj, 0.0), 1))

    def posterior_entropy(self, posterior, weights=None):
        """Σ_n w_n [H(h_n) + Σ_k h_nk H[N(m_nk, Σ_k)]]."""
        w = None if weights is None else jnp.asarray(weights)
        return _run(self, "_posterior_entropy", MixtureFactorPosterior(*posterior), w)

    def _posterior_entropy(self, posterior, weights):
        h, _, S = posterior
        q = S.shape[-1]
        hz = 0.5 * q * (1.0 + math.log(2 * math.pi)) + jnp.sum(
            jnp.log(jnp.diagonal(jnp.linalg.cholesky(S), axis1=-2, axis2=-1)), -1)
        hk = -jnp.sum(where(h > 0, h * jnp.log(where(h > 0, h, 1.0)), 0.0), axis=1)
        w = jnp.ones(h.shape[0], h.dtype) if weights is None else jnp.asarray(weights, h.dtype)
        return jnp.sum(w * (hk + h @ hz))

    # --- statistics and M-step ------------------------------------------------------------------
    @staticmethod
    def _stats(rw, y, m):
        """(N_k, Σ w h m, Σ w h m mᵀ, Σ w h y, Σ w h y mᵀ, Σ w h y²) of one block."""
        return (jnp.sum(rw, 0), jnp.einsum("nk,nkq->kq", rw, m),
                jnp.einsum("nk,nki,nkj->kij", rw, m, m), jnp.einsum("nk,nkd->kd", rw, y),
                jnp.einsum("nk,nkd,nkq->kdq", rw, y, m), jnp.einsum("nk,nkd->kd", rw, y * y))

    def statistics_reference(self, params):
        """Default reference point of `sufficient_statistics`: the means ``(K, D)``."""
        return params.means

    def sufficient_statistics(self, params, X, weights=None, *, reference=None, labels=None
                              ) -> MixtureFactorStatistics:
        """Expected sufficient statistics at ``params`` (a `MixtureFactorStatistics`) about
        ``reference`` ``(K, D)`` (None: ``params.means``); additive over rows that share it.
        `maximize` of them (with the same ``reference``) is one EM iteration."""
        X, w = as_data(X, weights, self.n_features(params))
        self.check_params(params)
        st = _run(self, "_statistics", params, X, w, labels)
        return st if reference is None else _shift(st, params.means - reference)

    def _statistics(self, params, X, weights, labels=None) -> MixtureFactorStatistics:
        """One pass streamed over row blocks: O(N K D q), no D x D matrix (``labels (N,)``, -1
        unknown: the labelled rows' log joints masked, `jaxem._labels`)."""
        g = self._geometry(params)

        def block(x, lb, wb):
            y, m, lj = self._rows(g, x)
            rw, ll = weighted_posterior(clamp(lj, lb), wb)
            return self._stats(rw, y, m), ll

        (nk, sz, szz, sy, syz, syy), ll = labelled_sum(block, X, weights, labels,
                                                       self.chunk_size, self._width(X))
        szz = szz + nk[:, None, None] * self._posterior_cov(g.Linv)
        return MixtureFactorStatistics(nk, sz, szz, sy, syz, syy, ll, jnp.sum(weights))

    def maximize(self, stats, params, *, reference=None):
        """The closed-form M-step from `sufficient_statistics` (``params``: those they were taken
        at, or any with the same structure when ``reference`` is given)."""
        return _run(self, "_maximize", stats, params, reference)[0]

    def _maximize(self, st: MixtureFactorStatistics, params, reference=None):
        """Per component: [W_k, μ_k - c_k] = B_k A_k⁻¹ (Cholesky solve of the (q+1) x (q+1) system),
        then the noise; π_k = N_k / Σ N. Returns ``(params, status)``."""
        c = params.means if reference is None else reference
        return _maximize(st, c, params, self.isotropic, self._make)

    def _maximize_fixed(self, st: MixtureFactorStatistics, params, fixed, reference=None):
        """`_maximize` with ``fixed`` fields held (ECM, `jaxem._fixed`), about c_k = ``reference``
        (None: μ_k, the fit loop's reference; with μ fixed the statistics must be about it). μ_k and W_k are solved jointly by `_maximize`, so holding one gives the
        other's conditional maximiser, with b_k = μ_k - c_k:
          μ fixed, W free:  W_k = Σ w h y mᵀ (Σ w h E[zzᵀ])⁻¹          (b_k = 0, no intercept);
          W fixed, μ free:  b_k = (Σ w h y - W_k Σ w h m) / N_k;
        then ψ_kd = Σ_n w_n h_nk E[r_nkd²] / N_k (r = y - b - W z; its mean for PPCA) at the new
        μ and W. π and Ψ do not enter the maximisers of the others: a fixed weights / noise is
        just restored (by the caller)."""
        new, status = self._maximize(st, params, reference)
        if "means" not in fixed and "loadings" not in fixed:
            return new, status
        dtype = st.sum_y.dtype
        K, q = st.sum_z.shape
        nk = st.counts
        eps = 10 * jnp.finfo(dtype).eps
        nk_e = jnp.maximum(nk, jnp.maximum(eps * jnp.sum(nk), jnp.finfo(dtype).tiny))
        keep = (nk < eps * jnp.sum(nk)) | ~(params.weights > 0)  # as `_maximize`: unchanged
        n = nk_e[:, None]
        Sz, Szz, Sy, Syz, Syy = st.sum_z, st.sum_zz, st.sum_y, st.sum_yz, st.sum_yy
        if "loadings" in fixed:
            W = params.loadings.astype(dtype)
            b = jnp.zeros_like(Sy) if "means" in fixed else (Sy - jnp.einsum(
                "kdq,kq->kd", W, Sz)) / n
        else:
            b = jnp.zeros_like(Sy)
            A = where(keep[:, None, None], np.eye(q, dtype=dtype), Szz)
            LAinv = _tri(jnp.linalg.cholesky(A), jnp.broadcast_to(np.eye(q, dtype=dtype), A.shape))
            W = jnp.einsum("kdi,kji,kjl->kdl", Syz, LAinv, LAinv)
        WS = jnp.einsum("kdq,kq->kd", W, Sz)
        R = (Syy - 2 * b * Sy - 2 * jnp.sum(W * Syz, -1) + n * b * b + 2 * b * WS
             + jnp.sum(jnp.einsum("kdi,kij->kdj", W, Szz) * W, -1))
        var = Syy / n - (Sy / n) ** 2
        psi = _floor(jnp.mean(R / n, -1) if self.isotropic else R / n, var, nk_e)
        c = (params.means if reference is None else reference).astype(dtype)
        means = where(keep[:, None], new.means, (c + b).astype(new.means.dtype))
        W = where(keep[:, None, None], new.loadings, W.astype(new.loadings.dtype))
        psi = where(keep[:, None] if psi.ndim == 2 else keep, new.noise_variance,
                    psi.astype(new.noise_variance.dtype))
        return self._make(new.weights, means, W, psi), status

    def m_step(self, posterior, X, weights=None, params=None):
        """Closed-form maximiser of Q given the posterior (``params``: only to keep (almost) empty
        components where they were)."""
        X, w = as_data(X, weights)
        return _run(self, "_m_step", MixtureFactorPosterior(*posterior), X, w, params)

    def _m_step(self, posterior, X, w, params):
        h, m, S = posterior
        rw = h * w[:, None]
        nk = jnp.sum(rw, 0)
        tiny = 10 * jnp.finfo(X.dtype).eps * jnp.sum(nk) + jnp.finfo(X.dtype).tiny
        c = (rw.T @ X) / jnp.maximum(nk, tiny)[:, None]  # residuals about the components' means
        nk, sz, szz, sy, syz, syy = self._stats(rw, X[:, None, :] - c[None], m)
        st = MixtureFactorStatistics(nk, sz, szz + nk[:, None, None] * S, sy, syz, syy,
                                     jnp.zeros((), X.dtype), jnp.sum(w))
        return _maximize(st, c, params, self.isotropic, self._make)[0]

    # --- initialisation -------------------------------------------------------------------------
    def _check_rank(self, D):
        q = self.n_factors
        if (q >= D) if self.isotropic else (q > D):
            bound = D - 1 if self.isotropic else D
            raise ValueError(
                f"{type(self).__name__} needs n_factors <= {bound} for {D} features, got "
                f"n_factors={q}; use n_factors <= {bound}.")

    def init(self, key, X, weights=None, n_power_iter: int = 3):
        """k-means, then each cluster's PPCA / factor-analysis solution: μ_k and π_k from the
        k-means clusters, the leading q eigenpairs (λ, U) of each cluster's covariance S_k by
        ``n_power_iter`` block power iterations (Rayleigh-Ritz; each a streamed O(N K D q) pass, no
        D x D matrix), W_k = U (Λ - σ_k² I)^{1/2}, σ_k² = (tr S_k - Σ λ) / (D - q) (Tipping &
        Bishop's ML solution), and for factor analysers Ψ_k = diag(S_k - W_k W_kᵀ); the noise
        starts at no less than 1e-3 of the pooled within-cluster variance (a cluster of one row)."""
        X, w = as_data(X, weights)
        validate(X, w, self.n_components)
        self._check_rank(X.shape[1])
        params = _init_compiled(self, key, X, w, int(n_power_iter),
                                rows=_shard.row_sharding(X))
        check_init_result(params, X)
        return params

    def _init_rows(self, key, X, w, n_power_iter):
        K, q = self.n_components, self.n_factors
        D = X.shape[1]
        k1, k2 = jax.random.split(key)
        labels, centers = _hard_start(k1, X, w, K, "kmeans")
        width = K * (D + q)

        def onehot(l, wb):
            return jax.nn.one_hot(l, K, dtype=X.dtype) * wb[:, None]

        def moments(x, l, wb):
            rw, y = onehot(l, wb), x[:, None, :] - centers[None]
            return jnp.sum(rw, 0), jnp.einsum("nk,nkd->kd", rw, y), jnp.einsum(
                "nk,nkd->kd", rw, y * y)

        nk, sy, syy = chunked_sum_rows(moments, (X, labels, w), self.chunk_size, width)
        fi = jnp.finfo(X.dtype)
        nk_e = jnp.maximum(nk, 10 * fi.eps * jnp.sum(nk) + fi.tiny)
        d = sy / nk_e[:, None]
        means = centers + d
        var = jnp.maximum(syy / nk_e[:, None] - d * d, 0.0)  # (K, D) diag of S_k

        def SV(V):  # S_k V_k = (1/N_k) Σ_n w_n [l_n = k] y_nk (y_nkᵀ V_k), y about the means
            def block(x, l, wb):
                rw, y = onehot(l, wb), x[:, None, :] - means[None]
                p = jnp.einsum("nkd,kdq->nkq", y, V) * rw[:, :, None]
                return jnp.einsum("nkd,nkq->kdq", y, p)
            return chunked_sum_rows(block, (X, labels, w), self.chunk_size, width) / nk_e[
                :, None, None]

        def power(_, VS):  # V <- orth(S V) (QR), carrying S V of the new V
            V = jnp.linalg.qr(VS[1])[0]
            return V, SV(V)

        V0 = jax.random.normal(k2, (K, D, q), X.dtype)
        V, SV_V = jax.lax.fori_loop(0, n_power_iter + 1, power, (V0, V0))
        T = jnp.einsum("kdi,kdj->kij", V, SV_V)  # Rayleigh-Ritz: Vᵀ S V (q x q)
        lam, U = jnp.linalg.eigh(0.5 * (T + jnp.swapaxes(T, -1, -2)))
        lam = jnp.maximum(lam, 0.0)
        V = jnp.einsum("kdi,kij->kdj", V, U)
        rest = jnp.maximum(jnp.sum(var, -1) - jnp.sum(lam, -1), 0.0)
        # A cluster of one row (or of copies) has no spread: its noise starts at 1e-3 of the
        # pooled within-cluster variance instead of 10·eps of nothing.
        pooled = jnp.sum(nk[:, None] * var) / (D * jnp.sum(nk))
        low = jnp.maximum(1e-3 * pooled, fi.tiny)
        sigma2 = jnp.maximum(rest / max(D - q, 1), low)
        W = V * jnp.sqrt(jnp.maximum(lam - sigma2[:, None], 0.0))[:, None, :]
        psi = sigma2 if self.isotropic else jnp.maximum(var - jnp.sum(W * W, -1), low)
        weights = nk_e / jnp.sum(nk_e)
        return self._make(weights, means, W, psi)

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, key, params, n: int, return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)`` (and their components if ``return_labels``):
        k ~ π, x = W_k z + μ_k + Ψ_k^{1/2} ε."""
        self.check_params(params)
        check_sample_params(params.weights, params.means, params.loadings, params.noise_variance,
                            names=("means", "loadings", "noise_variance"))
        x, k = _sample(self, key, params, int(n))
        return (x, k) if return_labels else x

    def _sample(self, key, params, n):
        kk, kz, ke = jax.random.split(key, 3)
        K, D = params.means.shape
        k = jax.random.categorical(kk, jnp.log(params.weights), shape=(n,))
        z = jax.random.normal(kz, (n, self.n_factors), params.means.dtype)
        eps = jax.random.normal(ke, (n, D), params.means.dtype)
        x = (params.means[k] + jnp.einsum("ndq,nq->nd", params.loadings[k], z)
             + eps * jnp.sqrt(self._psi(params))[k])
        return x, k

    def predict(self, params, X):
        """``(N,)`` most probable component of each sample (-1 under jit for a row with NaN)."""
        return _predict(self, params, X) if is_concrete(params, X) else super().predict(params, X)


# Eager calls compile one program each (op by op, an eager E-step compiled ~60 small kernels,
# ~10 s on 2 cores); under a caller's jit they are inlined.
@compiled(static_argnames=("model", "method"))
def _run(model, method: str, *args):
    return getattr(model, method)(*args)


@compiled(static_argnames=("model", "n"))
def _sample(model, key, params, n):
    return model._sample(key, params, n)


def _predict(model, params, X):
    """`Mixture.predict` with its eager checks, then one compiled argmax."""
    X, _ = as_data(X, None, model.n_features(params))
    model.check_params(params)
    finite_rows(X, "predict")
    return _run(model, "_predict_traced", params, X)


@compiled(static_argnames=("model", "n_power_iter", "rows"))
def _init_compiled(model, key, X, w, n_power_iter, rows=None):
    return _shard.traced(rows, lambda key, X, w: model._init_rows(key, X, w, n_power_iter),
                         key, X, w)


def _shift(st: MixtureFactorStatistics, delta) -> MixtureFactorStatistics:
    """The same statistics about c_k - δ_k instead of c_k (residuals y + δ):
    Σ h (y + δ) = s + N δ,  Σ h (y + δ) mᵀ = S_yz + δ s_zᵀ,  Σ h (y + δ)² = S_yy + 2 δ s + N δ²."""
    n = st.counts[:, None]
    return st._replace(
        sum_y=st.sum_y + n * delta,
        sum_yz=st.sum_yz + delta[:, :, None] * st.sum_z[:, None, :],
        sum_yy=st.sum_yy + 2 * delta * st.sum_y + n * delta * delta)


def _maximize(st: MixtureFactorStatistics, c, prev, isotropic: bool, make):
    """The M-step of the module docstring from statistics about ``c (K, D)``; ``prev``: the
    parameters kept by (almost) empty components (None: none kept)."""
    dtype = st.sum_y.dtype
    K, q = st.sum_z.shape
    eps = 10 * jnp.finfo(dtype).eps
    nk = st.counts
    total = jnp.sum(nk)
    nk_e = jnp.maximum(nk, jnp.maximum(eps * total, jnp.finfo(dtype).tiny))
    on = jnp.ones(nk.shape, bool) if prev is None else prev.weights > 0
    nk_on = where(on, nk_e, 0.0)
    weights = nk_on / jnp.sum(nk_on)
    empty = nk < eps * total
    A = jnp.concatenate([
        jnp.concatenate([st.sum_zz, st.sum_z[:, :, None]], 2),
        jnp.concatenate([st.sum_z[:, None, :], nk_e[:, None, None]], 2)], 1)  # (K, q+1, q+1)
    A = where(empty[:, None, None], np.eye(q + 1, dtype=dtype), A)  # no NaN from an empty one
    B = jnp.concatenate([st.sum_yz, st.sum_y[:, :, None]], 2)  # (K, D, q+1)
    # B A⁻¹ = (B L_A⁻ᵀ) L_A⁻¹ with A = L_A L_Aᵀ (solves against I, see `_geometry`)
    LAinv = _tri(jnp.linalg.cholesky(A), jnp.broadcast_to(np.eye(q + 1, dtype=dtype), A.shape))
    coef = jnp.einsum("kdi,kji,kjl->kdl", B, LAinv, LAinv)
    W, b = coef[:, :, :q], coef[:, :, q]
    n = nk_e[:, None]
    psi = (st.sum_yy - jnp.sum(coef * B, -1)) / n
    var = st.sum_yy / n - (st.sum_y / n) ** 2
    psi = _floor(jnp.mean(psi, -1) if isotropic else psi, var, nk_e)
    means = c + b
    if prev is not None:
        keep = empty | ~on
        means = where(keep[:, None], prev.means, means)
        W = where(keep[:, None, None], prev.loadings, W)
        psi = where(keep[:, None] if psi.ndim == 2 else keep, prev.noise_variance, psi)
    return make(weights, means, W, psi), flag(jnp.any(empty & on), Status.EMPTY_COMPONENT)
