"""GaussianMixture: scikit-learn iterates, EM invariants, weights, sampling, criteria."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import blobs, rel_err, sklearn_gmm_from, assert_tree_allclose

COV_TYPES = ["full", "diag", "spherical", "tied"]


@pytest.mark.parametrize("dataset", ["iris", "wine"])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_iterates_match_sklearn(request, dataset, ct):
    """Same start, tol=0: every parameter after 25 iterations and the whole trace agree."""
    X = request.getfixturevalue(dataset)
    model = jaxem.GaussianMixture(3, ct)
    p0 = model.init(jax.random.key(0), X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        sk = sklearn_gmm_from(p0, ct, max_iter=25, tol=0).fit(X)
    res = jaxem.fit(model, p0, X, max_iter=25, tol=0)
    assert int(res.n_iter) == sk.n_iter_ == 25
    assert rel_err(res.params.weights, sk.weights_) < 1e-6
    assert rel_err(res.params.means, sk.means_) < 1e-6
    assert rel_err(res.params.covariances, sk.covariances_) < 1e-6
    np.testing.assert_allclose(res.trace, sk.lower_bounds_, rtol=0, atol=1e-8)
    # log_likelihood is at the returned params: scikit-learn's score there.
    np.testing.assert_allclose(res.log_likelihood, sk.score(X), rtol=0, atol=1e-8)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_n_iter_matches_sklearn_with_tol(iris, ct):
    model = jaxem.GaussianMixture(3, ct)
    p0 = model.init(jax.random.key(3), iris)
    sk = sklearn_gmm_from(p0, ct, max_iter=200, tol=1e-3).fit(iris)
    res = jaxem.fit(model, p0, iris, max_iter=200, tol=1e-3)
    assert bool(res.converged) and sk.converged_
    assert int(res.n_iter) == sk.n_iter_
    assert int(res.status) == 0
    n = int(res.n_iter)
    assert np.all(np.isnan(res.trace[n:])) and np.all(np.isfinite(res.trace[:n]))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_trace_never_decreases(ct):
    X, _ = blobs(seed=1, n=200, d=3, k=4, spread=2.0)
    model = jaxem.GaussianMixture(5, ct)
    # Random responsibilities put every mean near the data's mean: for tied covariances that is
    # close to a saddle, from which most starts barely move in 60 iterations (keys 0-2: < 1e-5
    # per step); key 3's start climbs for every covariance type.
    p0 = model.init(jax.random.key(3), X, method="random")
    res = jaxem.fit(model, p0, X, max_iter=60, tol=0)
    diffs = np.diff(np.asarray(res.trace))
    assert np.all(diffs >= -1e-10), diffs.min()
    assert diffs.max() > 1e-4  # it actually moved


@pytest.mark.parametrize("ct", COV_TYPES)
def test_elbo_equals_loglik_at_exact_posterior(ct):
    X, _ = blobs(seed=2, n=90, d=2, k=3)
    model = jaxem.GaussianMixture(3, ct)
    params = model.init(jax.random.key(2), X, method="random")
    w = jnp.asarray(np.random.default_rng(0).uniform(0.2, 2.0, X.shape[0]))
    resp, ll = model.e_step(params, X, w)
    np.testing.assert_allclose(resp.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(jaxem.elbo(model, params, resp, X, w), ll, rtol=1e-10)
    np.testing.assert_allclose(model.log_likelihood(params, X, w), ll, rtol=1e-10)
    # Any other q gives a strictly smaller bound (KL > 0).
    other = jax.nn.softmax(jnp.log(resp + 1e-3) + 0.5, axis=1)[:, ::-1]
    assert jaxem.elbo(model, params, other, X, w) < ll - 1e-3


def test_integer_weights_equal_duplicated_rows():
    X, _ = blobs(seed=3, n=60, d=2, k=3)
    counts = np.random.default_rng(3).integers(1, 4, size=X.shape[0])
    Xdup = np.repeat(X, counts, axis=0)
    model = jaxem.GaussianMixture(3, "full")
    p0 = model.init(jax.random.key(0), X)
    a = jaxem.fit(model, p0, X, weights=counts.astype(float), max_iter=15, tol=0)
    b = jaxem.fit(model, p0, Xdup, max_iter=15, tol=0)
    assert_tree_allclose(a.params, b.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)


def test_zero_weight_rows_change_nothing():
    X, _ = blobs(seed=4, n=80, d=2, k=3)
    junk = np.random.default_rng(0).normal(size=(20, 2)) * 100
    model = jaxem.GaussianMixture(3, "diag")
    p0 = model.init(jax.random.key(0), X)
    a = jaxem.fit(model, p0, X, max_iter=10, tol=0)
    w = np.r_[np.ones(80), np.zeros(20)]
    b = jaxem.fit(model, p0, np.r_[X, junk], weights=w, max_iter=10, tol=0)
    assert_tree_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-12)


def test_chunked_pass_equals_single_block():
    X, _ = blobs(seed=5, n=301, d=3, k=3)
    big = jaxem.GaussianMixture(3, "full")
    small = jaxem.GaussianMixture(3, "full", chunk_size=64)  # 5 blocks, last one padded
    p0 = big.init(jax.random.key(0), X)
    a = jaxem.fit(big, p0, X, max_iter=8, tol=0)
    b = jaxem.fit(small, p0, X, max_iter=8, tol=0)
    assert_tree_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(small.score_samples(p0, X), big.score_samples(p0, X), rtol=1e-12)


def test_moment_route_equals_residual_route():
    """float64 full covariances: raw moments about Σπμ (two GEMMs) and whitened residuals give the
    same iterates, also chunked (overlapping last block), weighted, and far from the origin."""
    X, _ = blobs(seed=7, n=301, d=4, k=3)
    X = X + 50.0  # moments about the origin would lose ~3 digits here; about Σπμ they do not
    w = np.random.default_rng(0).uniform(0.0, 2.0, X.shape[0])
    w[::7] = 0.0
    residuals = jaxem.GaussianMixture(3, statistics="residuals")
    p0 = residuals.init(jax.random.key(0), X, w)
    b = jaxem.fit(residuals, p0, X, weights=w, max_iter=15, tol=0)
    for chunk in (None, 64, 100):
        moments = jaxem.GaussianMixture(3, statistics="moments", chunk_size=chunk)
        a = jaxem.fit(moments, p0, X, weights=w, max_iter=15, tol=0)
        assert_tree_allclose(a.params, b.params, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)
    # "auto" takes the moment route for float64 full covariances: same iterates.
    c = jaxem.fit(jaxem.GaussianMixture(3), p0, X, weights=w, max_iter=15, tol=0)
    assert_tree_allclose(c.params, b.params, rtol=1e-9, atol=1e-10)


def test_statistics_option_errors():
    with pytest.raises(ValueError, match="unknown statistics"):
        jaxem.GaussianMixture(2, statistics="fast")
    with pytest.raises(ValueError, match="covariance_type='full'"):
        jaxem.GaussianMixture(2, "diag", statistics="moments")


@pytest.mark.parametrize("ct", COV_TYPES)
def test_float32_keeps_dtype_and_agrees_with_float64(ct):
    X, _ = blobs(seed=6, n=150, d=3, k=3)
    model = jaxem.GaussianMixture(3, ct)
    p64 = model.init(jax.random.key(0), X)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p64)
    r64 = jaxem.fit(model, p64, X, max_iter=20, tol=0)
    r32 = jaxem.fit(model, p32, X.astype(np.float32), max_iter=20, tol=0)
    for leaf in jax.tree_util.tree_leaves(r32.params) + [r32.log_likelihood, r32.trace]:
        assert leaf.dtype == jnp.float32
    assert int(r32.status) == 0
    # float32 round-off, amplified a little by 20 iterations on well separated data.
    assert_tree_allclose(r32.params, r64.params, rtol=2e-3, atol=2e-4)


def test_predict_and_criteria_match_sklearn(iris):
    model = jaxem.GaussianMixture(3, "full")
    res = jaxem.fit(model, model.init(jax.random.key(0), iris), iris, tol=1e-6, max_iter=300)
    sk = sklearn_gmm_from(res.params, "full", max_iter=1, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(iris)
    # After one more sklearn iteration the fixed point barely moves: compare at sklearn's params.
    p = jaxem.GaussianMixtureParams(
        jnp.asarray(sk.weights_), jnp.asarray(sk.means_), jnp.asarray(sk.covariances_)
    )
    np.testing.assert_allclose(model.predict_proba(p, iris), sk.predict_proba(iris), atol=1e-9)
    np.testing.assert_array_equal(model.predict(p, iris), sk.predict(iris))
    np.testing.assert_allclose(model.score_samples(p, iris), sk.score_samples(iris), rtol=1e-10)
    np.testing.assert_allclose(model.bic(p, iris), sk.bic(iris), rtol=1e-10)
    np.testing.assert_allclose(model.aic(p, iris), sk.aic(iris), rtol=1e-10)
    assert model.n_parameters(p) == sk._n_parameters()


@pytest.mark.parametrize("ct", COV_TYPES)
def test_n_parameters_match_sklearn(ct):
    from sklearn.mixture import GaussianMixture as SK

    X, _ = blobs(seed=7, n=50, d=4, k=2)
    sk = SK(2, covariance_type=ct, max_iter=2).fit(X)
    p = jaxem.GaussianMixture(2, ct).init(jax.random.key(0), X)
    assert jaxem.GaussianMixture(2, ct).n_parameters(p) == sk._n_parameters()


@pytest.mark.parametrize("ct", COV_TYPES)
def test_sample_moments(ct):
    X, _ = blobs(seed=8, n=200, d=2, k=2, spread=6.0)
    model = jaxem.GaussianMixture(2, ct)
    p = jaxem.fit(model, model.init(jax.random.key(0), X), X).params
    S, z = model.sample(jax.random.key(1), p, 40000, return_labels=True)
    assert S.shape == (40000, 2)
    np.testing.assert_allclose(np.bincount(z, minlength=2) / 40000, p.weights, atol=0.01)
    for k in range(2):
        Sk = np.asarray(S[z == k])
        np.testing.assert_allclose(Sk.mean(0), p.means[k], atol=0.05)
        cov = {"full": p.covariances[k], "tied": p.covariances,
               "diag": np.diag(p.covariances[k]) if ct == "diag" else None,
               "spherical": np.eye(2) * p.covariances[k] if ct == "spherical" else None}[ct]
        np.testing.assert_allclose(np.cov(Sk.T), cov, atol=0.1 * np.abs(cov).max())


def test_init_reproducible_and_kmeans_recovers_blobs():
    X, labels = blobs(seed=9, n=300, d=2, k=4, spread=8.0)
    model = jaxem.GaussianMixture(4)
    a = model.init(jax.random.key(5), X)
    b = model.init(jax.random.key(5), X)
    assert_tree_allclose(a, b, rtol=0, atol=0)
    pred = np.asarray(model.predict(a, X))
    # Every true cluster maps to exactly one predicted component (a permutation).
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, pred) > 0.99
    for method in ("k-means++", "random", "random_from_data"):
        p = model.init(jax.random.key(1), X, method=method)
        assert all(np.all(np.isfinite(l)) for l in jax.tree_util.tree_leaves(p))
        np.testing.assert_allclose(p.weights.sum(), 1.0)


def test_unrolled_equals_while_loop():
    X, _ = blobs(seed=10, n=100, d=2, k=3)
    model = jaxem.GaussianMixture(3, "full")
    p0 = model.init(jax.random.key(0), X, method="random")
    a = jaxem.fit(model, p0, X, max_iter=150, tol=1e-3)
    b = jaxem.fit(model, p0, X, max_iter=150, tol=1e-3, adjoint="unrolled")
    assert int(a.n_iter) == int(b.n_iter) < 150
    assert_tree_allclose(a.params, b.params, rtol=1e-12)
    np.testing.assert_array_equal(np.isnan(a.trace), np.isnan(b.trace))


def test_float32_singleton_starts_stay_finite():
    """Regression: one-pass moments about a global centre cancelled in float32 when every component
    starts from a single row (covariance = reg_covar), giving NaN at the first E-step. Statistics of
    residuals about each component's own mean are exact to rounding."""
    rng = np.random.default_rng(0)
    N, D, K = 4000, 16, 16
    X = (rng.normal(size=(K, D)) * 3.0)[rng.integers(0, K, N)] + rng.normal(size=(N, D))
    model = jaxem.GaussianMixture(K, "full")
    p0 = model.init(jax.random.key(0), X.astype(np.float32), method="random_from_data")
    res = jaxem.fit(model, p0, X.astype(np.float32), max_iter=10, tol=0)
    assert int(res.status) == 0, jaxem.describe_status(res.status)
    ref = jaxem.fit(model, jax.tree_util.tree_map(lambda a: a.astype(np.float64), p0), X,
                    max_iter=10, tol=0)
    np.testing.assert_allclose(res.trace[1:], ref.trace[1:], rtol=1e-4)


