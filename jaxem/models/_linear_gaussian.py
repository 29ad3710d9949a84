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

from .. import _shard
from .._checks import as_key
from .._chunk import chunked_map, chunked_sum
from .._compile import compiled
from .._missing import (allows_missing, check_missing, complete_rows, mean_imputed,
                        observed_weights)
from .._precision import normal
from .._validate import as_data, check_init_result, check_values, is_concrete, validate
from .._where import where
from . import _latent_missing
from ._base import Model


class LatentFactorPosterior(NamedTuple):
    """q(z_n) = N(mean[n], covariance): means ``(N, q)``, the shared covariance ``(q, q)``."""

    mean: jax.Array
    covariance: jax.Array


class LatentFactorStatistics(NamedTuple):
    """Expected sufficient statistics of PPCA / factor analysis (additive over rows), with the
    residuals y_n = x_n - c about a reference point c (by default the mean of the parameters they
    were computed at) and q(z_n) = N(m_n, Σ):

    Attributes:
      sum_z: ``(q,)`` Σ_n w_n E[z_n] = Σ w m.
      sum_zz: ``(q, q)`` Σ_n w_n E[z_n z_nᵀ] = Σ w (Σ + m mᵀ).
      sum_y: ``(D,)`` Σ_n w_n y_n.
      sum_yz: ``(D, q)`` Σ_n w_n y_n E[z_n]ᵀ.
      sum_yy: ``(D,)`` Σ_n w_n y_n² (the diagonal: all the M-step needs).
      log_likelihood: ``()`` Σ_n w_n log p(x_n | θ).
      total_weight: ``()`` Σ_n w_n.
    """

    sum_z: jax.Array
    sum_zz: jax.Array
    sum_y: jax.Array
    sum_yz: jax.Array
    sum_yy: jax.Array
    log_likelihood: jax.Array
    total_weight: jax.Array


@compiled(static_argnames=("model",))
def _impute(model, params, X):
    return _latent_missing.impute(model, params, X)


def _triangular_solve(L, B, transpose=False):
    """L⁻¹ B (or L⁻ᵀ B) for lower-triangular L."""
    return jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=True, transpose_a=transpose)


