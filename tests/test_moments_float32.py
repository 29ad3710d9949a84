"""The guarded float32 moment route of full-covariance Gaussian mixtures (module docstring of
`jaxem.models.gaussian_mixture`): raw moments about c = Σ π_k μ_k when the cancellation bound
β = max_k eps·(|μ_k - c|² + tr Σ_k)·tr Σ_k⁻¹ is at most `MOMENT_TOLERANCE`, whitened residuals
otherwise. Compared with float64 EM on the same (rounded) data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem.models import _gaussian_moments
from jaxem.models.gaussian_mixture import MOMENT_TOLERANCE

N, D, K = 301, 4, 3


def _problem(noise, seed=3, offset=50.0):
    """Blobs (centres spread 4) with component noise ``noise``, far from the origin; float32 data
    and parameters (the true ones, perturbed) and their float64 copies."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, D)) * 4.0 + offset
    z = np.arange(N) % K
    A = np.tril(rng.normal(size=(K, D, D)) * 0.3) + np.eye(D)
    X = (centers[z] + noise * np.einsum("kde,ke->kd", A[z], rng.normal(size=(N, D)))
         ).astype(np.float32)
    cov = noise**2 * np.einsum("kde,kfe->kdf", A, A) * 1.2
    p32 = jaxem.GaussianMixtureParams(np.full(K, 1 / K, np.float32),
                                      (centers + 0.1 * noise).astype(np.float32),
                                      cov.astype(np.float32))
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p32)
    return X, p32, X.astype(np.float64), p64


def _whitened_error(new, ref):
    """Largest error of the means and covariances in the units of the reference covariances:
    |L⁻¹ (μ - μ_ref)| and |L⁻¹ (Σ - Σ_ref) L⁻ᵀ|, Σ_ref = L Lᵀ."""
    L = np.linalg.cholesky(np.asarray(ref.covariances, np.float64))
    dS = np.asarray(new.covariances, np.float64) - np.asarray(ref.covariances, np.float64)
    dm = np.asarray(new.means, np.float64) - np.asarray(ref.means, np.float64)
    W = np.linalg.solve(L, np.swapaxes(np.linalg.solve(L, dS), 1, 2))
    return max(np.abs(W).max(), np.abs(np.linalg.solve(L, dm[..., None])).max())


JIT = dict(compiler_options=dict(jaxem.COMPILER_OPTIONS))


@pytest.fixture(scope="module")
def model():
    return jaxem.GaussianMixture(K, "full")


@pytest.fixture(scope="module")
def routes(model):
    """``run(p, X)``: the M-step from the guarded float32 statistics, from the raw float32
    moments, and the bound β, in one program compiled once for the shared shape;
    ``ref(p64, X64)``: float64 EM's M-step and log-likelihood."""
    def run(p, X):
        w = jnp.ones(N, jnp.float32)
        st = model._statistics(p, X, w)
        raw = _gaussian_moments.statistics(model, p, X, w, jnp.float32, jnp.sum(w))
        return (model.maximize(st, p), st.log_likelihood, model.maximize(raw, p),
                _gaussian_moments.error_bound(model, p))

    def ref(p, X):
        st = model.sufficient_statistics(p, X)
        return model.maximize(st, p), st.log_likelihood

    return jax.jit(run, **JIT), jax.jit(ref, **JIT)


def _close(a, b, rtol):
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=rtol, atol=rtol * np.abs(np.asarray(y)).max())


def test_float32_takes_the_moment_route_when_the_bound_allows_it(routes):
    run, ref = routes
    X, p32, X64, p64 = _problem(noise=1.0)
    new, ll, raw, beta = run(p32, X)
    assert float(beta) <= MOMENT_TOLERANCE
    _close(new, raw, 1e-6)  # the moment route ran
    new64, ll64 = ref(p64, X64)
    # measured: the error in the components' units is at most about 2β (here 7e-5; residuals: 4e-6)
    assert _whitened_error(new, new64) < 4 * float(beta)
    np.testing.assert_allclose(float(ll), float(ll64), rtol=1e-5)


def test_guard_falls_back_to_residuals_where_moments_cancel(routes):
    """Components 1e-3 wide, 4 apart: raw float32 moments lose ~(4/1e-3)² ~ 1e7 ulps; the guard
    sees it in the parameters and the residual route runs instead, accurate to float32."""
    run, ref = routes
    X, p32, X64, p64 = _problem(noise=1e-3)
    new, ll, raw, beta = run(p32, X)
    assert float(beta) > MOMENT_TOLERANCE
    new64, ll64 = ref(p64, X64)
    assert _whitened_error(new, new64) < 1e-2
    np.testing.assert_allclose(float(ll), float(ll64), rtol=1e-4)  # data 5e4 widths from 0
    # what the guard prevented: raw moments would be off by far more than the components' width
    assert _whitened_error(raw, new64) > 1.0


def test_float32_fit_follows_float64_with_statistics_moments():
    """statistics="moments" now accepts float32 (guarded, one lax.cond per iteration: under
    jax.vmap a select that runs both routes); a jitted fit far from the origin follows float64 EM
    on the same data."""
    X, p32, X64, p64 = _problem(noise=1.0, seed=4)
    model = jaxem.GaussianMixture(K, "full", statistics="moments")
    fit = jax.jit(lambda p, X: jaxem.fit(model, p, X, max_iter=10, tol=0), **JIT)
    r32, r64 = fit(p32, X), fit(p64, X64)
    assert r32.params.means.dtype == jnp.float32 and int(r32.status) == 0
    assert _whitened_error(r32.params, r64.params) < 1e-3
    np.testing.assert_allclose(np.asarray(r32.trace), np.asarray(r64.trace), rtol=1e-5)
