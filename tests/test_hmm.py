"""Hidden Markov models (issue 16): Baum-Welch against a NumPy reference written from the equations
and against hmmlearn, Viterbi against brute force, sequential == parallel E-step, statistics,
gradients, vmap, long sequences, bad input."""

import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem

sys.path.insert(0, os.path.dirname(__file__))
from _hmm_reference import baum_welch_step, forward_backward as np_forward_backward  # noqa: E402

K, D, T, S = 3, 2, 24, 4
LENGTHS = np.array([24, 17, 9, 20])
WEIGHTS = np.array([1.0, 2.5, 0.5, 1.5])
COV_TYPES = ("full", "diag", "spherical", "tied")


def _sample(model, params, seed=0):
    X = np.asarray(model.sample(jax.random.key(seed), params, T, S))
    X = X.copy().astype(float) if X.dtype.kind == "f" else X.copy()
    return X


def _gaussian_params(ct, rng):
    means = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
    base = np.array([[1.0, 0.3], [0.3, 0.8]])
    cov = {"full": np.stack([base * s for s in (1.0, 0.5, 1.5)]), "diag": rng.uniform(0.5, 1.5, (K, D)),
           "spherical": np.array([1.0, 0.6, 1.4]), "tied": base}[ct]
    return means, cov


def _probs(rng):
    pi = rng.dirichlet(np.ones(K) * 3)
    A = 0.6 * np.eye(K) + 0.4 * rng.dirichlet(np.ones(K), K)
    return pi, A


def _problem(family, ct="full", seed=0):
    """(model, true params, X (S, T, ...)) with padding beyond LENGTHS filled with garbage."""
    rng = np.random.default_rng(seed)
    pi, A = _probs(rng)
    if family == "gaussian":
        model = jaxem.GaussianHMM(K, ct, reg_covar=0.0)
        params = jaxem.GaussianHMMParams(pi, A, *_gaussian_params(ct, rng))
    elif family == "poisson":
        model = jaxem.PoissonHMM(K)
        params = jaxem.PoissonHMMParams(pi, A, np.array([[1.0, 6.0], [4.0, 1.0], [9.0, 9.0]]))
    else:
        model = jaxem.CategoricalHMM(K, 4)
        params = jaxem.CategoricalHMMParams(pi, A, rng.dirichlet(np.ones(4) * 0.7, K))
    params = jax.tree.map(jnp.asarray, params)
    X = _sample(model, params, seed)
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    X[pad] = 7 if family == "categorical" else 1e3  # padding never matters
    return model, params, X


def _seqs(X):
    return [X[s, :LENGTHS[s]] for s in range(S)]


def _perturb(params, family, rng):
    """A start away from the truth (the reference and jaxem start from it)."""
    pi, A = _probs(rng)
    if family == "gaussian":
        return params._replace(initial_probs=pi, transition_matrix=A,
                               means=np.asarray(params.means) + rng.normal(0, 0.5, params.means.shape))
    if family == "poisson":
        return params._replace(initial_probs=pi, transition_matrix=A,
                               rates=np.asarray(params.rates) * rng.uniform(0.6, 1.4, params.rates.shape))
    return params._replace(initial_probs=pi, transition_matrix=A,
                           emission_probs=rng.dirichlet(np.ones(4), K))


# Every emission family in CI; the spherical and tied covariance variants with -m slow.
_slow = pytest.mark.slow
CASES = [("gaussian", "full"), ("gaussian", "diag"),
         pytest.param("gaussian", "spherical", marks=_slow),
         pytest.param("gaussian", "tied", marks=_slow), ("poisson", None), ("categorical", None)]


@pytest.mark.parametrize("family,ct", CASES)
def test_baum_welch_matches_numpy_reference_ragged_weighted(family, ct):
    model, truth, X = _problem(family, ct or "full")
    start = jax.tree.map(jnp.asarray, _perturb(truth, family, np.random.default_rng(1)))
    n_iter = 4
    res = jaxem.fit(model, start, X, lengths=LENGTHS, weights=WEIGHTS, max_iter=n_iter, tol=0.0)
    assert int(res.status) == 0, jaxem.describe_status(res.status)
    ref = tuple(np.asarray(a) for a in start)
    total = float(WEIGHTS @ LENGTHS)
    for i in range(n_iter):
        ref, ll = baum_welch_step(family, ref, _seqs(X), WEIGHTS, ct)
        np.testing.assert_allclose(res.trace[i], ll / total, rtol=1e-10)
    for a, b in zip(res.params, ref):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    # fit's final log-likelihood is at the returned params
    _, ll = baum_welch_step(family, ref, _seqs(X), WEIGHTS, ct)
    np.testing.assert_allclose(res.log_likelihood, ll / total, rtol=1e-10)


