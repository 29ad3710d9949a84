"""Missing values (NaN entries of X) integrated out exactly: the pieces shared by the families.

Ghahramani & Jordan (1994), "Supervised learning from incomplete data via an EM approach" (NIPS 6).
Each row x_n splits into observed entries o_n and missing entries m_n (NaN). Under a Gaussian
(component) N(μ, Σ) the observed block is N(μ_o, Σ_oo) and the missing block given it is
  x_m | x_o ~ N(μ_m + Σ_mo Σ_oo⁻¹ (x_o - μ_o),  Σ_mm - Σ_mo Σ_oo⁻¹ Σ_om),
so the E-step scores each row by its observed-block marginal and fills the expected complete-data
sufficient statistics with E[x_m | x_o] and E[x_m x_mᵀ | x_o] = E[x_m] E[x_m]ᵀ + Cov[x_m | x_o].
The M-step is the complete-data one, unchanged.

Per row, with the 0/1 mask o (1 = observed), the computation is mask-based (one program for every
missingness pattern: jittable, vmappable): the masked matrix
  Σ̃ = diag(o) Σ diag(o) + diag(1 - o)
is, up to a permutation, blockdiag(Σ_oo, I), and its Cholesky factor L̃ has the same structure
(a row/column of the identity stays one through the elimination). So
  log|Σ_oo| = 2 Σ_i log L̃_ii,   r = o ∘ (x - μ),   ||L̃⁻¹ r||² = r_oᵀ Σ_oo⁻¹ r_o,
  α = Σ̃⁻¹ r = [Σ_oo⁻¹ r_o; 0],   Σ α = [r_o; Σ_mo Σ_oo⁻¹ r_o]   (= E[x | x_o] - μ),
  V = L̃⁻¹ diag(o) Σ,   Vᵀ V = Σ_:o Σ_oo⁻¹ Σ_o:,   Cov[x | x_o] = (1-o)(1-o)ᵀ ∘ (Σ - VᵀV).
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


def complete_rows(model, X, what: str) -> None:
    """For a model with ``missing="marginalize"``: ValueError if concrete ``X`` has a NaN entry,
    for ``what`` (a posterior-based E/M function that needs complete data)."""
    from ._validate import is_concrete

    if not allows_missing(model) or not is_concrete(X) \
            or not getattr(X, "is_fully_addressable", True):
        return
    if np.isnan(np.asarray(X)).any():
        raise ValueError(
            f"{what} needs complete rows, and X has NaN entries. With missing values, EM runs on "
            "the expected statistics: jaxem.fit, or model.maximize(model.sufficient_statistics("
            "params, X), params); model.impute(params, X) fills the NaN entries.")


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


def masked_cholesky(S, o):
    """Cholesky factor of Σ̃ = diag(o) Σ diag(o) + diag(1 - o) for ``S (..., D, D)`` and the mask
    ``o (..., D)`` (broadcast against each other)."""
    eye = jnp.eye(S.shape[-1], dtype=S.dtype)
    St = S * o[..., :, None] * o[..., None, :] + eye * (1.0 - o)[..., None, :]
    return jnp.linalg.cholesky(St)


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


def conditional_mean(S, L, r, o):
    """For a Gaussian of covariance ``S (..., D, D)`` seen through the mask ``o (..., D)``, with
    ``L (..., D, D)`` = `masked_cholesky` and ``r = o ∘ (x - μ)`` (all of one batch shape):
    ``(quad, log|Σ_oo|, d)`` with quad = r_oᵀ Σ_oo⁻¹ r_o and d = E[x | x_o] - μ (= r on the
    observed entries)."""
    y = solve_lower(L, r)
    quad = jnp.sum(y * y, -1)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    alpha = solve_upper(L, y)
    d = where(o > 0, r, jnp.einsum("...de,...e->...d", S, alpha))
    return quad, log_det, d


def conditional_cov(S, L, o):
    """Cov[x | x_o] ``(..., D, D)``: (1-o)(1-o)ᵀ ∘ (Σ - Σ_:o Σ_oo⁻¹ Σ_o:) (zero outside the missing
    block), with ``L`` = `masked_cholesky` of the same batch shape."""
    V = solve_lower(L, jnp.broadcast_to(S * o[..., :, None], L.shape))
    m = 1.0 - o
    return (S - jnp.einsum("...ed,...ef->...df", V, V)) * m[..., :, None] * m[..., None, :]


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
