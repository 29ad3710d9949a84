"""Online (stepwise) EM, `jaxem.fit_online`: γ = 1 on all the data is batch EM; mini-batch passes
reach batch EM's log-likelihood; the lax.scan path equals the Python-iterable path; step sizes,
warm-up and Polyak averaging follow their definitions (a NumPy recursion on the statistics); bad
input raises."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxem
from helpers import assert_tree_allclose, blobs

N, B = 4000, 200  # 20 batches of 200 rows
T = N // B


def _gauss():
    return blobs(seed=1, n=N, d=2, k=3, spread=4.0)[0]


def _counts():
    rng = np.random.default_rng(1)
    lam = rng.uniform(1, 10, (3, 2))
    return rng.poisson(lam[rng.integers(0, 3, N)]).astype(np.float64)


def _factors():
    rng = np.random.default_rng(1)
    return (rng.normal(size=(N, 2)) @ rng.normal(size=(2, 4)) + 0.3 * rng.normal(size=(N, 4))
            + 3.0)


FAMILIES = {
    "gmm_full": (jaxem.GaussianMixture(3, "full"), _gauss),
    "ppca": (jaxem.PPCA(2), _factors),
    "poisson": (jaxem.PoissonMixture(3), _counts),
}


def _problem(name):
    model, make = FAMILIES[name]
    X = make()
    return model, X, model.init(jax.random.key(1), X[:B])


def _steps(model, params, batches, **kw):
    """fit_online over an iterable, with θ_t recorded after every step."""
    seen = []
    r = jaxem.fit_online(model, params, batches, callback=lambda t, p: seen.append(p), **kw)
    return r, seen


_JITS = {}


def _jit(model, name):
    """``model.<name>`` jitted once per model (eager op-by-op dispatch compiles every primitive)."""
    if (model, name) not in _JITS:
        f = getattr(model, name)
        _JITS[model, name] = jax.jit(
            f if name == "em_update" else lambda p, a, r: f(p, a, reference=r))
    return _JITS[model, name]


def _em(model, p, X):
    return _jit(model, "em_update")(p, jnp.asarray(X), jnp.ones(len(X)))[0]


def _reference(model, p0, batches, gammas, warmup=1):
    """Stepwise EM written out: NumPy arithmetic on the per-unit-weight statistics, the family's
    `maximize`, no M-step before batch ``warmup - 1``."""
    r = model.statistics_reference(p0)
    p, s, out = p0, None, []
    for t, X in enumerate(batches):
        st = _jit(model, "sufficient_statistics")(p, X, r)
        hat = [np.asarray(a) / float(st.total_weight) for a in st]
        s = hat if s is None else [(1 - gammas[t]) * a + gammas[t] * b for a, b in zip(s, hat)]
        if t >= warmup - 1:
            p = _jit(model, "maximize")(type(st)(*s), p, r)
        out.append(p)
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_one_batch_of_all_data_with_step_one_is_batch_em(name):
    model, X, p0 = _problem(name)
    X = X[:B]  # "all the data" (the batch shape of the other tests: nothing new to compile)
    r, seen = _steps(model, p0, [X] * 3, step_size=1.0)
    batch = jaxem.fit(model, p0, X, max_iter=3, tol=0)
    np.testing.assert_allclose(np.asarray(r.trace), np.asarray(batch.trace), rtol=1e-12)
    assert int(r.n_iter) == 3 and int(r.status) == 0 and not bool(r.converged)
    p = p0
    for got in seen:  # iterate for iterate: θ_t = maximize(statistics(θ_{t-1})), fit's update
        p = _em(model, p, X)
        assert_tree_allclose(got, p, rtol=1e-9, atol=1e-11)
    assert_tree_allclose(r.params, batch.params, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["gmm_full", "poisson"])
def test_two_passes_of_mini_batches_reach_batch_em(name):
    """Default schedule γ_t = (t+2)^-0.6, 20 batches of 200 rows, 2 passes: the mean
    log-likelihood on all the data is within 5e-3 of batch EM's converged value."""
    model, X, p0 = _problem(name)
    batch = jaxem.fit(model, p0, X, max_iter=500, tol=1e-8)
    r = jaxem.fit_online(model, p0, X.reshape(T, B, -1), n_epochs=2)
    ll = float(model.log_likelihood(r.params, X)) / N
    assert int(r.status) == 0 and int(r.n_iter) == 2 * T
    assert float(batch.log_likelihood) - 5e-3 < ll < float(batch.log_likelihood) + 1e-6
    # The running estimate tracks the truth to the batch-to-batch noise.
    assert abs(float(r.log_likelihood) - ll) < 0.05