def _hmmlearn_model(family, ct, start, n_iter):
    hmm = pytest.importorskip("hmmlearn.hmm")
    kw = dict(n_components=K, n_iter=n_iter, tol=-np.inf, init_params="", params="stmc"
              if family == "gaussian" else "ste", implementation="log")
    if family == "gaussian":
        m = hmm.GaussianHMM(covariance_type=ct, covars_prior=0.0, covars_weight=1.0,
                            means_prior=0.0, means_weight=0.0, **kw)
        m.means_, m.covars_ = np.asarray(start.means), np.asarray(start.covariances)
    elif family == "poisson":
        m = hmm.PoissonHMM(lambdas_prior=0.0, lambdas_weight=0.0, **{**kw, "params": "stl"})
        m.lambdas_ = np.asarray(start.rates)
    else:
        m = hmm.CategoricalHMM(n_features=4, emissionprob_prior=1.0, **kw)
        m.emissionprob_ = np.asarray(start.emission_probs)
    m.startprob_, m.transmat_ = np.asarray(start.initial_probs), np.asarray(start.transition_matrix)
    return m


@pytest.mark.parametrize("family,ct", CASES)
def test_baum_welch_matches_hmmlearn(family, ct):
    model, truth, X = _problem(family, ct or "full", seed=2)
    start = jax.tree.map(jnp.asarray, _perturb(truth, family, np.random.default_rng(3)))
    n_iter = 4
    hm = _hmmlearn_model(family, ct, start, n_iter)
    Xc = np.concatenate(_seqs(X))
    hm.fit(Xc.reshape(-1, 1) if family == "categorical" else Xc, LENGTHS)
    res = jaxem.fit(model, start, X, lengths=LENGTHS, max_iter=n_iter, tol=0.0)
    np.testing.assert_allclose(np.asarray(res.trace) * LENGTHS.sum(), hm.monitor_.history,
                               rtol=1e-9)
    np.testing.assert_allclose(res.params.initial_probs, hm.startprob_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(res.params.transition_matrix, hm.transmat_, rtol=1e-6, atol=1e-10)
    if family == "gaussian":
        np.testing.assert_allclose(res.params.means, hm.means_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(res.params.covariances, hm._covars_ if ct != "spherical"
                                   else hm._covars_[:, 0], rtol=1e-6, atol=1e-9)
    elif family == "poisson":
        np.testing.assert_allclose(res.params.rates, hm.lambdas_, rtol=1e-6)
    else:
        np.testing.assert_allclose(res.params.emission_probs, hm.emissionprob_, rtol=1e-6,
                                   atol=1e-10)
    # model selection: hmmlearn's parameter count, BIC and AIC at (almost) the same parameters
    n_fit = sum(hm._get_n_fit_scalars_per_param()[c] for c in hm.params)
    assert model.n_parameters(res.params) == n_fit
    Xh = Xc.reshape(-1, 1) if family == "categorical" else Xc
    np.testing.assert_allclose(model.bic(res.params, X, LENGTHS), hm.bic(Xh, LENGTHS), rtol=1e-6)
    np.testing.assert_allclose(model.aic(res.params, X, LENGTHS), hm.aic(Xh, LENGTHS), rtol=1e-6)


def test_forward_backward_sequential_and_parallel_match_reference():
    from jaxem.models.hmm._inference import forward_backward, forward_backward_parallel

    rng = np.random.default_rng(0)
    pi, A = _probs(rng)
    B = rng.uniform(0.05, 1.0, (9, K))
    for L in (9, 6, 1):
        g, xi, ll = np_forward_backward(pi, A, B[:L])
        mask = jnp.arange(9) < L
        for fb in (jax.jit(forward_backward), jax.jit(forward_backward_parallel)):
            g2, xi2, ll2 = fb(jnp.log(pi), jnp.asarray(A), jnp.log(B), mask)
            np.testing.assert_allclose(g2[:L], g, atol=1e-12)
            np.testing.assert_allclose(xi2, xi, atol=1e-12)
            np.testing.assert_allclose(ll2, ll, rtol=1e-12)


@pytest.mark.parametrize("family", ["gaussian", pytest.param("categorical", marks=_slow)])
def test_sequential_equals_parallel_statistics(family):
    model, params, X = _problem(family, "diag")
    par = type(model)(**{**model.__dict__, "inference": "parallel"})
    seq = type(model)(**{**model.__dict__, "inference": "sequential"})
    a = seq.sufficient_statistics(params, X, WEIGHTS, LENGTHS)
    b = par.sufficient_statistics(params, X, WEIGHTS, LENGTHS)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-10), a, b)


