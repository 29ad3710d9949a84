"""Numerical guarantees as properties (hypothesis, derandomized): EM's answer does not depend on the
units of the data, on the scale of the weights, on the order of the rows or of the components, and
bad values are always detected.

- Location-scale families (GaussianMixture x 4 covariance types with reg_covar=0, PPCA, factor
  analysis): fitting s·x + c from the transformed start gives the transformed fit (means s·μ + c,
  covariances s²Σ, loadings s·W, noise s²ψ), the same labels, and a mean log-likelihood shifted by
  -D·log|s|, for |s| over 1e-100 .. 1e100 (float64) and 1e-12 .. 1e12 (float32) and offsets c up to
  1e4 times the data's spread. float32 is compared with float64 EM on the same (rounded) data.
- `init` is equivariant too: init(key, s·x + c) is the transformed init(key, x).
- Every family: invariance under w -> c·w (c over 1e-10 .. 1e10), under row permutations, and
  permuting the starting components permutes the result.
- NaN/inf in X or weights is reported (INVALID_INPUT) under jit at every N.
- Every error is a ValueError naming the argument.

One data shape per family and one jitted fit per (family, dtype), shared by all examples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import jaxem
from jaxem._validate import status_of_data

N, D, K, Q = 60, 3, 2, 2
ITERS = 12  # tol=0: exactly ITERS iterations, so every transformed fit follows the same path
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, -4.0, 3.0]])
    A = np.array([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.6]])
    z = np.arange(N) % K
    return centers[z] + rng.normal(size=(N, D)) @ A.T


def _low_rank(seed=0):
    rng = np.random.default_rng(seed)
    W = np.array([[3.0, 0.0], [0.0, 2.5], [2.0, 1.0]])
    return rng.normal(size=(N, Q)) @ W.T + 1.0 + rng.normal(size=(N, D)) * [0.4, 0.6, 0.5]


def _binary(seed=0):
    rng = np.random.default_rng(seed)
    protos = np.array([[0.9, 0.8, 0.1], [0.1, 0.3, 0.9]])
    return (rng.random((N, D)) < protos[np.arange(N) % K]).astype(np.float64)


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([[1.0, 6.0, 0.5], [7.0, 1.0, 4.0]])
    return rng.poisson(rates[np.arange(N) % K]).astype(np.float64)


FAMILIES = {
    "gmm_full": (jaxem.GaussianMixture(K, "full", reg_covar=0.0), _blobs),
    "gmm_diag": (jaxem.GaussianMixture(K, "diag", reg_covar=0.0), _blobs),
    "gmm_spherical": (jaxem.GaussianMixture(K, "spherical", reg_covar=0.0), _blobs),
    "gmm_tied": (jaxem.GaussianMixture(K, "tied", reg_covar=0.0), _blobs),
    "ppca": (jaxem.PPCA(Q), _low_rank),
    "factor_analysis": (jaxem.FactorAnalysis(Q), _low_rank),
    "bernoulli": (jaxem.BernoulliMixture(K), _binary),
    "poisson": (jaxem.PoissonMixture(K), _counts),
}
LOCATION_SCALE = ["gmm_full", "gmm_diag", "gmm_spherical", "gmm_tied", "ppca", "factor_analysis"]
MIXTURES = [n for n in FAMILIES if n not in ("ppca", "factor_analysis")]

_FIT, _INIT, _BASE = {}, {}, {}


def _fit(name, p, X, w=None):
    """The family's fit, jitted once per (family, dtype): tol=0, ITERS iterations."""
    model = FAMILIES[name][0]
    if name not in _FIT:
        _FIT[name] = jax.jit(lambda p, x, w: jaxem.fit(model, p, x, weights=w, tol=0.0,
                                                       max_iter=ITERS))
    w = np.ones(X.shape[0], X.dtype) if w is None else w
    return _FIT[name](p, X, w)


def _init(name, key, X, w=None):
    model = FAMILIES[name][0]
    if name not in _INIT:
        _INIT[name] = jax.jit(lambda k, x, w: model.init(k, x, w))
    w = np.ones(X.shape[0], X.dtype) if w is None else w
    return _INIT[name](key, X, w)


