"""Small batched Cholesky factors without LAPACK: equal LAPACK's, NaN where A is not positive
definite, differentiable, vmappable, and a Gaussian-mixture fit loads no SciPy."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxem._linalg import _UNROLL_UP_TO, cholesky_factors


def _spd(rng, batch, D, dtype):
    B = rng.normal(size=batch + (D, D + 2))
    return (B @ np.swapaxes(B, -1, -2) / D + 1e-2 * np.eye(D)).astype(dtype)


@pytest.mark.parametrize("D", [1, _UNROLL_UP_TO, _UNROLL_UP_TO + 1, 16])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_equals_lapack(D, dtype, tol):
    rng = np.random.default_rng(D)
    A = _spd(rng, (5,), D, dtype)
    A_upper_garbage = A + np.triu(np.full((D, D), 7.0, dtype), 1)  # only the lower triangle is read
    L, P = jax.jit(cholesky_factors)(A_upper_garbage)
    assert L.dtype == A.dtype and P.dtype == A.dtype
    L_ref = np.linalg.cholesky(A.astype(np.float64))
    np.testing.assert_allclose(L, L_ref, atol=tol * np.abs(L_ref).max())
    np.testing.assert_array_equal(np.triu(L, 1), 0.0)  # exactly triangular
    np.testing.assert_array_equal(np.tril(P, -1), 0.0)
    eye = np.broadcast_to(np.eye(D), A.shape)
    np.testing.assert_allclose(np.swapaxes(P, -1, -2).astype(np.float64) @ L_ref, eye, atol=tol * 10)


def test_not_positive_definite_is_nan_per_matrix():
    A = np.array([[[1.0, 2.0], [2.0, 1.0]],      # indefinite
                  [[1.0, 1.0], [1.0, 1.0]],      # singular: zero pivot
                  [[4.0, 2.0], [2.0, 5.0]]] * 3)  # fine (3 x 3 = 9 matrices: D=2 unrolled)
    A9 = np.stack([np.pad(a, ((0, 7), (0, 7))) + np.diag([0.0] * 2 + [1.0] * 7) for a in A])
    for M in (A, A9):  # D=2 (unrolled) and D=9 (loop)
        L, P = cholesky_factors(M)
        bad = np.isnan(np.asarray(L)).all((-1, -2))
        np.testing.assert_array_equal(bad, [True, True, False] * 3)
        assert np.isnan(np.asarray(P)[bad]).all() and np.isfinite(np.asarray(P)[~bad]).all()
        assert np.isfinite(np.asarray(L)[~bad]).all()


def test_gradient_equals_lapack_route_and_vmaps():
    rng = np.random.default_rng(0)
    A = jnp.asarray(_spd(rng, (3, 4), 6, np.float64))

    def loss(A, chol):
        L, P = chol(A)
        return jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1))) + jnp.sum(P**2 * jnp.arange(6.0))

    def lapack(A):
        L = jax.lax.linalg.cholesky(A, symmetrize_input=False)
        eye = jnp.broadcast_to(jnp.eye(A.shape[-1]), A.shape)
        L_inv = jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
        return L, jnp.swapaxes(L_inv, -1, -2)

    g = jax.grad(loss)(A, cholesky_factors)
    g_ref = jax.grad(loss)(A, lapack)
    # The two spread a symmetric direction E_ij + E_ji differently over (i, j) and (j, i) (this one
    # reads the lower triangle only): compare the derivatives along symmetric directions.
    sym = lambda G: G + np.swapaxes(G, -1, -2) - G * np.eye(G.shape[-1])
    np.testing.assert_allclose(sym(g), sym(g_ref), rtol=1e-9, atol=1e-12)
    assert np.abs(g_ref).max() > 1e-3  # not trivially zero
    L_v, _ = jax.vmap(cholesky_factors)(A)
    np.testing.assert_allclose(L_v, np.linalg.cholesky(np.asarray(A)), atol=1e-12)


def test_gaussian_mixture_fit_loads_no_scipy():
    """A cold CPU fit makes no LAPACK call: the first one imports SciPy (~0.2 s of a cold fit)."""
    code = (
        "import sys, numpy as np, jax, jaxem\n"
        "X = np.random.default_rng(0).normal(size=(200, 5))\n"
        "for ct in ('full', 'tied'):\n"
        "    m = jaxem.GaussianMixture(3, ct)\n"
        "    jax.block_until_ready(jaxem.fit(m, m.init(jax.random.key(0), X), X))\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
