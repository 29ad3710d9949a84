"""The statistics protocol: `sufficient_statistics` is additive over rows and `maximize` of it is one
EM iteration, equal to the posterior-based `m_step` and to what `jaxem.fit` runs; float32 statistics
about the reference point stay accurate far from the origin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import assert_tree_allclose, blobs

N, D = 60, 3


def _gauss(seed):
    return blobs(seed=seed, n=N, d=D, k=3, spread=3.0)[0]


def _binary(seed):
    rng = np.random.default_rng(seed)
    return (rng.random((N, D)) < rng.random(D)).astype(np.float64)


def _counts(seed):
    return np.random.default_rng(seed).poisson(3.0, (N, D)).astype(np.float64)


FAMILIES = {
    "gmm_full": (jaxem.GaussianMixture(3, "full"), _gauss),
    "gmm_full_residuals": (jaxem.GaussianMixture(3, "full", statistics="residuals"), _gauss),
    "gmm_diag": (jaxem.GaussianMixture(3, "diag"), _gauss),
    "gmm_spherical": (jaxem.GaussianMixture(3, "spherical"), _gauss),
    "gmm_tied": (jaxem.GaussianMixture(3, "tied"), _gauss),
    "ppca": (jaxem.PPCA(2), _gauss),
    "factor_analysis": (jaxem.FactorAnalysis(2), _gauss),
    "bernoulli": (jaxem.BernoulliMixture(3), _binary),
    "poisson": (jaxem.PoissonMixture(3), _counts),
}


def _problem(name, seed=0):
    model, make = FAMILIES[name]
    X = make(seed)
    w = np.random.default_rng(seed + 1).uniform(0.5, 2.0, N)
    params = model.init(jax.random.key(seed), X, w)
    return model, X, w, params


_JITS = {}


def _ss(model, p, X, w, reference=None):
    """``model.sufficient_statistics`` jitted once per model (eager op-by-op dispatch compiles
    every primitive separately)."""
    if model not in _JITS:
        _JITS[model] = jax.jit(lambda p, X, w, r: model.sufficient_statistics(p, X, w, reference=r))
    return _JITS[model](p, X, w, reference)


def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_statistics_are_additive_and_maximize_is_one_em_iteration(name):
    model, X, w, p = _problem(name)
    whole = _ss(model, p, X, w)
    # Two parts, and a zero-weight padding block, add up to the whole.
    h = N // 2
    total = _add(_add(_ss(model, p, X[:h], w[:h]), _ss(model, p, X[h:], w[h:])),
                 _ss(model, p, X[:h], np.zeros(h)))
    assert_tree_allclose(total, whole, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(whole.total_weight), w.sum(), rtol=1e-12)
    np.testing.assert_allclose(float(whole.log_likelihood), float(model.log_likelihood(p, X, w)),
                               rtol=1e-10)
    # maximize ∘ statistics is what fit's loop runs, and equals the posterior-based M-step.
    new = model.maximize(whole, p)
    fused, ll, status = model.em_update(p, jnp.asarray(X), jnp.asarray(w))
    assert int(status) == 0
    assert_tree_allclose(new, fused, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(ll), float(whole.log_likelihood), rtol=1e-12)
    posterior, _ = model.e_step(p, X, w)
    assert_tree_allclose(new, model.m_step(posterior, X, w, params=p), rtol=1e-7, atol=1e-9)
    one = jaxem.fit(model, p, X, weights=w, max_iter=1, tol=0)
    assert_tree_allclose(one.params, new, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["gmm_full", "gmm_diag", "gmm_tied", "gmm_spherical", "ppca"])
def test_a_shared_reference_gives_the_same_iteration(name):
    """Statistics about another reference point (as online EM averages them) maximise, with that
    reference, to the same parameters; parts taken at different params add up when they share it."""
    model, X, w, p = _problem(name)
    ref = jax.tree_util.tree_map(lambda a: a + 0.37, model.statistics_reference(p))
    st = _ss(model, p, X, w, ref)
    assert_tree_allclose(model.maximize(st, p, reference=ref), model.maximize(
        _ss(model, p, X, w), p), rtol=1e-9, atol=1e-11)
    # Against the definition, from the E-step's responsibilities (NumPy).
    if name.startswith("gmm"):
        r = np.asarray(model.e_step(p, X, w)[0]) * w[:, None]  # (N, K) w_n r_nk
        res = X[:, None, :] - np.asarray(ref)[None]  # (N, K, D) x_n - ref_k
        np.testing.assert_allclose(np.asarray(st.counts), r.sum(0), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(st.sum_x), np.einsum("nk,nkd->kd", r, res),
                                   rtol=1e-9, atol=1e-9)
        sxx = np.einsum("nk,nkd,nke->kde", r, res, res)
        want = {"full": sxx, "tied": sxx.sum(0)}.get(model.covariance_type,
                                                     np.einsum("kdd->kd", sxx))
        np.testing.assert_allclose(np.asarray(st.sum_xx), want, rtol=1e-9, atol=1e-9)
    else:
        m = np.asarray(model.e_step(p, X, w)[0].mean)
        y = X - np.asarray(ref)
        np.testing.assert_allclose(np.asarray(st.sum_y), w @ y, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(st.sum_yz), (y * w[:, None]).T @ m, rtol=1e-9,
                                   atol=1e-9)
        np.testing.assert_allclose(np.asarray(st.sum_yy), w @ (y * y), rtol=1e-10)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_maximize_is_invariant_to_the_scale_of_the_statistics(name):
    """Rescaling every statistic by c (weights w -> c·w, or the per-sample averages of online EM)
    leaves the M-step unchanged, down to tiny and huge c."""
    model, X, w, p = _problem(name)
    st = _ss(model, p, X, w)
    base = model.maximize(st, p)
    for c in (1e-10, 1e10):
        scaled = jax.tree_util.tree_map(lambda a: a * c, st)
        assert_tree_allclose(model.maximize(scaled, p), base, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ct", ["full", "diag", "tied"])
def test_float32_statistics_far_from_the_origin(ct):
    """float32 data offset by 1e4 (spread 1): the maximiser of the float32 statistics equals the
    float64 one to float32 rounding of the covariances (raw moments about the origin would lose
    every digit: eps32 · 1e8 ≫ 1)."""
    X64, _ = blobs(seed=3, n=400, d=2, k=3, spread=4.0)
    X64 = X64 + 1e4
    model = jaxem.GaussianMixture(3, ct)
    p64 = model.init(jax.random.key(0), X64)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), p64)
    new64 = model.maximize(model.sufficient_statistics(p64, X64), p64)
    new32 = model.maximize(model.sufficient_statistics(p32, X64.astype(np.float32)), p32)
    # The data themselves are rounded to float32 (|x| ~ 1e4: ulp 1e-3), so compare the covariances
    # to 1e-3 relative, and the means to a few ulps of 1e4.
    np.testing.assert_allclose(np.asarray(new32.covariances), np.asarray(new64.covariances),
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(np.asarray(new32.means), np.asarray(new64.means), atol=5e-3)
    np.testing.assert_allclose(np.asarray(new32.weights), np.asarray(new64.weights), atol=1e-5)


def test_moment_and_residual_routes_give_the_same_statistics():
    X, w = _gauss(5), np.ones(N)
    moments = jaxem.GaussianMixture(3, "full", statistics="moments")
    residuals = jaxem.GaussianMixture(3, "full", statistics="residuals")
    p = moments.init(jax.random.key(2), X)
    assert_tree_allclose(moments.sufficient_statistics(p, X, w),
                         residuals.sufficient_statistics(p, X, w), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["gmm_diag", "ppca", "poisson"])
def test_score_is_the_weighted_mean_log_likelihood_that_fit_reports(name):
    model, X, w, p = _problem(name)
    r = jaxem.fit(model, p, X, weights=w, max_iter=3, tol=0)
    np.testing.assert_allclose(float(model.score(r.params, X, w)), float(r.log_likelihood),
                               rtol=1e-12)
    np.testing.assert_allclose(float(model.score(r.params, X)) * N,
                               float(model.log_likelihood(r.params, X)), rtol=1e-12)