def test_viterbi_matches_brute_force():
    rng = np.random.default_rng(4)
    model, params, X = _problem("gaussian", "full", seed=4)
    Tn = 6
    Xs = X[:2, :Tn]
    lengths = np.array([6, 4])
    paths = np.asarray(model.predict(params, Xs, lengths=lengths))
    pi, A = np.asarray(params.initial_probs), np.asarray(params.transition_matrix)
    from _hmm_reference import gaussian_densities
    for s, L in enumerate(lengths):
        B = gaussian_densities(Xs[s, :L], np.asarray(params.means), np.asarray(params.covariances),
                               "full")
        best = max(itertools.product(range(K), repeat=int(L)),
                   key=lambda z: np.log(pi[z[0]]) + sum(np.log(A[z[t - 1], z[t]]) for t in range(1, L))
                   + sum(np.log(B[t, z[t]]) for t in range(L)))
        np.testing.assert_array_equal(paths[s, :L], best)
        assert np.all(paths[s, L:] == -1)
    del rng


def test_statistics_additive_over_sequences_and_padding_inert():
    model, params, X = _problem("gaussian", "full")
    full = model.sufficient_statistics(params, X, WEIGHTS, LENGTHS)
    parts = [model.sufficient_statistics(params, X[i:i + 2], WEIGHTS[i:i + 2], LENGTHS[i:i + 2])
             for i in (0, 2)]
    summed = jax.tree.map(jnp.add, *parts)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-10), full, summed)
    np.testing.assert_allclose(full.total_weight, WEIGHTS @ LENGTHS)
    # maximize ∘ statistics is fit's iteration (the fit compiled by the NumPy-reference test)
    res = jaxem.fit(model, params, X, lengths=LENGTHS, weights=WEIGHTS, max_iter=4, tol=0.0)
    p = params
    for _ in range(4):
        p = model.maximize(model.sufficient_statistics(p, X, WEIGHTS, LENGTHS), p)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-9), res.params, p)


def test_trace_monotone_and_init_fit_recovers_states():
    model, truth, _ = _problem("gaussian", "full")
    X, Z = model.sample(jax.random.key(5), truth, 200, 3, return_states=True)
    params = model.init(jax.random.key(0), X)
    res = jaxem.fit(model, params, X, max_iter=60, tol=1e-8)
    tr = np.asarray(res.trace)[: int(res.n_iter)]
    assert np.all(np.diff(tr) >= -1e-10)
    path = np.asarray(model.predict(res.params, X))
    # accuracy up to a relabelling of the states
    acc = max(np.mean(np.asarray(perm)[path] == np.asarray(Z))
              for perm in itertools.permutations(range(K)))
    assert acc > 0.95


def test_vmapped_fits_equal_single_fits():
    model, truth, X = _problem("poisson")
    starts = [jax.tree.map(jnp.asarray, _perturb(truth, "poisson", np.random.default_rng(s)))
              for s in (1, 2)]
    P = jax.tree.map(lambda *a: jnp.stack(a), *starts)
    Xs = jnp.stack([X, X[::-1]])
    Ls = jnp.stack([LENGTHS, LENGTHS[::-1]])
    f = lambda p, x, l: jaxem.fit(model, p, x, lengths=l, weights=WEIGHTS, max_iter=30, tol=1e-6)
    batch = jax.vmap(f)(P, Xs, Ls)
    for i in range(2):
        single = f(starts[i], Xs[i], Ls[i])
        assert int(batch.n_iter[i]) == int(single.n_iter)
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u[i], v, rtol=1e-9, atol=1e-12),
                     batch.params, single.params)


_SMALL_OPTS = dict(jaxem.COMPILER_OPTIONS, xla_backend_optimization_level=0)