def _base(name):
    """(X, start params, fit) at s = 1, c = 0 in float64."""
    if name not in _BASE:
        X = FAMILIES[name][1]()
        p0 = _init(name, jax.random.key(0), X)
        _BASE[name] = X, p0, _fit(name, p0, X)
    return _BASE[name]


def _np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), tree)


def _transform(name, p, s, c):
    """Parameters of the same model in the units x' = s·x + c."""
    p = _np(p)
    if name.startswith("gmm"):
        return p._replace(means=s * p.means + c, covariances=s * s * p.covariances)
    return p._replace(mean=s * p.mean + c, W=s * p.W, noise_variance=s * s * p.noise_variance)


def _labels(name, params, X):
    model = FAMILIES[name][0]
    if name.startswith("gmm"):
        return np.asarray(model.predict(params, X))
    return None


def _close(a, b, rtol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max() + 1e-300
    err = np.abs(a - b).max() / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:.3g}"


def _assert_transformed(name, r, ref, s, c, rtol):
    """``r`` (a fit in units s·x + c) equals ``ref`` (a fit in x's units) transformed."""
    t, q = _np(r.params), _transform(name, ref.params, s, c)
    spread = abs(s) * 5.0  # the data's spread in the new units (means compared relative to it)
    if name.startswith("gmm"):
        _close(t.weights, q.weights, rtol, "weights")
        _close((t.means - c) / spread, (q.means - c) / spread, rtol * 10, "means")
        _close(t.covariances, q.covariances, rtol * 10, "covariances")
    else:
        _close((t.mean - c) / spread, (q.mean - c) / spread, rtol * 10, "mean")
        # W up to the sign of each latent direction (W -> W R for orthogonal R changes nothing):
        # compare W Wᵀ, and the noise.
        _close(t.W @ t.W.T, q.W @ q.W.T, rtol * 10, "W Wᵀ")
        _close(t.noise_variance, q.noise_variance, rtol * 10, "noise_variance")


# --- equivariance under x -> s·x + c ------------------------------------------------------------

log_scale64 = st.floats(-100, 100)
log_scale32 = st.floats(-12, 12)
sign = st.sampled_from([1.0, -1.0])
offset = st.lists(st.floats(-1.0, 1.0), min_size=D, max_size=D)
log_offset = st.floats(0, 4)


@pytest.mark.parametrize("name", LOCATION_SCALE)
@settings(max_examples=4, **SETTINGS)
@given(e=log_scale64, sg=sign, u=offset, k=log_offset)
@example(e=100.0, sg=-1.0, u=[1.0, -1.0, 0.5], k=4.0)  # the extremes, always run
@example(e=-100.0, sg=1.0, u=[-1.0, 1.0, 1.0], k=4.0)
@example(e=16.0, sg=1.0, u=[0.3, 0.0, -0.2], k=0.0)
def test_fit_equivariant_under_affine_units_float64(name, e, sg, u, k):
    X, p0, r0 = _base(name)
    s = sg * 10.0**e
    c = abs(s) * 5.0 * 10.0**k * np.asarray(u)  # up to 1e4 x the spread (~5) of the data
    Xs = s * X + c
    r = _fit(name, _transform(name, p0, s, c), Xs)
    assert int(r.status) == 0, jaxem.describe_status(int(r.status))
    # offsets cost log10(|c| / spread) digits of the data themselves
    rtol = 1e-9 * (1 + 10.0**k * np.abs(u).max())
    _assert_transformed(name, r, r0, s, c, rtol)
    shift = -D * np.log(abs(s))
    np.testing.assert_allclose(float(r.log_likelihood), float(r0.log_likelihood) + shift,
                               rtol=1e-10, atol=rtol * 10)
    if name.startswith("gmm"):
        np.testing.assert_array_equal(_labels(name, r.params, Xs), _labels(name, r0.params, X))


