"""Batched Cholesky factors (LAPACK): L Lᵀ = A and P = L⁻ᵀ to rounding at every scale, NaN where A
is not positive definite, differentiable and vmappable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxem._linalg import cholesky_factors


def _spd(rng, batch, D, dtype, cond=1e2):
    """Random SPD matrices with condition number ~cond."""
    Q, _ = np.linalg.qr(rng.normal(size=batch + (D, D)))
    lam = np.geomspace(1.0, 1.0 / cond, D)
    return ((Q * lam[..., None, :]) @ np.swapaxes(Q, -1, -2)).astype(dtype)


@pytest.mark.parametrize("D", [1, 3, 16])
@pytest.mark.parametrize("dtype, scales", [
    (np.float64, [1e-150, 1e-16, 1.0, 1e16, 1e150]),
    (np.float32, [1e-15, 1e-6, 1.0, 1e6, 1e15]),
])
def test_backward_error_is_scale_free(D, dtype, scales):
    """LAPACK's backward error ||L Lᵀ - A|| / ||A|| = O(eps) whatever the scale of A (the former
    elimination on [A | I] lost accuracy with the scale: float32 ×1e7 data failed to fit)."""
    rng = np.random.default_rng(D)
    A0 = _spd(rng, (4,), D, np.float64)
    eps = np.finfo(dtype).eps
    f = jax.jit(cholesky_factors)
    for s in scales:
        A = (A0 * s).astype(dtype)
        A_upper_garbage = A + np.triu(np.full((D, D), 7.0 * s, dtype), 1)  # lower triangle only
        L, P = f(A_upper_garbage)
        assert L.dtype == A.dtype and P.dtype == A.dtype
        L64, P64 = np.asarray(L, np.float64), np.asarray(P, np.float64)
        np.testing.assert_array_equal(np.triu(L64, 1), 0.0)  # exactly triangular
        np.testing.assert_array_equal(np.tril(P64, -1), 0.0)
        An = A.astype(np.float64)
        back = np.abs(L64 @ np.swapaxes(L64, -1, -2) - An).max() / np.abs(An).max()
        assert back < 50 * D * eps, (s, back)
        # P = L⁻ᵀ: Pᵀ L = I to rounding (relative to cond(L) ~ 10)
        eye = np.broadcast_to(np.eye(D), A.shape)
        np.testing.assert_allclose(np.swapaxes(P64, -1, -2) @ L64, eye, atol=500 * D * eps)


def test_not_positive_definite_is_nan_per_matrix():
    A = np.array([[[1.0, 2.0], [2.0, 1.0]],      # indefinite
                  [[1.0, 1.0], [1.0, 1.0]],      # singular: zero pivot
                  [[4.0, 2.0], [2.0, 5.0]],      # fine
                  [[np.nan, 0.0], [0.0, 1.0]]])  # non-finite
    for M in (A, np.stack([np.pad(a, ((0, 7), (0, 7))) + np.diag([0.0] * 2 + [1.0] * 7) for a in A])):
        L, P = cholesky_factors(M)
        L, P = np.asarray(L), np.asarray(P)
        bad = np.isnan(P).all((-1, -2))
        np.testing.assert_array_equal(bad, [True, True, False, True])
        assert np.isnan(np.tril(L[bad])).any() and np.isfinite(L[~bad]).all()
        assert np.isfinite(P[~bad]).all()


def test_gradient_matches_numpy_finite_differences_and_vmaps():
    rng = np.random.default_rng(0)
    A = _spd(rng, (3,), 4, np.float64)

    def loss(A):
        L, P = cholesky_factors(A)
        return jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1))) + jnp.sum(P**2 * jnp.arange(4.0))

    def loss_np(A):
        L = np.linalg.cholesky(A)
        P = np.swapaxes(np.linalg.inv(L), -1, -2)
        return np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1))) + np.sum(P**2 * np.arange(4.0))

    E = rng.normal(size=A.shape)
    E = E + np.swapaxes(E, -1, -2)  # a symmetric direction
    h = 1e-6
    fd = (loss_np(A + h * E) - loss_np(A - h * E)) / (2 * h)
    g = jax.grad(loss)(jnp.asarray(A))
    # along a symmetric direction E the derivative is Σ_ij g_ij E_ij
    np.testing.assert_allclose(np.sum(np.asarray(g) * E), fd, rtol=1e-6)
    L_v, _ = jax.vmap(cholesky_factors)(A)
    np.testing.assert_allclose(L_v, np.linalg.cholesky(A), atol=1e-12)