def _gradient_problem():
    model = jaxem.GaussianHMM(2, "diag", reg_covar=1e-6)
    rng = np.random.default_rng(0)
    z = (np.arange(40) // 10) % 2
    X = np.zeros((2, 40, 1))
    X[:, :, 0] = np.where(z == 1, 4.0, 0.0) + rng.normal(0, 0.5, (2, 40))
    lengths = np.array([40, 30])
    start = jaxem.GaussianHMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.8, 0.2], [0.2, 0.8]]),
                                    jnp.array([[0.5], [3.5]]), jnp.ones((2, 1)))

    def loss(X):
        r = jaxem.fit(model, start, X, lengths=lengths, max_iter=300, tol=1e-13)
        p = r.params
        return jnp.sum(p.means ** 2) + jnp.sum(p.transition_matrix[:, 0]) + r.log_likelihood

    return X, loss


def test_implicit_derivative_matches_finite_differences_and_ignores_padding():
    """Forward mode (jax.jvp) through the implicit adjoint, against central differences."""
    X, loss = _gradient_problem()
    rng = np.random.default_rng(1)
    V = rng.normal(size=X.shape)
    V[1, 30:] = 0.0
    # one compiled program (jaxem's light options, a small problem) for the loss and its JVP
    jvp = jax.jit(lambda X, V: jax.jvp(loss, (X,), (V,)), compiler_options=_SMALL_OPTS)
    _, d = jvp(X, V)
    eps = 1e-5
    fd = (jvp(X + eps * V, V)[0] - jvp(X - eps * V, V)[0]) / (2 * eps)
    np.testing.assert_allclose(d, fd, rtol=1e-5)
    P = np.zeros_like(X)
    P[1, 30:] = 1.0  # a tangent on the padding only
    assert float(jvp(X, P)[1]) == 0.0


@pytest.mark.slow
def test_implicit_gradient_matches_finite_differences_and_ignores_padding():
    """Reverse mode (jax.grad) through the implicit adjoint."""
    X, loss = _gradient_problem()
    g = np.asarray(jax.grad(loss)(jnp.asarray(X)))
    assert np.all(g[1, 30:] == 0.0)  # padding never influences gradients
    eps = 1e-5
    for idx in [(0, 3, 0), (1, 12, 0)]:
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += eps
        Xm[idx] -= eps
        fd = (loss(Xp) - loss(Xm)) / (2 * eps)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-8)


def test_long_sequence_log_space_no_underflow():
    model, params, _ = _problem("poisson")
    X = model.sample(jax.random.key(0), params, 20_000, 1)[0]
    ll_seq = model.score_samples(params, X)
    assert np.isfinite(ll_seq) and ll_seq < -20_000  # p(x) itself underflows any float
    x = np.asarray(X)
    from scipy.special import gammaln

    lam = np.asarray(params.rates)
    B = np.exp(x @ np.log(lam).T - lam.sum(1) - gammaln(x + 1).sum(1)[:, None])
    ref = np_forward_backward(np.asarray(params.initial_probs), np.asarray(params.transition_matrix),
                              B)[2]
    np.testing.assert_allclose(ll_seq, ref, rtol=1e-10)
    g = model.predict_proba(params, X)
    assert np.all(np.isfinite(g)) and np.allclose(np.sum(g, 1), 1.0)


