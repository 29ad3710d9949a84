"""Cholesky factors of small batched matrices, by LAPACK (`jax.lax.linalg`).

A mixture's covariances are a batch of K small D x D matrices. Their factors come from LAPACK's
``potrf`` and ``trsm`` (`jax.lax.linalg.cholesky`, `jax.lax.linalg.triangular_solve`), whose
backward error is O(eps)·|A| whatever the scale of A (Higham 2002, "Accuracy and Stability of
Numerical Algorithms", §10.1). A hand-written elimination on [A | I] that this module used to hold
was ~0.2 s cheaper to compile cold, but lost accuracy with the scale of A (float32 data ×1e6 fitted
to a visibly lower likelihood, ×1e7 and float64 ×1e16 failed): correctness first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["cholesky_factors"]


def cholesky_factors(A):
    """L and P = L⁻ᵀ of a batch ``A (..., D, D)`` of symmetric positive-definite matrices:
    A = L Lᵀ with L lower triangular, A⁻¹ = P Pᵀ (P is scikit-learn's ``precisions_cholesky_``).
    Only A's lower triangle is read (LAPACK's convention).

    A matrix that is not positive definite (or holds NaN/inf) gets NaN factors (P all NaN, L
    NaN in its lower triangle), as `jax.lax.linalg.cholesky` gives, so that a fit reports ``Status.NONFINITE``.
    """
    D = A.shape[-1]
    L = jax.lax.linalg.cholesky(A, symmetrize_input=False)
    eye = jnp.broadcast_to(np.eye(D, dtype=A.dtype), A.shape)
    L_inv = jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
    return L, jnp.swapaxes(L_inv, -1, -2)