def test_scan_path_equals_iterable_path_with_a_ragged_last_batch():
    model, X, p0 = _problem("gmm_full")
    X = X[: N - B // 2]  # the last batch has 100 rows
    batches = [X[i:i + B] for i in range(0, len(X), B)]
    Xs = np.concatenate([X, np.zeros((B // 2, 2))]).reshape(T, B, 2)
    Ws = np.ones((T, B))
    Ws[-1, B // 2:] = 0.0
    kw = dict(n_epochs=2, average=True, burn_in=25)
    a = jaxem.fit_online(model, p0, Xs, weights=Ws, **kw)
    b = jaxem.fit_online(model, p0, lambda: iter(batches), **kw)
    assert_tree_allclose(a, b, rtol=1e-10, atol=1e-12)
    # jit and vmap of the stacked path: two data sets at once, each as alone.
    other = Xs[::-1]
    both = jax.jit(jax.vmap(lambda x: jaxem.fit_online(model, p0, x, weights=Ws, **kw)))(
        jnp.stack([Xs, other]))
    assert_tree_allclose(jax.tree_util.tree_map(lambda x: x[0], both), a, rtol=1e-9, atol=1e-11)
    c = jaxem.fit_online(model, p0, other, weights=Ws, **kw)
    assert_tree_allclose(jax.tree_util.tree_map(lambda x: x[1], both), c, rtol=1e-9, atol=1e-11)


def test_step_size_forms_follow_the_recursion():
    model, X, p0 = _problem("gmm_full")
    batches = list(X[: 6 * B].reshape(6, B, 2))
    # A float, a function and an optax schedule of the same values give the same fit ...
    runs = [jaxem.fit_online(model, p0, batches, step_size=s)
            for s in (0.3, lambda t: 0.3, optax.constant_schedule(0.3))]
    for r in runs[1:]:
        assert_tree_allclose(r, runs[0], rtol=1e-12, atol=1e-14)
    # ... which is the recursion with γ_0 = 1 (the first batch initialises s) and γ_t after it.
    want = _reference(model, p0, batches, [1.0] + [0.3] * 5)
    assert_tree_allclose(runs[0].params, want[-1], rtol=1e-9, atol=1e-11)
    # A decaying optax schedule, evaluated at the 0-based step t (an int32); the default
    # (t + 2)^-0.6.
    sched = optax.polynomial_schedule(0.9, 0.1, power=1.0, transition_steps=6)
    r, seen = _steps(model, p0, batches, step_size=sched)
    want = _reference(model, p0, batches, [1.0] + [float(sched(jnp.int32(t))) for t in range(1, 6)])
    for got, w in zip(seen, want):
        assert_tree_allclose(got, w, rtol=1e-9, atol=1e-11)
    r = jaxem.fit_online(model, p0, batches)
    want = _reference(model, p0, batches, [1.0] + [(t + 2.0) ** -0.6 for t in range(1, 6)])
    assert_tree_allclose(r.params, want[-1], rtol=1e-9, atol=1e-11)


def test_warmup_averages_batches_at_the_start_before_the_first_m_step():
    model, X, p0 = _problem("gmm_full")
    batches = list(X[: 6 * B].reshape(6, B, 2))
    r, seen = _steps(model, p0, batches, warmup=3, step_size=0.5)
    for p in seen[:2]:  # no M-step before batch warmup - 1 = 2
        assert_tree_allclose(p, p0, rtol=0, atol=0)
    # Equal batches averaged with γ = 1, 1/2, 1/3: one batch-EM step on their concatenation.
    one = _em(model, p0, X[: 3 * B])
    assert_tree_allclose(seen[2], one, rtol=1e-9, atol=1e-11)
    want = _reference(model, p0, batches, [1.0, 1 / 2, 1 / 3, 0.5, 0.5, 0.5], warmup=3)
    assert_tree_allclose(r.params, want[-1], rtol=1e-9, atol=1e-11)


def test_polyak_averaging_is_the_mean_of_the_iterates_after_the_burn_in():
    model, X, p0 = _problem("poisson")
    batches = list(X[: 8 * B].reshape(8, B, 2))
    r, seen = _steps(model, p0, batches, average=True, burn_in=3)
    mean = jax.tree_util.tree_map(lambda *a: np.mean(np.stack(a), 0), *seen[3:])
    assert_tree_allclose(r.params, mean, rtol=1e-10, atol=1e-12)
    # Default burn-in: half of the steps (sized input).
    r = jaxem.fit_online(model, p0, batches, average=True)
    mean = jax.tree_util.tree_map(lambda *a: np.mean(np.stack(a), 0), *seen[4:])
    assert_tree_allclose(r.params, mean, rtol=1e-10, atol=1e-12)


def test_tol_stops_after_the_first_quiet_pass():
    model, X, p0 = _problem("poisson")
    Xs = X.reshape(T, B, 2)
    for batches in (Xs, list(Xs)):
        r = jaxem.fit_online(model, p0, batches, n_epochs=4, tol=1.0)
        assert bool(r.converged) and int(r.n_iter) == 2 * T and int(r.status) == 0
        r = jaxem.fit_online(model, p0, batches, n_epochs=2, tol=1e-12)
        assert not bool(r.converged)
        assert int(r.status) == jaxem.Status.MAX_ITER_REACHED


def test_non_finite_step_keeps_the_last_finite_params():
    """One component without reg_covar fed a batch of identical rows: its covariance collapses,
    the next batch's statistics are not finite, and the run stops there."""
    model = jaxem.GaussianMixture(1, reg_covar=0.0)
    X = np.random.default_rng(0).normal(size=(50, 2))
    p0 = model.init(jax.random.key(0), X)
    r, seen = _steps(model, p0, [X, np.ones((50, 2)), X, X], step_size=1.0)
    assert int(r.status) & jaxem.Status.NONFINITE
    assert np.isnan(np.asarray(r.trace)[2:]).all() and np.isfinite(np.asarray(r.trace)[:2]).all()
    assert_tree_allclose(r.params, seen[1], rtol=0, atol=0)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(r.params))


def test_bad_input_raises():
    model, X, p0 = _problem("poisson")
    batches = list(X[: 2 * B].reshape(2, B, 2))
    for s in (0.0, 1.5, -0.1, float("nan"), "fast"):
        with pytest.raises(ValueError, match="step_size"):
            jaxem.fit_online(model, p0, batches, step_size=s)
    with pytest.raises(ValueError, match=r"step_size must lie in \(0, 1\], got 2.0 at step t=1"):
        jaxem.fit_online(model, p0, batches, step_size=lambda t: 2.0)
    with pytest.raises(ValueError, match="no batch"):
        jaxem.fit_online(model, p0, [])
    with pytest.raises(ValueError, match="3 features"):
        jaxem.fit_online(model, p0, [np.ones((B, 3))])
    with pytest.raises(ValueError, match="3 features"):
        jaxem.fit_online(model, p0, np.ones((2, B, 3)))
    bad = batches[1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxem.fit_online(model, p0, [batches[0], bad])
    with pytest.raises(ValueError, match="non-negative"):
        jaxem.fit_online(model, p0, [(batches[0], -np.ones(B))])
    with pytest.raises(ValueError, match="Poisson|count|non-negative"):
        jaxem.fit_online(model, p0, [-batches[0]])
    with pytest.raises(ValueError, match="iterated again"):
        jaxem.fit_online(model, p0, iter(batches), n_epochs=2)
    with pytest.raises(ValueError, match="burn_in="):
        jaxem.fit_online(model, p0, iter(batches), average=True)
    with pytest.raises(ValueError, match=r"weights .* shape \(T, B\)"):
        jaxem.fit_online(model, p0, np.stack(batches), weights=np.ones(B))
    for kw in (dict(n_epochs=0), dict(warmup=0), dict(burn_in=-1), dict(tol=-1.0)):
        with pytest.raises(ValueError, match=list(kw)[0]):
            jaxem.fit_online(model, p0, batches, **kw)


def test_an_empty_component_is_reported_and_kept():
    """A Poisson component with rates 1e4 takes no responsibility for counts ~5: the M-step keeps
    its rates and reports Status.EMPTY_COMPONENT, as jaxem.fit does."""
    model, X, p0 = _problem("poisson")
    p0 = p0._replace(rates=p0.rates.at[2].set(1e4))
    r = jaxem.fit_online(model, p0, X.reshape(T, B, 2), n_epochs=2)  # a shape compiled above
    assert int(r.status) == jaxem.Status.EMPTY_COMPONENT
    np.testing.assert_array_equal(np.asarray(r.params.rates[2]), 1e4)
    assert float(r.params.weights[2]) < 1e-12