def test_bad_input_raises_or_flags():
    cat = jaxem.CategoricalHMM(2, 3)
    p = cat.init(jax.random.key(0), np.array([[0, 1, 2, 1]]))
    with pytest.raises(ValueError, match="n_categories"):
        jaxem.fit(cat, p, np.array([[0, 1, 3, 1]]))
    with pytest.raises(ValueError, match="n_categories"):
        jaxem.fit(cat, p, np.array([[0, 1.5, 2, 1]]))
    # out-of-range symbols in the padding are fine
    jaxem.fit(cat, p, np.array([[0, 1, 2, 9]]), lengths=np.array([3]), max_iter=2)
    with pytest.raises(ValueError, match="lengths"):
        jaxem.fit(cat, p, np.array([[0, 1, 2, 1]]), lengths=np.array([5]))
    with pytest.raises(ValueError, match="lengths"):
        jaxem.fit(cat, p, np.array([[0, 1, 2, 1]]), lengths=np.array([0]))
    pois = jaxem.PoissonHMM(2)
    pp = jaxem.PoissonHMMParams(jnp.array([0.5, 0.5]), jnp.full((2, 2), 0.5), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        jaxem.fit(pois, pp, -np.ones((1, 5, 1)))
    Xn = np.ones((2, 5, 1))
    Xn[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxem.fit(pois, pp, Xn)
    with pytest.raises(ValueError, match="weights"):
        jaxem.fit(pois, pp, np.ones((2, 5, 1)), weights=np.array([1.0, -1.0]))
    # under jit: status, never silently NaN parameters
    f = jax.jit(lambda x, l: jaxem.fit(pois, pp, x, lengths=l, max_iter=3))
    bad = [f(Xn, jnp.array([5, 5])), f(-np.ones((2, 5, 1)), jnp.array([5, 5])),
           f(np.ones((2, 5, 1)), jnp.array([6, 5]))]
    for r in bad:
        assert int(r.status) & int(jaxem.Status.INVALID_INPUT)
        assert np.all(np.isfinite(r.params.rates))
    ok = f(Xn, jnp.array([2, 5]))  # the NaN is padding
    assert int(ok.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0


def test_generic_hmm_gradient_m_step_reaches_gaussian_hmm_fit():
    optax = pytest.importorskip("optax")
    gm = jaxem.GaussianHMM(2, "diag", reg_covar=0.0)
    truth = jaxem.GaussianHMMParams(jnp.array([0.6, 0.4]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                                    jnp.array([[-2.0], [2.0]]), jnp.array([[1.0], [0.5]]))
    X = gm.sample(jax.random.key(0), truth, 100, 3)
    lengths = jnp.array([100, 80, 60])

    def log_emission(e, x):  # diagonal Gaussian in (loc, log-std)
        return jnp.sum(-0.5 * (x - e["loc"]) ** 2 * jnp.exp(-2 * e["log_std"]) - e["log_std"]
                       - 0.5 * jnp.log(2 * jnp.pi), -1)

    model = jaxem.HMM(log_emission, 2)
    start = jaxem.HMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.7, 0.3], [0.3, 0.7]]),
                            {"loc": jnp.array([[-1.0], [1.0]]), "log_std": jnp.zeros((2, 1))})
    gstart = jaxem.GaussianHMMParams(start.initial_probs, start.transition_matrix,
                                     start.emission["loc"], jnp.ones((2, 1)))
    np.testing.assert_allclose(model.log_likelihood(start, X, lengths=lengths),
                               gm.log_likelihood(gstart, X, lengths=lengths), rtol=1e-12)
    r = jaxem.fit(model, start, X, lengths=lengths, max_iter=200, tol=1e-7,
                  m_step=jaxem.GradientMStep(optax.adam(0.05), num_steps=20))
    g = jaxem.fit(gm, gstart, X, lengths=lengths, max_iter=200, tol=1e-9)
    assert int(r.status) == 0 and int(g.status) == 0
    np.testing.assert_allclose(r.log_likelihood, g.log_likelihood, atol=1e-6)
    np.testing.assert_allclose(r.params.transition_matrix, g.params.transition_matrix, atol=1e-4)
    np.testing.assert_allclose(r.params.emission["loc"], g.params.means, atol=1e-3)
    np.testing.assert_allclose(jnp.exp(2 * r.params.emission["log_std"]), g.params.covariances,
                               atol=1e-3)


