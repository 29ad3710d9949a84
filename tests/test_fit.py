"""The driver: jit, vmap with per-member stopping, no recompiles, status codes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import blobs, assert_tree_allclose


def _batch(n_members=4, n=100):
    Xs, Ws = [], []
    for s in range(n_members):
        X, _ = blobs(seed=20 + s, n=n, d=2, k=3, spread=1.5 + s)
        w = np.ones(n)
        w[n - 10 * s:] = 0.0  # ragged: member s has 10*s padding rows
        Xs.append(X), Ws.append(w)
    return np.stack(Xs), np.stack(Ws)


def test_vmap_matches_individual_fits_and_stops_per_member():
    Xs, Ws = _batch()
    model = jaxem.GaussianMixture(3, "full")
    P = jax.vmap(lambda x, w: model.init(jax.random.key(0), x, w))(Xs, Ws)
    fit = lambda p, x, w: jaxem.fit(model, p, x, weights=w, max_iter=200, tol=1e-6)
    batched = jax.jit(jax.vmap(fit))(P, Xs, Ws)
    n_iters = set()
    for b in range(Xs.shape[0]):
        p = jax.tree_util.tree_map(lambda a: a[b], P)
        single = jaxem.fit(model, p, Xs[b], weights=Ws[b], max_iter=200, tol=1e-6)
        assert int(batched.n_iter[b]) == int(single.n_iter)
        assert bool(batched.converged[b]) == bool(single.converged)
        assert_tree_allclose(jax.tree_util.tree_map(lambda a: a[b], batched.params),
                             single.params, rtol=1e-9, atol=1e-12)
        n_iters.add(int(single.n_iter))
    assert len(n_iters) > 1, "members should stop at different iterations"


def test_second_call_does_not_recompile():
    Xs, Ws = _batch()
    model = jaxem.GaussianMixture(3, "diag")
    traces = []

    @jax.jit
    def run(x, w, tol):
        traces.append(1)  # runs only when JAX traces (compiles) the function
        p = model.init(jax.random.key(0), x, w)
        return jaxem.fit(model, p, x, weights=w, tol=tol)

    run(Xs[0], Ws[0], 1e-3)
    run(Xs[1], Ws[1], 1e-5)  # new data and new (traced) tol: same shapes
    # An equal, newly built model is the same static configuration: no retrace either.
    model = jaxem.GaussianMixture(3, "diag")
    run(Xs[2], Ws[2], 1e-4)
    assert len(traces) == 1
    assert hash(jaxem.GaussianMixture(3, "diag")) == hash(model)


def test_tol_zero_runs_max_iter_and_reports_not_converged():
    X, _ = blobs(seed=1)
    model = jaxem.GaussianMixture(3)
    p0 = model.init(jax.random.key(0), X)
    res = jaxem.fit(model, p0, X, max_iter=7, tol=0)
    assert int(res.n_iter) == 7 and not bool(res.converged)
    assert int(res.status) == 0  # tol=0 asked for exactly max_iter: no failure
    res = jaxem.fit(model, p0, X, max_iter=2, tol=1e-12)
    assert int(res.status) == jaxem.Status.MAX_ITER_REACHED
    assert "max_iter" in jaxem.describe_status(res.status)


def test_nonfinite_input_under_jit_gives_status_not_nan():
    X, _ = blobs(seed=2)
    model = jaxem.GaussianMixture(3)
    p0 = model.init(jax.random.key(0), X)
    Xbad = X.copy()
    Xbad[5, 1] = np.nan
    res = jax.jit(lambda p, x: jaxem.fit(model, p, x))(p0, Xbad)
    assert int(res.status) & jaxem.Status.INVALID_INPUT
    assert int(res.n_iter) == 0
    assert_tree_allclose(res.params, p0, rtol=0, atol=0)
    w = np.ones(X.shape[0])
    w[3] = -1.0
    res = jax.jit(lambda p, x, w: jaxem.fit(model, p, x, weights=w))(p0, X, w)
    assert int(res.status) & jaxem.Status.INVALID_INPUT


def test_too_few_samples_under_jit():
    X, _ = blobs(seed=2, n=20)
    model = jaxem.GaussianMixture(3)
    p0 = model.init(jax.random.key(0), X)
    w = np.zeros(20)
    w[:2] = 1.0
    res = jax.jit(lambda p, x, w: jaxem.fit(model, p, x, weights=w))(p0, X, w)
    assert int(res.status) & jaxem.Status.TOO_FEW_SAMPLES
    assert_tree_allclose(res.params, p0, rtol=0, atol=0)


def test_singular_covariance_returns_last_finite_params():
    """reg_covar=0 and a component on a single point: Cholesky fails; no NaN comes back."""
    X, _ = blobs(seed=3, n=60)
    X = np.r_[X, np.full((1, 2), 50.0)]  # an isolated point grabs its own component
    # Start regularised (finite log-likelihood), then fit without regularisation.
    p0 = jaxem.GaussianMixture(4, "full").init(jax.random.key(0), X)
    model = jaxem.GaussianMixture(4, "full", reg_covar=0.0)
    res = jax.jit(lambda p, x: jaxem.fit(model, p, x, max_iter=50))(p0, X)
    assert int(res.status) & jaxem.Status.NONFINITE
    assert all(np.all(np.isfinite(l)) for l in jax.tree_util.tree_leaves(res.params))
    assert np.isfinite(res.log_likelihood)


def test_empty_component_kept_finite_and_flagged():
    X, _ = blobs(seed=4, n=60, d=2, k=2)
    model = jaxem.GaussianMixture(3, "full")
    p0 = model.init(jax.random.key(0), X)
    far = p0._replace(means=p0.means.at[2].set(1e4))  # nothing is ever assigned to it
    res = jaxem.fit(model, far, X, max_iter=5, tol=0)
    assert int(res.status) & jaxem.Status.EMPTY_COMPONENT
    assert all(np.all(np.isfinite(l)) for l in jax.tree_util.tree_leaves(res.params))
    np.testing.assert_allclose(res.params.means[2], far.means[2])  # kept at its prior value
    assert float(res.params.weights[2]) < 1e-10


def test_describe_status_names_every_flag():
    assert jaxem.describe_status(0) == "ok"
    code = int(jaxem.Status.NONFINITE | jaxem.Status.EMPTY_COMPONENT)
    msg = jaxem.describe_status(code)
    assert "non-finite" in msg and "lost" in msg


def test_eager_calls_compile_once():
    """Eager (un-jitted) fits and inits with the same shapes and configuration reuse one program."""
    from jaxem._fit import _fit_compiled
    from jaxem._init import _init_compiled

    Xs, Ws = _batch()
    model = jaxem.GaussianMixture(3, "spherical")
    before = _fit_compiled._cache_size(), _init_compiled._cache_size()
    for b in range(3):
        p = model.init(jax.random.key(b), Xs[b], Ws[b])
        jaxem.fit(model, p, Xs[b], weights=Ws[b], tol=1e-4)
    after = _fit_compiled._cache_size(), _init_compiled._cache_size()
    assert after[0] - before[0] == 1 and after[1] - before[1] == 1


def test_light_compiler_options_same_fit():
    """Eager calls compile with jaxem.COMPILER_OPTIONS on CPU; a caller's jit (nested jits cannot
    carry options) uses XLA's defaults, and the user may pass the options to their own jit.
    All three give the same fit."""
    from jaxem._compile import light_options

    X, _ = blobs(seed=3, n=150, d=3, k=3)
    model = jaxem.GaussianMixture(3)
    p0 = model.init(jax.random.key(0), X)
    eager = jaxem.fit(model, p0, X, max_iter=20, tol=0)
    f = lambda p, x: jaxem.fit(model, p, x, max_iter=20, tol=0)
    default = jax.jit(f)(p0, X)
    opts = dict(jaxem.COMPILER_OPTIONS) if light_options() is not None else None
    user = jax.jit(f, compiler_options=opts)(p0, X)
    for other in (default, user):
        assert_tree_allclose(eager.params, other.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(eager.trace, other.trace, rtol=1e-12)


def test_unsupported_compiler_options_fall_back(monkeypatch):
    """An XLA that rejects an option gets its defaults, not an error; other errors still raise."""
    from jaxem import _compile

    if jax.default_backend() != "cpu":
        pytest.skip("the options are CPU-only")
    monkeypatch.setattr(_compile, "COMPILER_OPTIONS", {"xla_no_such_option_in_any_xla": True})
    monkeypatch.setattr(_compile, "_rejected", set())
    f = _compile.compiled(lambda x: x * 2.0)
    assert _compile.light_options() is not None  # not known to be rejected yet
    np.testing.assert_allclose(f(np.arange(3.0)), [0.0, 2.0, 4.0])
    assert _compile.light_options() is None  # remembered: later calls skip the options
    np.testing.assert_allclose(f(np.arange(4.0)), [0.0, 2.0, 4.0, 6.0])
    g = _compile.compiled(lambda x: x.reshape(5))
    with pytest.raises(TypeError):  # a user error is not mistaken for an unknown option
        g(np.arange(3.0))


def test_small_problems_compile_unoptimised(monkeypatch):
    """Eager calls whose arguments hold at most SMALL_PROBLEM elements compile with XLA's backend
    optimisation off, larger ones with COMPILER_OPTIONS' level (the same values: see
    test_light_compiler_options_same_fit, whose problem is small)."""
    from jaxem import _compile

    if _compile.light_options() is None:
        pytest.skip("the options are CPU-only")
    seen = []
    real = jax.jit

    def spy(fun, **kw):
        seen.append(kw.get("compiler_options"))
        return real(fun, **kw)

    monkeypatch.setattr(_compile.jax, "jit", spy)
    f = _compile.compiled(lambda x: x * 2.0)
    n = _compile.SMALL_PROBLEM
    np.testing.assert_allclose(f(np.ones(n)), 2.0)
    np.testing.assert_allclose(f(np.ones(n + 1)), 2.0)
    levels = [o["xla_backend_optimization_level"] for o in seen if o]
    assert levels == [0, jaxem.COMPILER_OPTIONS["xla_backend_optimization_level"]]


def test_precompile_concurrently_leaves_nothing_to_compile():
    """The pipeline (lower here, compile on threads) compiles each program once: the calls that
    follow run without compiling, with the right values, in the caller's precision."""
    from jaxem import _compile

    f = _compile.compiled(lambda x: jnp.sin(x) @ x)
    g = _compile.compiled(lambda x, k: jnp.cumsum(x) * k, static_argnames=("k",))
    x = np.linspace(0.0, 1.0, 7)
    compiles = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        _compile.precompile_concurrently([lambda: f.precompile(x), lambda: g.precompile(x, k=3)])
        n = len(compiles)
        assert n >= 2
        np.testing.assert_allclose(f(x), np.sin(x) @ x)
        np.testing.assert_allclose(g(x, k=3), np.cumsum(x) * 3)
        assert len(compiles) == n and f(x).dtype == x.dtype
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_eager_calls_pause_the_garbage_collector_and_restore_it():
    """While an eager call traces and compiles, Python's collector is off; afterwards it is as it
    was (on, or off if the user had turned it off), also after an error and across threads."""
    import gc
    import threading

    from jaxem import _compile

    seen = []

    def probe(x):
        seen.append(gc.isenabled())  # runs while tracing
        return x + 1.0

    def failing(x):
        raise RuntimeError("boom")

    was = gc.isenabled()
    try:
        gc.enable()
        np.testing.assert_allclose(_compile.compiled(probe)(np.ones(2)), 2.0)
        with pytest.raises(RuntimeError, match="boom"):
            _compile.compiled(failing)(np.ones(2))
        assert gc.isenabled()
        threads = [threading.Thread(target=_compile.compiled(probe), args=(np.ones(k),))
                   for k in (3, 4, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert gc.isenabled() and seen == [False] * 4
        gc.disable()
        _compile.compiled(probe)(np.ones(6))
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