@pytest.mark.parametrize("name", LOCATION_SCALE)
@settings(max_examples=3, **SETTINGS)
@given(e=log_scale32, sg=sign, u=offset, k=log_offset)
@example(e=12.0, sg=1.0, u=[1.0, -1.0, 0.5], k=4.0)
@example(e=-12.0, sg=-1.0, u=[-1.0, 1.0, 1.0], k=4.0)
@example(e=7.0, sg=1.0, u=[0.0, 0.0, 0.0], k=0.0)
def test_fit_equivariant_under_affine_units_float32(name, e, sg, u, k):
    """float32 EM on s·x + c equals float64 EM on the same float32 data to float32 rounding of the
    spread (not of |c|): the moments are taken about points among the data."""
    X, p0, r0 = _base(name)
    s = sg * 10.0**e
    c = abs(s) * 5.0 * 10.0**k * np.asarray(u)
    Xs = (s * X + c).astype(np.float32)
    p32 = _cast(_transform(name, p0, s, c), np.float32)
    r = _fit(name, p32, Xs)
    ref = _fit(name, _np(p32), Xs.astype(np.float64))  # exact EM on the very same data
    assert int(r.status) == 0, jaxem.describe_status(int(r.status))
    assert r.params[0].dtype == np.float32
    t, q = _np(r.params), _np(ref.params)
    spread = abs(s) * 5.0
    # a float32 mean is itself rounded to eps·|c|: allow that, plus 1e-4 of the spread
    mean_tol = 1e-4 * spread + 8 * np.finfo(np.float32).eps * np.abs(c).max()
    if name.startswith("gmm"):
        _close(t.weights, q.weights, 1e-3, "weights")
        assert np.abs(t.means - q.means).max() < mean_tol, "means"
        _close(t.covariances, q.covariances, 1e-3, "covariances")
        np.testing.assert_array_equal(_labels(name, r.params, Xs),
                                      _labels(name, ref.params, Xs.astype(np.float64)))
    else:
        assert np.abs(t.mean - q.mean).max() < mean_tol, "mean"
        _close(t.W @ t.W.T, q.W @ q.W.T, 1e-3, "W Wᵀ")
        _close(t.noise_variance, q.noise_variance, 1e-3, "noise_variance")
    # and the exact transformed answer, to float32 rounding of the data
    np.testing.assert_allclose(float(r.log_likelihood), float(r0.log_likelihood) - D * np.log(abs(s)),
                               atol=1e-3 * (1 + abs(np.log(abs(s)))))


@pytest.mark.parametrize("name", LOCATION_SCALE)
@settings(max_examples=3, **SETTINGS)
@given(e=log_scale64, u=offset, k=log_offset)
@example(e=100.0, u=[1.0, -1.0, 0.5], k=4.0)
@example(e=-100.0, u=[-1.0, 1.0, 1.0], k=4.0)
def test_init_equivariant_under_affine_units(name, e, u, k):
    """init(key, s·x + c) is the transformed init(key, x) (k-means labels, moments, the loadings'
    scale; s > 0: PPCA/FA draw W with the spread's magnitude, not its sign)."""
    X, p0, _ = _base(name)
    s = 10.0**e
    c = s * 5.0 * 10.0**k * np.asarray(u)
    p = _init(name, jax.random.key(0), s * X + c)
    t, q = _np(p), _transform(name, p0, s, c)
    rtol = 1e-9 * (1 + 10.0**k)
    for a, b, what in zip(t, q, t._fields):
        if what in ("means", "mean"):
            a, b = (a - c) / (5 * s), (b - c) / (5 * s)
        _close(a, b, rtol * 10, what)