def test_scaled_route_falls_back_to_log_space_on_underflow():
    # Only state 0 is reachable (π = [1, 0], A = I), but x_2 = 40 is 800 nats likelier under state
    # 1: Rabiner's scaled recursion underflows (s_t = 0); the log-space recursion is exact.
    model = jaxem.GaussianHMM(2, "spherical", inference="sequential")
    p = jaxem.GaussianHMMParams(jnp.array([1.0, 0.0]), jnp.eye(2), jnp.array([[0.0], [40.0]]),
                                jnp.array([1.0, 1.0]))
    x = np.array([[0.0], [40.0], [0.5]])
    expected = np.sum(-0.5 * x[:, 0] ** 2 - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(model.score_samples(p, x), expected, rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(p, x)[:, 0], 1.0)


@pytest.mark.slow
def test_example_hmm_regimes_recovers_states(tmp_path):
    """examples/hmm_regimes.py runs, saves its PNG and recovers >= 90% of the true regimes."""
    import pathlib
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(root / "examples" / "hmm_regimes.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "hmm_regimes.png").exists()
    line = next(l for l in proc.stdout.splitlines() if l.startswith("state recovery accuracy"))
    assert float(line.split(":")[1]) >= 0.9, proc.stdout
    assert "status: ok" in proc.stdout


def test_gaussian_moment_route_matches_residuals_far_from_origin_and_falls_back():
    """The statistics pass's float64 full-covariance route (log-densities and statistics from the
    frames' moment features about the first frame) agrees with the residual route, also for data
    1e7 from the origin; a state thousands of standard deviations from that frame (rounding bound
    exceeded) takes the residual route itself."""
    model = jaxem.GaussianHMM(K, "full", reg_covar=0.0)
    rng = np.random.default_rng(7)
    means, cov = _gaussian_params("full", rng)
    frames = rng.normal(size=(60, D)) * 1.5 + means[rng.integers(0, K, 60)]
    rw = rng.dirichlet(np.ones(K), 60)

    def routes(p, x, rw):
        st = model._emission_statistics(p, x, rw)
        ref = model._gmm._stats(rw, x[:, None, :] - p.means[None])  # residuals about the means
        return (model._log_emission_time_major(p, x), model._log_emission_fn(p)(x), st,
                (ref.nk, ref.sy, ref.syy))

    f = jax.jit(routes, compiler_options=dict(jaxem.COMPILER_OPTIONS))
    for shift, far in ((0.0, False), (1e7, False), (0.0, True)):
        c = cov.copy()
        if far:
            c[2] = c[2] * 1e-8  # state 2: |x_0 - μ_2| ~ 3e4 standard deviations
        p = jaxem.GaussianHMMParams(jnp.full(K, 1 / K), jnp.eye(K), jnp.asarray(means + shift),
                                    jnp.asarray(c))
        fast, resid, st, (nk, sy, syy) = f(p, jnp.asarray(frames + shift), jnp.asarray(rw))
        if far:
            np.testing.assert_array_equal(fast, resid)
        else:  # against residuals x - μ_k formed in NumPy (XLA's whitening forms x P - μ P)
            x = frames + shift
            exact = np.stack([-0.5 * (np.sum((x - m) * np.linalg.solve(ck, (x - m).T).T, 1)
                                      + D * np.log(2 * np.pi) + np.linalg.slogdet(ck)[1])
                              for m, ck in zip(means + shift, c)], 1)
            np.testing.assert_allclose(fast, exact, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(st.counts, nk, rtol=1e-12)
        np.testing.assert_allclose(st.sum_x, sy, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(st.sum_xx, syy, rtol=1e-9, atol=1e-8)


@pytest.mark.slow  # ~60 s of compiles (two fits' JVP programs)
def test_generic_hmm_implicit_derivative_equals_closed_form_hmm():
    """jaxem.HMM's implicit adjoint solves π - T_π(θ), A - T_A(θ) (closed-form updates on the
    simplex, where the likelihood's gradient does not vanish) with the emission's stationarity:
    its forward derivative equals GaussianHMM's (closed-form T) at the same fixed point. With the
    likelihood's gradient in every leaf it was 1.6% off here."""
    optax = pytest.importorskip("optax")
    gm = jaxem.GaussianHMM(2, "diag", reg_covar=0.0)
    truth = jaxem.GaussianHMMParams(jnp.array([0.6, 0.4]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                                    jnp.array([[-2.0], [2.0]]), jnp.array([[1.0], [0.5]]))
    X = gm.sample(jax.random.key(0), truth, 60, 2)
    lengths = jnp.array([60, 45])

    def log_emission(e, x):  # diagonal Gaussian in (loc, log-std)
        return jnp.sum(-0.5 * (x - e["loc"]) ** 2 * jnp.exp(-2 * e["log_std"]) - e["log_std"]
                       - 0.5 * jnp.log(2 * jnp.pi), -1)

    model = jaxem.HMM(log_emission, 2)
    g = jaxem.fit(gm, truth, X, lengths=lengths, max_iter=1000, tol=1e-14).params
    start = jaxem.HMMParams(g.initial_probs, g.transition_matrix,  # the fixed point itself
                            {"loc": g.means, "log_std": 0.5 * jnp.log(g.covariances)})
    m_step = jaxem.GradientMStep(optax.sgd(0.01), num_steps=2)
    c = jnp.array([1.0, 2.0])

    def loss_g(X):
        p = jaxem.fit(gm, g, X, lengths=lengths, max_iter=1000, tol=1e-14).params
        return p.transition_matrix[:, 0] @ c + jnp.sum(p.means) + p.initial_probs[0]

    def loss_h(X):
        p = jaxem.fit(model, start, X, lengths=lengths, max_iter=2, tol=0.0,
                      m_step=m_step).params
        return p.transition_matrix[:, 0] @ c + jnp.sum(p.emission["loc"]) + p.initial_probs[0]

    np.testing.assert_allclose(loss_h(X), loss_g(X), rtol=1e-8)
    V = jax.random.normal(jax.random.key(3), X.shape)
    np.testing.assert_allclose(jax.jvp(loss_h, (X,), (V,))[1], jax.jvp(loss_g, (X,), (V,))[1],
                               rtol=1e-5)
