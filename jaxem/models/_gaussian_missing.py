"""Gaussian mixtures with missing values integrated out (Ghahramani & Jordan 1994;
`jaxem._missing`).

For row n with observed mask o_n and component k (residuals about the current means μ_k, so the
statistics are those of `GaussianMixtureStatistics` about the means, float32-safe):
  ℓ_nk = log π_k + log N(x_n,o | μ_k,o, Σ_k,oo)                  (observed-block marginal),
  r_nk = softmax_k ℓ_nk,   d_nk = E_k[x_n | x_n,o] - μ_k,   C_nk = Cov_k[x_n | x_n,o],
  N_k = Σ_n w_n r_nk,  sum_x_k = Σ_n w_n r_nk d_nk,  sum_xx_k = Σ_n w_n r_nk (d_nk d_nkᵀ + C_nk),
the expected complete-data statistics, which `GaussianMixture.maximize` turns into the EM update
  μ_k = μ_k + sum_x_k / N_k,  Σ_k = sum_xx_k / N_k - (sum_x_k / N_k)(sum_x_k / N_k)ᵀ + reg_covar·I.
Diagonal and spherical covariances: the features are independent given k, so the missing entries'
conditional is their marginal, d = o ∘ (x - μ_k) and C = diag((1 - o) σ²_k). Full and tied: Σ_k
swept on the row's observed pivots (`jaxem._missing.sweep`); tied sweeps once per row for all
components.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._chunk import chunked_map_sum
from .._labels import clamp, labelled_sum
from .._missing import split, sweep
from .._where import where
from ._base import weighted_posterior


def width(model, X) -> int:
    """Widest per-row intermediate (sets the automatic chunk size)."""
    K, D = model.n_components, X.shape[1]
    return K * D * (D if model.covariance_type in ("full", "tied") else 1)


def _parts(model, params, x0, o, with_cov: bool):
    """``(ℓ (c, K), d (c, K, D), C)`` of a block: C is full ``(c, K, D, D)``, tied ``(c, D, D)``,
    diag/spherical ``(c, K, D)`` (the diagonal); None unless ``with_cov``."""
    ct, mu, cov = model.covariance_type, params.means, params.covariances
    K, D = mu.shape
    r = o[:, None, :] * (x0[:, None, :] - mu[None])  # (c, K, D)
    C = None
    if ct in ("full", "tied"):
        # Σ_k swept on each row's observed entries: full (c, K, D, D); tied (c, D, D), one per row.
        A, log_det = sweep(cov[None] if ct == "full" else cov, o[:, None, :] if ct == "full" else o)
        Ak = A if ct == "full" else A[:, None]
        Ar = jnp.einsum("nkde,nke->nkd", Ak, r)  # [-Σ_oo⁻¹ r_o; Σ_mo Σ_oo⁻¹ r_o]
        quad = -jnp.sum(r * Ar, -1)  # r_oᵀ Σ_oo⁻¹ r_o (r is 0 on the missing entries)
        d = where(o[:, None, :] > 0, r, Ar)
        if ct == "tied":
            log_det = jnp.broadcast_to(log_det[:, None], quad.shape)
        if with_cov:
            m = 1.0 - o
            mm = m[:, :, None] * m[:, None, :]
            C = A * (mm[:, None] if ct == "full" else mm)
    else:
        var = cov if ct == "diag" else jnp.broadcast_to(cov[:, None], (K, D))
        quad = jnp.sum(r * r / var[None], -1)
        log_det = o @ jnp.log(var).T  # (c, K)
        d = r
        if with_cov:
            C = (1.0 - o)[:, None, :] * var[None]
    n_obs = jnp.sum(o, 1, keepdims=True)
    lj = jnp.log(params.weights) - 0.5 * (n_obs * math.log(2 * math.pi) + log_det + quad)
    return lj, d, C


def log_joint_fn(model, params):
    """``X_block -> (c, K)`` log π_k + log N(x_o | μ_k,o, Σ_k,oo) (0-dimensional marginal: log π_k
    for a row with no observed entry)."""
    def fn(x):
        x0, o, _ = split(x, jnp.ones(x.shape[0], x.dtype))
        return _parts(model, params, x0, o, with_cov=False)[0]

    return fn


def statistics(model, params, X, w, acc, labels=None):
    """`GaussianMixtureStatistics` (about the means) of data with NaN entries, in dtype ``acc``;
    ``labels (N,)`` (-1 unknown) clamp the labelled rows' responsibilities (`jaxem._labels`)."""
    from .gaussian_mixture import GaussianMixtureStatistics

    ct = model.covariance_type

    def block(x, lb, wb):
        x0, o, wb = split(x, wb)
        lj, d, C = _parts(model, params, x0, o, with_cov=True)
        rw, ll = weighted_posterior(clamp(lj, lb), wb)
        nk = jnp.sum(rw, 0)
        sx = jnp.einsum("nk,nkd->kd", rw, d)
        if ct == "full":
            sxx = jnp.einsum("nk,nkd,nke->kde", rw, d, d) + jnp.einsum("nk,nkde->kde", rw, C)
        elif ct == "tied":
            sxx = jnp.einsum("nk,nkd,nke->de", rw, d, d) + jnp.einsum("n,nde->de",
                                                                        jnp.sum(rw, 1), C)
        else:
            sxx = jnp.einsum("nk,nkd->kd", rw, d * d + C)
        tot = jnp.sum(wb)
        return jax.tree_util.tree_map(lambda a: a.astype(acc), (nk, sx, sxx, ll, tot))

    nk, sx, sxx, ll, total = labelled_sum(block, X, w, labels, model.chunk_size, width(model, X))
    return GaussianMixtureStatistics(nk, sx, sxx, ll, total)


def impute(model, params, X):
    """X with NaN entries replaced by E[x_m | x_o] = Σ_k r_k(x_o) (μ_k,m + d_k,m)."""
    def block(x, wb):
        x0, o, _ = split(x, wb)
        lj, d, _ = _parts(model, params, x0, o, with_cov=False)
        r = jax.nn.softmax(lj, axis=1)
        fill = jnp.einsum("nk,nkd->nd", r, params.means[None] + d)
        return jnp.zeros((), x.dtype), where(o > 0, x0, fill)

    ones = jnp.ones(X.shape[0], X.dtype)
    return chunked_map_sum(block, (X, ones), model.chunk_size, width(model, X))[1]