class LinearGaussian(Model):
    """Shared machinery of `PPCA` and `FactorAnalysis`; subclasses set ``isotropic``."""

    n_components: int
    chunk_size: int | None = None
    isotropic = False
    missing = "error"  # a dataclass field of the subclasses

    def __post_init__(self):
        super().__post_init__()
        check_missing(self.missing)

    def _effective_weights(self, X, w):
        return observed_weights(X, w) if allows_missing(self) else w

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
        complete_rows(self, X, "e_step")
        m, yt, u, L = self._posterior_rows(params, X)
        lp = self._log_norm(params, L) - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
        ll = jnp.sum(where(w > 0, w * lp, 0.0))
        return LatentFactorPosterior(m, self._posterior_cov(L)), ll

    def score_samples(self, params, X):
        """``(N,)`` log N(x_n | μ, WWᵀ + Ψ) via the determinant lemma and Woodbury's identity."""
        X, _ = as_data(X, None, self.n_features(params))
        if allows_missing(self):  # log p(x_o): the observed entries' marginal
            return _latent_missing.score_samples(self, params, X)
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)

        def rows(x):
            _, yt, u, _ = self._posterior_rows(params, x)
            return c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))

        return chunked_map(rows, X, self.chunk_size, X.shape[1])

    def log_likelihood(self, params, X, weights=None):
        """Weighted sum of log p(x_n | params), streamed over row blocks."""
        X, w = as_data(X, weights, self.n_features(params))
        if allows_missing(self):
            w = observed_weights(X, w)
            lp = _latent_missing.score_samples(self, params, X)
            return jnp.sum(where(w > 0, w * lp, 0.0))
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)

        def chunk(x, wc):
            _, yt, u, _ = self._posterior_rows(params, x)
            lp = c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
            return jnp.sum(where(wc > 0, wc * lp, 0.0))

        return chunked_sum(chunk, X, w, self.chunk_size, X.shape[1])

    # jaxem.fit with a GradientMStep refuses NaN entries: Q takes the latent factors' posterior,
    # which `e_step` forms from complete rows only.
    _q_needs_complete_rows = True

    def q_function(self, params, posterior, X, weights=None):
        """Q = Σ_n w_n E_q[log N(x_n | W z_n + μ, Ψ) + log N(z_n | 0, I)]
        = Σ_n w_n [-(D+q)/2 log 2π - ½ log|Ψ| - ½ (ỹᵀỹ - 2 ỹᵀW̃ m + tr(W̃ᵀW̃ (Σ + m mᵀ)))
                   - ½ (tr Σ + mᵀm)]."""
        X, w = as_data(X, weights, self.n_features(params))
        complete_rows(self, X, "q_function")
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

    # --- statistics and M-step ------------------------------------------------------------------
    @staticmethod
    def _stats(m, y, w):
        """(Σ w m, Σ w m mᵀ, Σ w y, Σ w y mᵀ, Σ w y²) of one block."""
        mw = m * w[:, None]
        return jnp.sum(mw, 0), mw.T @ m, w @ y, y.T @ mw, w @ (y * y)

    def statistics_reference(self, params):
        """Default reference point of `sufficient_statistics`: the mean ``(D,)``."""
        return params.mean

    def sufficient_statistics(self, params, X, weights=None, *, reference=None
                              ) -> LatentFactorStatistics:
        """Expected sufficient statistics at ``params`` (a `LatentFactorStatistics`) about
        ``reference`` ``(D,)`` (None: ``params.mean``); additive over rows that share it."""
        X, w = as_data(X, weights, self.n_features(params))
        st = self._statistics(params, X, w)
        if reference is None:
            return st
        delta = params.mean - reference  # y' = y + δ
        n = st.total_weight
        return st._replace(
            sum_y=st.sum_y + n * delta, sum_yz=st.sum_yz + delta[:, None] * st.sum_z[None, :],
            sum_yy=st.sum_yy + 2 * delta * st.sum_y + n * delta * delta)

    def _statistics(self, params, X, weights) -> LatentFactorStatistics:
        """One streamed pass over the rows: O(N D q), no D x D matrix (with missing values: one
        q x q Cholesky per row, `jaxem.models._latent_missing`)."""
        if allows_missing(self):
            return _latent_missing.statistics(self, params, X, weights)
        _, _, L = self._factor(params)
        c = self._log_norm(params, L)
        mu = params.mean

        def chunk(x, wc):
            m, yt, u, _ = self._posterior_rows(params, x)
            lp = c - 0.5 * (jnp.sum(yt * yt, 1) - jnp.sum(u * u, 1))
            ll = jnp.sum(where(wc > 0, wc * lp, 0.0))
            return self._stats(m, x - mu, wc), ll

        (sz, szz, sy, syz, syy), ll = chunked_sum(chunk, X, weights, self.chunk_size, X.shape[1])
        total = jnp.sum(weights)
        return LatentFactorStatistics(sz, szz + total * self._posterior_cov(L), sy, syz, syy, ll,
                                      total)

    def _maximize(self, st: LatentFactorStatistics, params, reference=None):
        """[W, μ - c] = B A⁻¹ (Cholesky solve of the (q+1) x (q+1) system), then the noise."""
        c = params.mean if reference is None else reference
        s0 = st.total_weight
        A = jnp.block([[st.sum_zz, st.sum_z[:, None]], [st.sum_z[None, :], s0[None, None]]])
        B = jnp.concatenate([st.sum_yz, st.sum_y[:, None]], axis=1)  # (D, q+1)
        q = st.sum_zz.shape[0]
        LA = jnp.linalg.cholesky(A)
        coef = jax.scipy.linalg.cho_solve((LA, True), B.T).T  # B A⁻¹
        W, b = coef[:, :q], coef[:, q]
        psi = (st.sum_yy - jnp.sum(coef * B, 1)) / s0
        var = st.sum_yy / s0 - (st.sum_y / s0) ** 2
        psi = self._floor(jnp.mean(psi) if self.isotropic else psi, var)
        return self._make(c + b, W, psi), jnp.int32(0)

    def _maximize_fixed(self, st: LatentFactorStatistics, params, fixed, reference=None):
        """`_maximize` with ``fixed`` fields held (ECM, `jaxem._fixed`), about c = ``reference``
        (None: ``params.mean``; with μ fixed the statistics must be about it).
        With b = μ - c and the residual r = y - b - W z:
          μ fixed, W free:  W = (Σ w y E[z]ᵀ - b Σ w E[z]ᵀ) (Σ w E[zzᵀ])⁻¹   (regression without
                            an intercept);
          W fixed, μ free:  b = (Σ w y - W Σ w E[z]) / Σ w;
          then ψ_d = Σ_n w_n E[r_nd²] / Σ w (its mean for PPCA), at the new μ and W. The noise
        does not enter the maximisers of μ and W, so a fixed noise alone is just restored (by
        the caller)."""
        if "mean" not in fixed and "W" not in fixed:
            return self._maximize(st, params, reference)
        c = params.mean if reference is None else reference
        s0 = st.total_weight
        Sz, Szz, Sy, Syz, Syy = st.sum_z, st.sum_zz, st.sum_y, st.sum_yz, st.sum_yy
        if "W" in fixed:
            W = params.W
            b = jnp.zeros_like(c) if "mean" in fixed else (Sy - W @ Sz) / s0
        else:
            b = jnp.zeros_like(c)  # μ fixed at c
            LS = jnp.linalg.cholesky(Szz)
            W = jax.scipy.linalg.cho_solve((LS, True), (Syz - b[:, None] * Sz[None, :]).T).T
        WS = W @ Sz
        R = (Syy - 2 * b * Sy - 2 * jnp.sum(W * Syz, 1) + s0 * b * b + 2 * b * WS
             + jnp.sum((W @ Szz) * W, 1))
        var = Syy / s0 - (Sy / s0) ** 2
        psi = self._floor(jnp.mean(R / s0) if self.isotropic else R / s0, var)
        return self._make(c + b, W, psi), jnp.int32(0)

    @staticmethod
    def _floor(psi, var):
        """Noise variances floored at 10·eps of the mean feature variance: keeps Ψ⁻¹ finite when a
        feature is (nearly) constant or a factor explains it exactly (a Heywood case)."""
        fi = jnp.finfo(psi.dtype)
        return jnp.maximum(psi, 10 * fi.eps * jnp.maximum(jnp.mean(var), fi.tiny))

    def m_step(self, posterior, X, weights=None, params=None):
        """Closed-form maximiser of Q given the posterior (``params`` is not needed)."""
        X, w = as_data(X, weights)
        complete_rows(self, X, "m_step")
        c = (w @ X) / jnp.sum(w)
        sz, szz, sy, syz, syy = self._stats(posterior.mean, X - c, w)
        total = jnp.sum(w)
        st = LatentFactorStatistics(sz, szz + total * posterior.covariance, sy, syz, syy,
                                    jnp.zeros((), X.dtype), total)
        return self._maximize(st, None, reference=c)[0]

    # --- initialisation, projections, sampling --------------------------------------------------
    def _check_rank(self, D):
        raise NotImplementedError

    def init(self, key, X, weights=None):
        """μ = weighted mean, W = random N(0, 1) loadings scaled by the feature spread, noise =
        half the mean feature variance (Ψ: half of each feature's variance). ``key``: a
        `jax.random` key or an int seed."""
        key = as_key(key)
        X, w = as_data(X, weights)
        if allows_missing(self):  # from the column-mean imputed data
            w = observed_weights(X, w)
            validate(X, w, max(self.n_components, 2), allow_nan=True)
            X, w = mean_imputed(X, w)
        else:
            validate(X, w, max(self.n_components, 2))
        self._check_rank(X.shape[1])
        # X split by rows over devices: plain reductions (each device its rows, then a sum).
        return _shard.traced(_shard.row_sharding(X), self._init, key, X, w)

    def _init(self, key, X, w):
        D = X.shape[1]
        mu = (w @ X) / jnp.sum(w)
        var = (w @ (X - mu) ** 2) / jnp.sum(w)
        scale = jnp.sqrt(jnp.mean(var) / (2.0 * self.n_components))
        W = scale * normal(key, (D, self.n_components), X.dtype)  # same in f32 and f64
        psi = self._floor(0.5 * var, var)  # a constant feature: the floor, not 0
        params = self._make(mu, W, jnp.mean(psi) if self.isotropic else psi)
        check_init_result(params, X)  # eager: X's scale overflowed the dtype -> ValueError
        return params

    def transform(self, params, X):
        """``(N, q)`` posterior means E[z_n | x_n] = G⁻¹ W̃ᵀ Ψ^{-1/2} (x_n - μ) (with
        ``missing="marginalize"``: E[z_n | observed entries])."""
        X, _ = as_data(X, None, self.n_features(params))
        if allows_missing(self):
            return _latent_missing.transform(self, params, X)
        return self._posterior_rows(params, X)[0]

    def impute(self, params, X):
        """``X (N, D)`` with every NaN entry replaced by E[x_m | x_o] = μ_m + W_m E[z | x_o]
        (Ghahramani & Jordan 1994; observed entries unchanged; a row with nothing observed gets μ).

        Example:
          >>> import jax, jax.numpy as jnp, jaxem
          >>> X = jax.random.normal(jax.random.key(0), (100, 4))
          >>> model = jaxem.FactorAnalysis(1, missing="marginalize")
          >>> Xm = X.at[0, 1].set(jnp.nan)
          >>> params = jaxem.fit(model, model.init(jax.random.key(1), Xm), Xm).params
          >>> Xf = model.impute(params, Xm)
        """
        X, _ = as_data(X, None, self.n_features(params))
        if is_concrete(X):
            check_values(X, jnp.ones(X.shape[0], X.dtype), allow_nan=True)
        return _impute(self, params, X)

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