@pytest.mark.parametrize("name", ["gmm_full", "gmm_spherical"])
@settings(max_examples=2, **SETTINGS)
@given(e=log_scale32, u=offset)
@example(e=0.0, u=[1.0, 1.0, 1.0])
@example(e=-12.0, u=[1.0, -1.0, 0.5])
def test_init_float32_far_from_origin_equals_float64(name, e, u):
    """k-means in float32 at an offset of 1e4 x the spread (the former ||x||² - 2x·c + ||c||² about
    the origin lost every digit there: ARI 0) labels as float64 k-means on the same data."""
    X, _, _ = _base(name)
    s = 10.0**e
    Xs = (s * X + s * 5.0 * 1e4 * np.asarray(u)).astype(np.float32)
    p32 = _init(name, jax.random.key(0), Xs)
    p64 = _init(name, jax.random.key(0), Xs.astype(np.float64))
    model = FAMILIES[name][0]
    # the uniforms of k-means++ depend on the dtype: the same clusters, maybe in another order
    o32, o64 = np.argsort(np.asarray(p32.means)[:, 0]), np.argsort(np.asarray(p64.means)[:, 0])
    relabel = np.empty(K, int)
    relabel[o32] = o64
    np.testing.assert_array_equal(relabel[np.asarray(model.predict(p32, Xs))],
                                  model.predict(p64, Xs.astype(np.float64)))
    _close(np.asarray(p32.weights)[o32], np.asarray(p64.weights)[o64], 1e-6, "weights")
    _close(np.asarray(p32.covariances)[o32], np.asarray(p64.covariances)[o64], 1e-2, "covariances")


# --- invariances: weight scale, row order, component order ---------------------------------------

@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=2, **SETTINGS)
@given(e=st.floats(-10, 10))
@example(e=-10.0)
@example(e=10.0)
def test_fit_and_init_invariant_under_weight_scale(name, e):
    X, p0, r0 = _base(name)
    w = 10.0**e * np.ones(N)
    r = _fit(name, p0, X, w)
    assert int(r.status) == 0, jaxem.describe_status(int(r.status))
    for a, b, what in zip(_np(r.params), _np(r0.params), r0.params._fields):
        _close(a, b, 1e-10, what)
    np.testing.assert_allclose(r.trace, r0.trace, rtol=1e-12)
    for a, b, what in zip(_np(_init(name, jax.random.key(0), X, w)), _np(p0), p0._fields):
        _close(a, b, 1e-10, "init " + what)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=3, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1))
def test_fit_invariant_under_row_permutation(name, seed):
    X, p0, r0 = _base(name)
    perm = np.random.default_rng(seed).permutation(N)
    w = np.random.default_rng(seed + 1).uniform(0.5, 2.0, N)
    r = _fit(name, p0, X[perm], w[perm])
    ref = _fit(name, p0, X, w)
    for a, b, what in zip(_np(r.params), _np(ref.params), ref.params._fields):
        _close(a, b, 1e-9, what)
    np.testing.assert_allclose(r.log_likelihood, ref.log_likelihood, rtol=1e-12)


def _permute_components(name, p, perm):
    p = _np(p)
    if name in ("ppca", "factor_analysis"):  # latent directions: the columns of W
        return p._replace(W=p.W[:, perm])
    if name == "gmm_tied":
        return p._replace(weights=p.weights[perm], means=p.means[perm])
    return type(p)(*(a[perm] for a in p))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_permuting_start_components_permutes_result(name):
    X, p0, r0 = _base(name)
    perm = np.array([1, 0])
    r = _fit(name, _permute_components(name, p0, perm), X)
    want = _permute_components(name, r0.params, perm)
    for a, b, what in zip(_np(r.params), want, want._fields):
        _close(a, b, 1e-9, what)
    np.testing.assert_allclose(r.log_likelihood, r0.log_likelihood, rtol=1e-12)


# --- NaN/inf detection under jit at every N --------------------------------------------------------

_STATUS = jax.jit(status_of_data, static_argnums=2)


@settings(max_examples=24, **SETTINGS)
@given(n=st.sampled_from([5, 2048, 4369, 100000]), dtype=st.sampled_from([np.float32, np.float64]),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.floats(0, 1),
       in_weights=st.booleans())
def test_nonfinite_input_detected_under_jit_at_every_n(n, dtype, bad, where, in_weights):
    X, w = np.ones((n, D), dtype), np.ones(n, dtype)
    i = min(int(where * n), n - 1)
    assert int(_STATUS(X, w, 2)) == 0
    if in_weights:
        w[i] = bad
    else:
        X[i, i % D] = bad
    assert int(_STATUS(X, w, 2)) & int(jaxem.Status.INVALID_INPUT)


