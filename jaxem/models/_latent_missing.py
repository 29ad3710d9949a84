"""PPCA and factor analysis with missing values integrated out (Ghahramani & Jordan 1994;
`jaxem._missing`).

For row n with observed mask o (1 = observed) the observed block is x_o = W_o z + μ_o + ε_o, so with
the whitened loadings W̃ = Ψ^{-1/2} W (rows of missing entries zeroed by the mask)
  G_n = I_q + W̃ᵀ diag(o) W̃ = L_n L_nᵀ,   q(z_n) = N(m_n, S_n),  S_n = G_n⁻¹,
  m_n = G_n⁻¹ W̃ᵀ (o ∘ ỹ_n),   ỹ_n = Ψ^{-1/2} (x_n - μ),
  log p(x_o) = -½ (|o| log 2π + Σ_{d∈o} log ψ_d + 2 log|L_n| + ||o ∘ ỹ||² - ||L_n⁻¹ W̃ᵀ(o ∘ ỹ)||²)
(determinant lemma and Woodbury on the observed block; one q x q Cholesky per row). The missing
entries given z are x_m = W_m z + μ_m + ε_m, independent of x_o (Ψ is diagonal), so with
y = x - μ and E[z zᵀ] = S_n + m_n m_nᵀ the expected complete-data statistics are, for a missing d,
  E[y_d] = W_d m_n,   E[y_d zᵀ] = W_d E[z zᵀ],   E[y_d²] = W_d E[z zᵀ] W_dᵀ + ψ_d,
and the observed values themselves otherwise. `LinearGaussian.maximize` of them is the EM update.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._chunk import chunked_map_sum, chunked_sum
from .._missing import solve_lower, solve_upper, split
from .._where import where


def _rows(model, params, x0, o):
    """``(log p(x_o) (c,), m (c, q), L (c, q, q))`` of a block."""
    psi = model._psi(params)
    s = jax.lax.rsqrt(psi)
    Wt = params.W * s[:, None]
    yt = o * (x0 - params.mean) * s
    q = Wt.shape[1]
    G = jnp.eye(q, dtype=Wt.dtype) + jnp.einsum("nd,de,df->nef", o, Wt, Wt)
    L = jnp.linalg.cholesky(G)
    u = solve_lower(L, yt @ Wt)
    m = solve_upper(L, u)
    log_det = o @ jnp.log(psi) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    n_obs = jnp.sum(o, 1)
    lp = -0.5 * (n_obs * math.log(2 * math.pi) + log_det + jnp.sum(yt * yt, 1)
                 - jnp.sum(u * u, 1))
    return lp, m, L


def statistics(model, params, X, w):
    """`LatentFactorStatistics` (about ``params.mean``) of data with NaN entries."""
    from ._linear_gaussian import LatentFactorStatistics

    W, psi = params.W, model._psi(params)
    q = W.shape[1]

    def block(x, wb):
        x0, o, wb = split(x, wb)
        lp, m, L = _rows(model, params, x0, o)
        Linv = solve_lower(L, jnp.broadcast_to(jnp.eye(q, dtype=x0.dtype), L.shape))
        Ezz = jnp.einsum("nji,njk->nik", Linv, Linv) + m[:, :, None] * m[:, None, :]
        y = o * (x0 - params.mean)
        wm = wb[:, None] * (1.0 - o)  # weights of the missing entries
        sum_z = wb @ m
        sum_zz = jnp.einsum("n,nij->ij", wb, Ezz)
        sum_y = wb @ y + jnp.sum(wm * (m @ W.T), 0)
        A = jnp.einsum("nd,nef->def", wm, Ezz)  # Σ_n w_n [d missing] E[z zᵀ]
        sum_yz = (wb[:, None] * y).T @ m + jnp.einsum("de,def->df", W, A)
        sum_yy = wb @ (y * y) + jnp.einsum("de,def,df->d", W, A, W) + jnp.sum(wm, 0) * psi
        ll = jnp.sum(where(wb > 0, wb * lp, 0.0))
        return sum_z, sum_zz, sum_y, sum_yz, sum_yy, ll, jnp.sum(wb)

    out = chunked_sum(block, X, w, model.chunk_size, X.shape[1] * q)
    return LatentFactorStatistics(*out)


def _map(model, params, X, fn):
    def block(x, wb):
        x0, o, _ = split(x, wb)
        return jnp.zeros((), x.dtype), fn(x0, o, *_rows(model, params, x0, o))

    ones = jnp.ones(X.shape[0], X.dtype)
    q = params.W.shape[1]
    return chunked_map_sum(block, (X, ones), model.chunk_size, X.shape[1] * q)[1]


def score_samples(model, params, X):
    """``(N,)`` log p(x_o) (0 for a row with nothing observed)."""
    return _map(model, params, X, lambda x0, o, lp, m, L: lp)


def transform(model, params, X):
    """``(N, q)`` E[z | x_o]."""
    return _map(model, params, X, lambda x0, o, lp, m, L: m)


def impute(model, params, X):
    """X with NaN replaced by E[x_m | x_o] = μ_m + W_m E[z | x_o]."""
    return _map(model, params, X,
                lambda x0, o, lp, m, L: where(o > 0, x0, params.mean + m @ params.W.T))
