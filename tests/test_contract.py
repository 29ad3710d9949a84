"""One contract, every family: jit, vmap, dtypes, weights, monotone EM, ELBO identity, no recompile,
finite outputs and bad-input errors.

To add a family, add a row to ``FAMILIES``: ``name -> (model, make_data)`` where
``make_data(seed, n) -> (n, D_CONTRACT)`` float64 NumPy array. Every dataset here has D_CONTRACT
columns and N_CONTRACT rows so that each family compiles its fit once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import assert_tree_allclose, blobs

N_CONTRACT, D_CONTRACT = 48, 4
MAX_ITER, TOL = 300, 1e-6
_OPTS = dict(jaxem.COMPILER_OPTIONS)  # lighter XLA options: compiles 2-4x faster


def _blobs(seed, n):
    return blobs(seed=seed, n=n, d=D_CONTRACT, k=2, spread=1.2)[0]


def _low_rank(seed, n):
    """x = W z + μ + noise with q = 2 latent dimensions and unequal noise per feature."""
    rng = np.random.default_rng(seed)
    W = np.array([[3.0, 0.0], [0.0, 2.5], [2.0, 1.0], [1.0, -2.0]])
    noise = np.array([0.4, 0.6, 0.5, 0.7])
    return rng.normal(size=(n, 2)) @ W.T + 1.0 + rng.normal(size=(n, D_CONTRACT)) * noise


def _binary(seed, n):
    rng = np.random.default_rng(seed)
    protos = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.9, 0.7]])
    z = rng.integers(0, 2, size=n)
    return (rng.random((n, D_CONTRACT)) < protos[z]).astype(np.float64)


def _counts(seed, n):
    rng = np.random.default_rng(seed)
    rates = np.array([[1.0, 6.0, 0.5, 3.0], [7.0, 1.0, 4.0, 0.2]])
    z = rng.integers(0, 2, size=n)
    return rng.poisson(rates[z]).astype(np.float64)


def _low_rank_clusters(seed, n):
    """Two clusters, each x = w_k z + μ_k + noise with one latent dimension."""
    rng = np.random.default_rng(seed)
    W = np.array([[2.0, 1.5, 1.0, -1.5], [1.0, -1.5, 2.0, 1.5]])
    mu = np.array([[4.0, 0.0, 0.0, 0.0], [-4.0, 1.0, 0.0, 2.0]])
    noise = np.array([0.6, 0.7, 0.6, 0.8])
    z = rng.integers(0, 2, size=n)
    return mu[z] + rng.normal(size=(n, 1)) * W[z] + rng.normal(size=(n, D_CONTRACT)) * noise


FAMILIES = {
    "gmm_full": (jaxem.GaussianMixture(2, "full"), _blobs),
    "gmm_diag": (jaxem.GaussianMixture(2, "diag"), _blobs),
    "ppca": (jaxem.PPCA(2), _low_rank),
    "factor_analysis": (jaxem.FactorAnalysis(2), _low_rank),
    "bernoulli": (jaxem.BernoulliMixture(2), _binary),
    "poisson": (jaxem.PoissonMixture(2), _counts),
    "mfa": (jaxem.MixtureOfFactorAnalyzers(2, 1), _low_rank_clusters),
    "mppca": (jaxem.MixturePPCA(2, 1), _low_rank_clusters),
}
NAMES = list(FAMILIES)

# One jitted fit per family, shared by all tests (same shapes => compiled once); `_TRACES[name]`
# counts how often JAX traced it.
_FITTERS, _TRACES = {}, {}


def _fitter(name):
    if name not in _FITTERS:
        model = FAMILIES[name][0]
        _TRACES[name] = 0

        def run(p, x, w):
            _TRACES[name] += 1  # runs only while tracing
            return jaxem.fit(model, p, x, weights=w, max_iter=MAX_ITER, tol=TOL)

        _FITTERS[name] = jax.jit(run, compiler_options=_OPTS)
    return _FITTERS[name]


_INITS = {}


def _init(name, key, X, w=None):
    """``model.init`` jitted once per family (eager k-means would re-trace its loops every call)."""
    if name not in _INITS:
        model = FAMILIES[name][0]
        _INITS[name] = jax.jit(lambda k, x, w: model.init(k, x, w), compiler_options=_OPTS)
    return _INITS[name](key, X, np.ones(X.shape[0], X.dtype) if w is None else w)


def _problem(name, seed=0, dtype=np.float64):
    model, make = FAMILIES[name]
    X = make(seed, N_CONTRACT).astype(dtype)
    w = np.ones(N_CONTRACT, dtype)
    return model, X, w, _init(name, jax.random.key(seed), X, w)


def _leaves_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", NAMES)
def test_jit_fit_is_finite_monotone_and_float64(name):
    model, X, w, p0 = _problem(name)
    res = _fitter(name)(p0, X, w)
    assert int(res.status) == 0, jaxem.describe_status(res.status)
    assert bool(res.converged)
    n = int(res.n_iter)
    trace = np.asarray(res.trace)
    assert np.all(np.isfinite(trace[:n])) and np.all(np.isnan(trace[n:]))
    # EM never decreases the log-likelihood; 1e-12 relative slack is float64 round-off.
    assert np.all(np.diff(trace[:n]) >= -1e-12 * np.abs(trace[1:n])), np.diff(trace[:n]).min()
    assert trace[-1 if n == MAX_ITER else n - 1] <= float(res.log_likelihood) + 1e-12
    assert n > 2, "the fit should take several EM steps from init"
    assert _leaves_finite(res.params) and np.isfinite(float(res.log_likelihood))
    assert all(l.dtype == jnp.float64 for l in jax.tree_util.tree_leaves(res.params))
    assert res.log_likelihood.dtype == jnp.float64
    assert bool(jnp.all(jnp.isfinite(model.score_samples(res.params, X))))
    # log_likelihood is the mean of score_samples at the returned params.
    np.testing.assert_allclose(float(res.log_likelihood),
                               float(jnp.mean(model.score_samples(res.params, X))), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_datasets_matches_single_fits(name):
    model = FAMILIES[name][0]
    probs = [_problem(name, seed=s) for s in (1, 2, 3)]
    Ws = np.stack([p[2] for p in probs])
    Ws[1, -8:] = 0.0  # a ragged member: 8 padding rows
    Xs = np.stack([p[1] for p in probs])
    P = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[p[3] for p in probs])
    fit = lambda p, x, w: jaxem.fit(model, p, x, weights=w, max_iter=MAX_ITER, tol=TOL)
    batched = jax.jit(jax.vmap(fit), compiler_options=_OPTS)(P, Xs, Ws)
    n_iters = []
    for b in range(3):
        single = _fitter(name)(probs[b][3], Xs[b], Ws[b])
        assert int(batched.n_iter[b]) == int(single.n_iter)
        assert int(batched.status[b]) == int(single.status) == 0
        # Batched and single programs may order floating-point sums differently: 1e-8.
        assert_tree_allclose(jax.tree_util.tree_map(lambda a: a[b], batched.params),
                             single.params, rtol=1e-8, atol=1e-10)
        n_iters.append(int(single.n_iter))
    assert len(set(n_iters)) > 1, f"members should stop on their own criterion, got {n_iters}"


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(name):
    model, X, w, p64 = _problem(name)
    X32, w32 = X.astype(np.float32), w.astype(np.float32)
    p0 = _init(name, jax.random.key(0), X32, w32)
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(p0))
    res = _fitter(name)(p0, X32, w32)  # a float32 trace of the shared fit
    assert int(res.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0, jaxem.describe_status(
        res.status)
    for leaf in jax.tree_util.tree_leaves(res.params) + [res.log_likelihood, res.trace]:
        assert leaf.dtype == jnp.float32
    assert _leaves_finite(res.params) and np.isfinite(float(res.log_likelihood))
    # It reaches the float64 fit's log-likelihood from the (float64) same start to float32 accuracy
    # (loose, 1e-4 relative: single precision accumulated over up to MAX_ITER iterations).
    r64 = _fitter(name)(p64, X, w)
    r32 = _fitter(name)(jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p64), X32, w32)
    np.testing.assert_allclose(float(r32.log_likelihood), float(r64.log_likelihood), rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_integer_weights_equal_duplicated_rows(name):
    model, make = FAMILIES[name]
    base = make(7, 32)
    counts = np.repeat([3, 2, 1, 0], 8)  # sums to 48 = N_CONTRACT
    X_dup = np.repeat(base, counts, axis=0)
    # The weighted problem: the 32 distinct rows plus 16 padding rows (weight 0, arbitrary values).
    X_w = np.concatenate([base, base[:16][::-1]])
    w = np.concatenate([counts, np.zeros(16)]).astype(np.float64)
    p0 = _init(name, jax.random.key(0), X_dup)
    dup = _fitter(name)(p0, X_dup, np.ones(N_CONTRACT))
    wtd = _fitter(name)(p0, X_w, w)
    assert int(dup.n_iter) == int(wtd.n_iter)
    np.testing.assert_allclose(np.asarray(wtd.trace), np.asarray(dup.trace), rtol=1e-10)
    assert_tree_allclose(wtd.params, dup.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(float(model.log_likelihood(p0, X_w, w)),
                               float(model.log_likelihood(p0, X_dup)), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_elbo_equals_log_likelihood_at_exact_posterior(name):
    model, X, _, p0 = _problem(name)
    w = np.random.default_rng(0).uniform(0.5, 2.0, N_CONTRACT)
    post, ll = model.e_step(p0, X, w)
    # The E-step's log-likelihood is the weighted sum of score_samples.
    np.testing.assert_allclose(float(ll), float(w @ np.asarray(model.score_samples(p0, X))),
                               rtol=1e-12)
    np.testing.assert_allclose(float(jaxem.elbo(model, p0, post, X, w)), float(ll), rtol=1e-10)
    # Any other posterior (here the exact one at other parameters) gives a strictly lower bound.
    p1 = _fitter(name)(p0, X, np.ones(N_CONTRACT)).params
    other, _ = model.e_step(p1, X, w)
    assert float(jaxem.elbo(model, p0, other, X, w)) < float(ll) - 1e-6
    # The closed-form M-step from that posterior does not lower Q (it maximises it).
    new = model.m_step(post, X, w)
    assert float(model.q_function(new, post, X, w)) >= float(model.q_function(p0, post, X, w))
    assert float(model.log_likelihood(new, X, w)) >= float(ll) - 1e-10 * abs(float(ll))


@pytest.mark.parametrize("name", NAMES)
def test_second_call_does_not_recompile(name):
    model, X, w, p0 = _problem(name, seed=4)
    run = _fitter(name)
    run(p0, X, w)
    before = _TRACES[name]
    _, X2, w2, p2 = _problem(name, seed=5)
    run(p2, X2, w2)  # new data, new params, same shapes
    assert _TRACES[name] == before
    rebuilt = type(model)(**{f: getattr(model, f) for f in model.__dataclass_fields__})
    assert rebuilt == model and hash(rebuilt) == hash(model)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error(name):
    model, X, w, p0 = _problem(name)
    Xnan = X.copy()
    Xnan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxem.fit(model, p0, Xnan)
    with pytest.raises(ValueError, match="NaN"):
        model.init(jax.random.key(0), Xnan)
    with pytest.raises(ValueError, match="2-D"):
        jaxem.fit(model, p0, X[:, 0])
    with pytest.raises(ValueError, match="features"):
        jaxem.fit(model, p0, np.concatenate([X, X[:, :1]], axis=1))
    with pytest.raises(ValueError, match="features"):
        model.log_likelihood(p0, X[:, :-1])
    wneg = w.copy()
    wneg[0] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        jaxem.fit(model, p0, X, weights=wneg)
    # Under jit the same NaN comes back as a status code, parameters untouched.
    res = _fitter(name)(p0, Xnan, w)
    assert int(res.status) & jaxem.Status.INVALID_INPUT and int(res.n_iter) == 0
    assert_tree_allclose(res.params, p0)