def test_float64_accumulation_of_float32_blocks():
    X, _ = blobs(seed=12, n=4000, d=3, k=3)
    X32 = X.astype(np.float32)
    plain = jaxem.GaussianMixture(3, "full", chunk_size=64)
    acc = jaxem.GaussianMixture(3, "full", chunk_size=64, accumulate_dtype=jnp.float64)
    p0 = plain.init(jax.random.key(0), X32)
    ref = jaxem.fit(plain, jax.tree_util.tree_map(lambda a: a.astype(np.float64), p0), X,
                    max_iter=5, tol=0)
    r = jaxem.fit(acc, p0, X32, max_iter=5, tol=0)
    for leaf in jax.tree_util.tree_leaves(r.params) + [r.trace]:
        assert leaf.dtype == jnp.float32
    # float32 arithmetic inside each block, float64 sums across 63 blocks: float32-rounding close.
    assert_tree_allclose(r.params, ref.params, rtol=2e-5, atol=2e-6)
    with pytest.raises(ValueError, match="accumulate_dtype"):
        with jax.enable_x64(False):
            acc.em_update(p0, X32[:100], np.ones(100, np.float32))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_init_m_step_from_labels_equals_one_hot_m_step(ct):
    """``init`` streams its M-step from hard labels (-1: no component) without an (N, K) matrix:
    the same parameters as the public m_step of the one-hot responsibilities."""
    X, labels = blobs(seed=8, n=203, d=3, k=3)
    labels = labels.astype(np.int32)
    labels[::5] = -1
    w = np.random.default_rng(1).uniform(0.5, 1.5, X.shape[0])
    model = jaxem.GaussianMixture(3, ct, chunk_size=64)
    got = model._m_step_labels(jnp.asarray(labels), jnp.asarray(X), jnp.asarray(w))
    want = jaxem.GaussianMixture(3, ct).m_step(jax.nn.one_hot(labels, 3, dtype=X.dtype), X, w)
    assert_tree_allclose(got, want, rtol=1e-12, atol=1e-12)
    # Every hard start of init passes its labels' means: one pass about them gives the same.
    from jaxem._init import _hard_start

    for method in ("kmeans", "k-means++", "random_from_data"):
        lab, centers = _hard_start(jax.random.key(2), jnp.asarray(X), jnp.asarray(w), 3, method)
        one = model._m_step_labels(lab, jnp.asarray(X), jnp.asarray(w), centers)
        two = model._m_step_labels(lab, jnp.asarray(X), jnp.asarray(w))
        assert_tree_allclose(one, two, rtol=1e-9, atol=1e-9)
