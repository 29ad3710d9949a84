"""Missing values (NaN entries of X) integrated out exactly: the pieces shared by the families.

Ghahramani & Jordan (1994), "Supervised learning from incomplete data via an EM approach" (NIPS 6).
Each row x_n splits into observed entries o_n and missing entries m_n (NaN). Under a Gaussian
(component) N(μ, Σ) the observed block is N(μ_o, Σ_oo) and the missing block given it is
  x_m | x_o ~ N(μ_m + Σ_mo Σ_oo⁻¹ (x_o - μ_o),  Σ_mm - Σ_mo Σ_oo⁻¹ Σ_om),
so the E-step scores each row by its observed-block marginal and fills the expected complete-data
sufficient statistics with E[x_m | x_o] and E[x_m x_mᵀ | x_o] = E[x_m] E[x_m]ᵀ + Cov[x_m | x_o].
The M-step is the complete-data one, unchanged.

Per row, with the 0/1 mask o (1 = observed), the computation is mask-based (one program for every
missingness pattern: jittable, vmappable): `sweep` sweeps Σ on the observed pivots only, which
gives in Σ's own index order A_oo = -Σ_oo⁻¹, A_mo = Σ_mo Σ_oo⁻¹ and A_mm = Cov[x_m | x_o], and
log|Σ_oo| as the sum of the logs of the pivots. With r = o ∘ (x - μ) (0 on the missing entries):
  r_oᵀ Σ_oo⁻¹ r_o = -rᵀ A r,   E[x | x_o] - μ = [r_o; A_mo r_o],   Cov[x | x_o] = (1-o)(1-o)ᵀ ∘ A.
PPCA / factor analysis need only a q x q Cholesky per row (`jaxem.models._latent_missing`).
A row with no observed entry carries no information: its weight is set to 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import one_of
from ._where import where

MISSING = ("error", "marginalize")


def check_missing(value) -> None:
    one_of("missing", value, MISSING)


def complete_rows(model, X, what: str, fix: str | None = None) -> None:
    """For a model with ``missing="marginalize"``: ValueError if concrete ``X`` has a NaN entry,
    for ``what`` (a posterior-based E/M function that needs complete data); ``fix``: what to do
    instead (default: EM on the expected statistics)."""
    from ._validate import is_concrete

    if not allows_missing(model) or not is_concrete(X) \
            or not getattr(X, "is_fully_addressable", True):
        return
    if np.isnan(np.asarray(X)).any():
        raise ValueError(
            f"{what} needs complete rows, and X has NaN entries. " + (fix or
            "With missing values, EM runs on the expected statistics: jaxem.fit, or "
            "model.maximize(model.sufficient_statistics(params, X), params)")
            + "; model.impute(params, X) fills the NaN entries.")


def allows_missing(model) -> bool:
    """Whether ``model`` integrates NaN entries out (``missing="marginalize"``)."""
    return getattr(model, "missing", "error") == "marginalize"


def split(x, w):
    """``(x0, o, w)`` of a block: NaN entries replaced by 0 (no NaN ever enters arithmetic, so no
    NaN gradient either), the observed mask ``o`` as 0/1 floats, and the weights with rows that
    have no observed entry set to 0."""
    seen = ~jnp.isnan(x)
    x0 = where(seen, x, 0.0)
    o = seen.astype(x0.dtype)
    return x0, o, where(jnp.any(seen, axis=1), w, 0.0)


@jax.jit
def observed_weights(X, w):
    """``w`` with the rows that have no observed entry set to 0."""
    return where(jnp.any(~jnp.isnan(X), axis=1), w, 0.0)


def sweep(S, o):
    """Σ swept on its observed pivots (Beaton 1964; Little & Rubin 2002, §7.4-7.5), one row mask
    at a time, vectorised over the leading axes: ``(A, log|Σ_oo|)`` with, in Σ's index order,
      A_oo = -Σ_oo⁻¹,   A_mo = Σ_mo Σ_oo⁻¹,   A_mm = Σ_mm - Σ_mo Σ_oo⁻¹ Σ_om   (= Cov[x_m | x_o]),
    and log|Σ_oo| the sum of the logs of the pivots. Sweeping pivot j (skipped where o_j = 0):
    h = A_jj; A_il ← A_il - A_ij A_jl / h (i, l ≠ j); A_jl ← A_jl / h; A_ij ← A_ij / h;
    A_jj ← -1/h. D elementwise passes over ``(..., D, D)`` (Gaussian elimination of the SPD
    Σ_oo, pivot by pivot): no per-row LAPACK call, which costs ~100x more for small D.
    ``S (..., D, D)`` and ``o (..., D)`` broadcast against each other."""
    D = S.shape[-1]
    shape = jnp.broadcast_shapes(S.shape[:-2], o.shape[:-1])
    A = jnp.broadcast_to(S, shape + (D, D))
    log_det = jnp.zeros(shape, S.dtype)
    idx = np.arange(D)
    for j in range(D):
        on = jnp.broadcast_to(o[..., j] > 0, shape)
        h = where(on, A[..., j, j], 1.0)
        col = A[..., :, j] / h[..., None]  # A_ij / h
        row = A[..., j, :]
        rj, cj = (idx == j)[:, None], (idx == j)[None, :]
        B = where(rj & cj, -1.0 / h[..., None, None],
                  where(rj, row[..., None, :] / h[..., None, None],
                        where(cj, col[..., :, None], A - col[..., :, None] * row[..., None, :])))
        A = where(on[..., None, None], B, A)
        log_det = log_det + where(on, jnp.log(h), 0.0)
    return A, log_det


def solve_lower(L, b):
    """L⁻¹ b for lower-triangular ``L (..., D, D)`` and ``b (..., D)`` or ``(..., D, E)``."""
    vec = b.ndim == L.ndim - 1
    B = b[..., None] if vec else b
    out = jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=True)
    return out[..., 0] if vec else out


def solve_upper(L, b):
    """L⁻ᵀ b for lower-triangular ``L (..., D, D)`` and ``b (..., D)``."""
    out = jax.lax.linalg.triangular_solve(L, b[..., None], left_side=True, lower=True,
                                          transpose_a=True)
    return out[..., 0]


@jax.jit
def column_means(X, w):
    """Weighted mean of each column over its observed entries (0 for a column never observed)."""
    x0, o, w = split(X, w)
    n = jnp.sum(w[:, None] * o, 0)
    return jnp.sum(w[:, None] * x0, 0) / jnp.maximum(n, jnp.finfo(x0.dtype).tiny)


@jax.jit
def _fill(X, w, means):
    x0, o, w0 = split(X, w)
    return x0 + (1.0 - o) * means[None], w0  # (a select would need one sharding for both)


def mean_imputed(X, w):
    """``(X with NaN replaced by the column means, w with unobserved rows set to 0)`` (a starting
    point for `init`). Rows split over devices stay where they are (only the means are reduced)."""
    from . import _shard

    means = _shard.traced(_shard.row_sharding(X), column_means, X, w)
    return _fill(X, w, means)