def test_nonfinite_input_detected_by_jitted_fit_at_large_n():
    """End to end: the fit returns INVALID_INPUT (not NONFINITE) and the start unchanged."""
    model = jaxem.GaussianMixture(2, "diag")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4369, 2))
    p = model.init(jax.random.key(0), X)
    X[3000, 1] = np.nan
    r = jax.jit(lambda p, X: jaxem.fit(model, p, X))(p, X)
    assert int(r.status) == int(jaxem.Status.INVALID_INPUT)
    for a, b in zip(r.params, p):
        np.testing.assert_array_equal(a, b)
    # non-finite starting params under jit: INVALID_INPUT too (eagerly a ValueError, below)
    bad = p._replace(means=p.means.at[0, 0].set(np.inf))
    r = jax.jit(lambda p, X: jaxem.fit(model, p, X))(bad, np.nan_to_num(X))
    assert int(r.status) == int(jaxem.Status.INVALID_INPUT)


# --- every error is a ValueError naming the argument ----------------------------------------------

def _bad_calls():
    X, p0, _ = _base("gmm_full")
    gm = FAMILIES["gmm_full"][0]
    Xnan = X.copy()
    Xnan[3, 1] = np.nan
    calls = {
        "reg_covar": [lambda: jaxem.GaussianMixture(2, reg_covar=v) for v in (np.nan, np.inf, -1.0)],
        "X": [lambda: gm.init(jax.random.key(0), Xnan), lambda: jaxem.fit(gm, p0, Xnan),
              lambda: gm.init(jax.random.key(0), X[:, 0]),
              lambda: gm.init(jax.random.key(0), (X * 1e20).astype(np.float32)),
              lambda: jaxem.PPCA(1).init(jax.random.key(0), (X * 1e20).astype(np.float32))],
        "weights": [lambda: jaxem.fit(gm, p0, X, weights=-np.ones(N)),
                    lambda: jaxem.fit(gm, p0, X, weights=np.full(N, np.nan))],
        "params": [lambda: jaxem.fit(gm, p0._replace(means=p0.means * np.nan), X),
                   lambda: jaxem.fit(gm, p0._replace(covariances=p0.covariances * np.inf), X)],
        "n_components": [lambda: jaxem.GaussianMixture(0),
                         lambda: jaxem.fit(jaxem.GaussianMixture(N + 1), p0, X)],
        "max_iter": [lambda: jaxem.fit(gm, p0, X, max_iter=0)],
        "adjoint": [lambda: jaxem.fit(gm, p0, X, adjoint="nope")],
        "covariance_type": [lambda: jaxem.GaussianMixture(2, "round")],
    }
    return [(arg, f) for arg, fs in calls.items() for f in fs]


def test_every_error_is_a_value_error_naming_the_argument():
    for arg, call in _bad_calls():
        with pytest.raises(ValueError) as e:
            call()
        assert arg in str(e.value), (arg, str(e.value))


# --- float32 streamed sums are compensated across blocks -----------------------------------------

def test_float32_streamed_sum_is_compensated_across_blocks():
    """Σ over 40,000 blocks of float32 block sums: plain summation drifts by ~B·eps (here 1e-3
    relative), the compensated accumulator of `jaxem._chunk` stays at float32 rounding."""
    from jaxem._chunk import chunked_sum

    n, c = 160_000, 4
    x = np.full((n, 1), 0.1, np.float32)
    w = np.ones(n, np.float32)
    fn = lambda xb, wb: (jnp.sum(wb * xb[:, 0]), jnp.sum(wb))
    s, t = jax.jit(lambda x, w: chunked_sum(fn, x, w, c, 1))(x, w)
    exact = n * np.float64(np.float32(0.1))
    assert abs(float(s) - exact) / exact < 4 * np.finfo(np.float32).eps, float(s) - exact
    assert float(t) == n
    plain = np.float32(0)
    for _ in range(n // c):  # what the uncompensated scan computed
        plain = np.float32(plain + np.float32(c * np.float32(0.1)))
    assert abs(float(plain) - exact) / exact > 100 * np.finfo(np.float32).eps  # the case is hard
