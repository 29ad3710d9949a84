"""Linear-Gaussian latent factor models x = W z + μ + ε (shared by PPCA and factor analysis).

Notation (Tipping & Bishop 1999, "Probabilistic principal component analysis", JRSS-B 61(3);
Rubin & Thayer 1982; Bishop 2006, §12.2). z ~ N(0, I_q), ε ~ N(0, Ψ) with Ψ = diag(ψ) (factor
analysis) or Ψ = σ² I (PPCA). With the whitened loadings W̃ = Ψ^{-1/2} W and the q x q matrix
  G = I_q + W̃ᵀW̃  = M / σ²  for PPCA (M = WᵀW + σ² I),   G = L Lᵀ (Cholesky),
the marginal is x ~ N(μ, C), C = WWᵀ + Ψ, and, by the determinant lemma and Woodbury's identity,
  log|C| = Σ_d log ψ_d + 2 Σ_j log L_jj,
  (x-μ)ᵀ C⁻¹ (x-μ) = ||ỹ||² - ||L⁻¹ W̃ᵀ ỹ||²,   ỹ = Ψ^{-1/2} (x - μ),
so no D x D matrix is ever formed or inverted; the cost is O(N D q).
E-step: q(z_n) = N(m_n, Σ) with Σ = G⁻¹ (σ² M⁻¹ for PPCA) shared by all samples and
  m_n = G⁻¹ W̃ᵀ ỹ_n  (= M⁻¹ Wᵀ (x_n - μ) for PPCA).
M-step: the regression of x on z̃ = [z; 1] under q: with weighted sufficient statistics (y = x - c for
any centre c)
  A = Σ_n w_n E[z̃_n z̃_nᵀ] = [[Σ w (Σ + m mᵀ), Σ w m], [Σ w mᵀ, Σ w]],   B = Σ_n w_n y_n E[z̃_n]ᵀ,
  [W, μ - c] = B A⁻¹,   ψ_d = (Σ_n w_n y_nd² - Σ_j [B A⁻¹]_dj B_dj) / Σ_n w_n,
and σ² = mean_d ψ_d for PPCA. Estimating μ jointly with W keeps every iteration an exact EM step from
any start; from μ = the weighted mean (as `init` does) it reduces to Tipping & Bishop's (27)-(28).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._chunk import chunked_map, chunked_sum
from .._validate import as_data, validate
from .._where import where
from ._base import Model


class LatentFactorPosterior(NamedTuple):
    """q(z_n) = N(mean[n], covariance): means ``(N, q)``, the shared covariance ``(q, q)``."""

    mean: jax.Array
    covariance: jax.Array


class _Stats(NamedTuple):
    s0: jax.Array  # ()      Σ w
    sz: jax.Array  # (q,)    Σ w m
    szz: jax.Array  # (q, q) Σ w m mᵀ
    sy: jax.Array  # (D,)    Σ w y
    syz: jax.Array  # (D, q) Σ w y mᵀ
    syy: jax.Array  # (D,)   Σ w y²


def _triangular_solve(L, B, transpose=False):
    """L⁻¹ B (or L⁻ᵀ B) for lower-triangular L."""
    return jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=True, transpose_a=transpose)


class LinearGaussian(Model):
    """Shared machinery of `PPCA` and `FactorAnalysis`; subclasses set ``isotropic``."""

    n_components: int
    chunk_size: int | None = None
    isotropic = False

    # --- shapes and parameters ------------------------------------------------------------------
    def n_features(self, params) -> int:
        return params.mean.shape[-1]

    def _psi(self, params):
        """``(D,)`` noise variances Ψ_dd."""
        nv = params.noise_variance
        return jnp.broadcast_to(nv, params.mean.shape) if self.isotropic else nv

    def _make(self, mean, W, psi):
        raise NotImplementedError

    def n_parameters(self, params) -> int:
        """Free parameters: μ (D), W (Dq minus the q(q-1)/2 rotation), noise (1 or D)."""
        D, q = params.W.shape[-2:]
        return D + D * q - q * (q - 1) // 2 + (1 if self.isotropic else D)

    # --- the q x q factorisation ----------------------------------------------------------------
    def _factor(self, params):
        """Returns ``(s, Wt, L)``: s = Ψ^{-1/2} (D,), W̃ = Ψ^{-1/2} W, L = chol(I + W̃ᵀW̃)."""
        psi = self._psi(params)
        s = jax.lax.rsqrt(psi)
        Wt = params.W * s[:, None]
        q = Wt.shape[1]
        L = jnp.linalg.cholesky(jnp.eye(q, dtype=Wt.dtype) + Wt.T @ Wt)
        return s, Wt, L

    def _posterior_rows(self, params, X):
        """Posterior means m ``(n, q)``, whitened residuals ỹ ``(n, D)`` and u = L⁻¹W̃ᵀỹ ``(n, q)``."""
        s, Wt, L = self._factor(params)
        yt = (X - params.mean) * s
        u = _triangular_solve(L, (yt @ Wt).T)  # (q, n)
        m = _triangular_solve(L, u, transpose=True).T
        return m, yt, u.T, L

    def _log_norm(self, params, L):
        """-½ (D log 2π + log|C|)."""
        D = params.mean.shape[-1]
        log_det = jnp.sum(jnp.log(self._psi(params))) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(L)))
        return -0.5 * (D * math.log(2 * math.pi) + log_det)

    def _posterior_cov(self, L):
        """Σ = G⁻¹ = L⁻ᵀ L⁻¹."""
        Linv = _triangular_solve(L, jnp.eye(L.shape[0], dtype=L.dtype))
        return Linv.T @ Linv

    # --- E-step, likelihood, Q, entropy ---------------------------------------------------------
    def e_step(self, params, X, weights=None):
        """Posterior `LatentFactorPosterior` (means (N, q), covariance (q, q)) and the weighted
        log-likelihood Σ_n w_n log N(x_n | μ, WWᵀ + Ψ)."""
        X, w = as_data(X, weights, self.n_features(params))
        m, yt, u, L = self._posterior_rows(params, X)
        lp = self._log_norm(params, L) - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
        ll = jnp.sum(where(w > 0, w * lp, 0.0))
        return LatentFactorPosterior(m, self._posterior_cov(L)), ll

    def score_samples(self, params, X):
        """``(N,)`` log N(x_n | μ, WWᵀ + Ψ) via the determinant lemma and Woodbury's identity."""
        X, _ = as_data(X, None, self.n_features(params))
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)

        def rows(x):
            _, yt, u, _ = self._posterior_rows(params, x)
            return c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))

        return chunked_map(rows, X, self.chunk_size, X.shape[1])

    def log_likelihood(self, params, X, weights=None):
        """Weighted sum of log p(x_n | params), streamed over row blocks."""
        X, w = as_data(X, weights, self.n_features(params))
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)

        def chunk(x, wc):
            _, yt, u, _ = self._posterior_rows(params, x)
            lp = c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
            return jnp.sum(where(wc > 0, wc * lp, 0.0))

        return chunked_sum(chunk, X, w, self.chunk_size, X.shape[1])

    def q_function(self, params, posterior, X, weights=None):
        """Q = Σ_n w_n E_q[log N(x_n | W z_n + μ, Ψ) + log N(z_n | 0, I)]
        = Σ_n w_n [-(D+q)/2 log 2π - ½ log|Ψ| - ½ (ỹᵀỹ - 2 ỹᵀW̃ m + tr(W̃ᵀW̃ (Σ + m mᵀ)))
                   - ½ (tr Σ + mᵀm)]."""
        X, w = as_data(X, weights, self.n_features(params))
        m, S = posterior.mean, posterior.covariance
        psi = self._psi(params)
        s = jax.lax.rsqrt(psi)
        Wt = params.W * s[:, None]
        yt = (X - params.mean) * s
        D, q = Wt.shape
        WtW = Wt.T @ Wt
        quad = (
            jnp.sum(yt * yt, 1)
            - 2.0 * jnp.sum((yt @ Wt) * m, 1)
            + jnp.sum((m @ WtW) * m, 1)
            + jnp.sum(WtW * S)
        )
        prior = jnp.trace(S) + jnp.sum(m * m, 1)
        const = -0.5 * ((D + q) * math.log(2 * math.pi) + jnp.sum(jnp.log(psi)))
        return jnp.sum(w * (const - 0.5 * (quad + prior)))

    def posterior_entropy(self, posterior, weights=None):
        """Σ_n w_n H[N(m_n, Σ)] = Σ_n w_n (q/2 (1 + log 2π) + ½ log|Σ|)."""
        S = posterior.covariance
        q = S.shape[-1]
        h = 0.5 * q * (1.0 + math.log(2 * math.pi)) + jnp.sum(
            jnp.log(jnp.diagonal(jnp.linalg.cholesky(S)))
        )
        n = posterior.mean.shape[0]
        w = jnp.ones(n, S.dtype) if weights is None else jnp.asarray(weights, S.dtype)
        return jnp.sum(w) * h

    # --- M-step ---------------------------------------------------------------------------------
    @staticmethod
    def _stats(m, y, w):
        mw = m * w[:, None]
        return _Stats(jnp.sum(w), jnp.sum(mw, 0), mw.T @ m, w @ y, y.T @ mw, w @ (y * y))

    def _params_from_stats(self, st: _Stats, S, c):
        """[W, μ - c] = B A⁻¹ (Cholesky solve of the (q+1) x (q+1) system), then the noise."""
        q = S.shape[0]
        A = jnp.block([[st.szz + st.s0 * S, st.sz[:, None]], [st.sz[None, :], st.s0[None, None]]])
        B = jnp.concatenate([st.syz, st.sy[:, None]], axis=1)  # (D, q+1)
        LA = jnp.linalg.cholesky(A)
        coef = jax.scipy.linalg.cho_solve((LA, True), B.T).T  # B A⁻¹
        W, b = coef[:, :q], coef[:, q]
        psi = (st.syy - jnp.sum(coef * B, 1)) / st.s0
        # Floor at a tiny fraction of the mean feature variance: keeps Ψ⁻¹ finite when a feature is
        # (nearly) constant or a factor explains it exactly (a Heywood case).
        var = st.syy / st.s0 - (st.sy / st.s0) ** 2
        fi = jnp.finfo(psi.dtype)
        floor = 10 * fi.eps * jnp.maximum(jnp.mean(var), fi.tiny)
        psi = jnp.maximum(jnp.mean(psi) if self.isotropic else psi, floor)
        return self._make(c + b, W, psi)

    def m_step(self, posterior, X, weights=None, params=None):
        """Closed-form maximiser of Q given the posterior (``params`` is not needed)."""
        X, w = as_data(X, weights)
        c = (w @ X) / jnp.sum(w)
        st = self._stats(posterior.mean, X - c, w)
        return self._params_from_stats(st, posterior.covariance, c)

    def em_update(self, params, X, weights):
        """Fused E+M step, one streamed pass over the rows: O(N D q), no D x D matrix."""
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)
        mu = jax.lax.stop_gradient(params.mean)

        def chunk(x, wc):
            m, yt, u, _ = self._posterior_rows(params, x)
            lp = c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
            ll = jnp.sum(where(wc > 0, wc * lp, 0.0))
            return self._stats(m, x - mu, wc), ll

        st, ll = chunked_sum(chunk, X, weights, self.chunk_size, X.shape[1])
        return self._params_from_stats(st, self._posterior_cov(L), mu), ll, jnp.int32(0)

    # --- initialisation, projections, sampling --------------------------------------------------
    def _check_rank(self, D):
        raise NotImplementedError

    def init(self, key, X, weights=None):
        """μ = weighted mean, W = random N(0, 1) loadings scaled by the feature spread, noise =
        half the mean feature variance (Ψ: half of each feature's variance)."""
        X, w = as_data(X, weights)
        validate(X, w, max(self.n_components, 2))
        N, D = X.shape
        self._check_rank(D)
        mu = (w @ X) / jnp.sum(w)
        var = jnp.maximum((w @ (X - mu) ** 2) / jnp.sum(w), jnp.finfo(X.dtype).tiny)
        scale = jnp.sqrt(jnp.mean(var) / (2.0 * self.n_components))
        W = scale * jax.random.normal(key, (D, self.n_components), X.dtype)
        psi = 0.5 * var
        return self._make(mu, W, jnp.mean(psi) if self.isotropic else psi)

    def transform(self, params, X):
        """``(N, q)`` posterior means E[z_n | x_n] = G⁻¹ W̃ᵀ Ψ^{-1/2} (x_n - μ)."""
        X, _ = as_data(X, None, self.n_features(params))
        return self._posterior_rows(params, X)[0]

    def inverse_transform(self, params, Z):
        """``(N, D)`` mean of x given z: W z + μ."""
        Z = jnp.asarray(Z)
        if Z.ndim != 2 or Z.shape[1] != params.W.shape[1]:
            raise ValueError(
                f"Z must have shape (n_samples, {params.W.shape[1]}) (the latent dimension), got "
                f"{Z.shape}."
            )
        return Z @ params.W.T + params.mean

    def sample(self, key, params, n: int):
        """Draw ``n`` samples ``(n, D)``: x = W z + μ + Ψ^{1/2} ε."""
        kz, ke = jax.random.split(key)
        D, q = params.W.shape
        z = jax.random.normal(kz, (n, q), params.W.dtype)
        eps = jax.random.normal(ke, (n, D), params.W.dtype)
        return z @ params.W.T + params.mean + eps * jnp.sqrt(self._psi(params))
