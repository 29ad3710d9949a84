"""Generalized EM: MixtureModel (log_joint -> E-step, Q, ELBO), GradientMStep (optax on Q), fisher_score."""

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_tree_allclose, blobs
from jax.scipy.special import gammaln

import jaxem

# --- a Gaussian mixture in unconstrained coordinates ------------------------------------------------


class GParams(NamedTuple):
    logits: jax.Array  # (K,)
    means: jax.Array  # (K, D)
    L_raw: jax.Array  # (K, D, D): strict lower triangle of L, log of its diagonal


def gauss_log_joint(p, x):
    log_diag = jnp.diagonal(p.L_raw, axis1=-2, axis2=-1)
    L = jnp.tril(p.L_raw, -1) + jnp.exp(log_diag)[..., None] * jnp.eye(x.shape[0], dtype=x.dtype)
    z = jax.lax.linalg.triangular_solve(L, (x - p.means)[..., None], left_side=True, lower=True)
    return (jax.nn.log_softmax(p.logits) - 0.5 * jnp.sum(z[..., 0] ** 2, -1)
            - jnp.sum(log_diag, -1) - 0.5 * x.shape[0] * jnp.log(2 * jnp.pi))


def to_unconstrained(gp):
    L = jnp.linalg.cholesky(gp.covariances)
    log_d = jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1))
    return GParams(jnp.log(gp.weights), gp.means, jnp.tril(L, -1) + log_d[..., None] * jnp.eye(L.shape[-1]))


def to_constrained(u):
    log_d = jnp.diagonal(u.L_raw, axis1=-2, axis2=-1)
    L = jnp.tril(u.L_raw, -1) + jnp.exp(log_d)[..., None] * jnp.eye(u.L_raw.shape[-1])
    return jaxem.GaussianMixtureParams(jax.nn.softmax(u.logits), u.means, L @ jnp.swapaxes(L, -1, -2))


MM = jaxem.MixtureModel(gauss_log_joint, 3)
GMM = jaxem.GaussianMixture(3, reg_covar=0.0)  # reg_covar=0: both maximise the same likelihood
ADAM = jaxem.GradientMStep(optax.adam(0.02), num_steps=20, safe=True)
LBFGS = jaxem.GradientMStep(optax.lbfgs(), num_steps=5)  # state (curvature memory) carried


@pytest.fixture(scope="module")
def problem():
    X, labels = blobs(2, n=200, d=2, k=3, spread=2.5)
    X = jnp.asarray(X)
    p0 = GMM.m_step(jax.nn.one_hot(labels, 3, dtype=X.dtype), X)  # one M-step from the true labels
    return X, p0, to_unconstrained(p0)


@jax.jit
def fit_closed_form(p, X):
    return jaxem.fit(GMM, p, X, tol=1e-12, max_iter=1000)


@jax.jit
def fit_adam(u, X):
    return jaxem.fit(MM, u, X, m_step=ADAM, tol=1e-10, max_iter=100)


# Tolerance of the log-likelihood comparisons: both fits start from the same point and climb to the
# same local maximum. The closed form stops when the mean log-likelihood moves < 1e-12, GEM when it
# moves < 1e-10; EM's linear rate here is ρ ≈ 0.1-0.4 (18-20 iterations), so the gap left is
# ≲ tol·ρ/(1-ρ) < 1e-10 (measured: 5e-13 and 6e-12). 1e-7 leaves room for the optimizer's inexact
# M-steps while still failing on any other stationary point or a wrong Q (the perturbed start is
# 0.23 below the maximum).
LL_TOL = 1e-7


def _sorted_means(means):
    means = np.asarray(means)
    return means[np.lexsort(means.T[::-1])]


def _perturbed(p0):
    """A start farther from the optimum than k-means': shifted means, tilted weights."""
    return p0._replace(means=p0.means + 0.4, weights=jnp.array([0.5, 0.3, 0.2]))


def test_gaussian_log_joint_gem_matches_closed_form_under_jit(problem):
    X, p0, _ = problem
    p1 = _perturbed(p0)
    ref = fit_closed_form(p1, X)
    res = fit_adam(to_unconstrained(p1), X)
    assert int(ref.status) == 0 and int(res.status) == 0
    assert bool(res.converged)
    assert abs(float(res.log_likelihood) - float(ref.log_likelihood)) < LL_TOL
    assert float(res.log_likelihood) - float(res.trace[0]) > 0.1  # it did move (0.23)
    # parameters: |Δθ| ~ sqrt(2·Δll / curvature) ~ 1e-4 at Δll = 1e-7.
    fitted = to_constrained(res.params)
    np.testing.assert_allclose(_sorted_means(fitted.means), _sorted_means(ref.params.means), atol=1e-3)
    np.testing.assert_allclose(np.sort(fitted.weights), np.sort(ref.params.weights), atol=1e-3)
    tr = np.asarray(res.trace)[: int(res.n_iter)]
    assert np.all(np.diff(tr) >= -1e-12)  # safe=True: monotone up to rounding


def test_gaussian_log_joint_gem_matches_closed_form_under_vmap(problem):
    X, p0, _ = problem
    p1 = _perturbed(p0)  # two starts: k-means and a perturbed one
    P = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), p0, p1)
    U = jax.vmap(to_unconstrained)(P)
    ref = jax.vmap(fit_closed_form, in_axes=(0, None))(P, X)
    res = jax.vmap(fit_adam, in_axes=(0, None))(U, X)
    assert res.log_likelihood.shape == (2,) and res.trace.shape == (2, 100)
    np.testing.assert_array_equal(np.asarray(res.status), 0)
    np.testing.assert_allclose(np.asarray(res.log_likelihood), np.asarray(ref.log_likelihood), atol=LL_TOL)
    # each member stops on its own criterion: the batched run equals the single run
    single = fit_adam(jax.tree_util.tree_map(lambda a: a[1], U), X)
    assert int(res.n_iter[1]) == int(single.n_iter)
    np.testing.assert_allclose(float(res.log_likelihood[1]), float(single.log_likelihood), rtol=1e-12)


def test_lbfgs_carried_state_matches_closed_form(problem):
    """optax.lbfgs needs value/grad/value_fn; its cached value must be refreshed every EM iteration
    (Q changes with the posterior): with a stale cache this fit stalls after 4 iterations ~1e-4 short."""
    X, p0, u0 = problem
    ref = fit_closed_form(p0, X)
    res = jax.jit(lambda u, X: jaxem.fit(MM, u, X, m_step=LBFGS, tol=1e-10, max_iter=100))(u0, X)
    assert int(res.status) == 0 and bool(res.converged)
    assert abs(float(res.log_likelihood) - float(ref.log_likelihood)) < LL_TOL
    assert int(res.n_iter) <= int(ref.n_iter) + 5  # a near-exact M-step: EM's rate


@functools.partial(jax.jit, static_argnums=0)
def derived(model, params, X, w, r_other):
    """Everything a Mixture derives from its log-joint, in one compiled call per model."""
    r, ll = model.e_step(params, X, w)
    return dict(r=r, ll=ll, log_lik=model.log_likelihood(params, X, w),
                q=model.q_function(params, r_other, X, w), elbo=jaxem.elbo(model, params, r, X, w),
                elbo_other=jaxem.elbo(model, params, jnp.full_like(r, 1 / 3), X, w),
                score=model.score_samples(params, X), proba=model.predict_proba(params, X),
                pred=model.predict(params, X))


def test_mixture_model_derived_quantities_match_gaussian_mixture(problem):
    X, p0, u0 = problem
    p = _perturbed(p0)  # not a fixed point: responsibilities are not near one-hot everywhere
    w = jnp.asarray(np.random.default_rng(0).uniform(0.0, 2.0, X.shape[0]))
    r_other = jax.nn.softmax(jnp.asarray(np.random.default_rng(1).normal(size=(X.shape[0], 3))))
    a, b = derived(MM, to_unconstrained(p), X, w, r_other), derived(GMM, p, X, w, r_other)
    for name in ("r", "proba"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-12)
    for name in ("ll", "log_lik", "q", "elbo", "elbo_other", "score"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-11)
    np.testing.assert_array_equal(a["pred"], b["pred"])
    np.testing.assert_allclose(np.sum(a["r"], 1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a["ll"], a["log_lik"], rtol=1e-12)
    # ELBO at the exact posterior equals the log-likelihood; strictly below it for another posterior
    np.testing.assert_allclose(a["elbo"], a["ll"], rtol=1e-11)
    assert float(a["elbo_other"]) < float(a["ll"]) - 1.0
    assert MM.n_parameters(u0) == 3 + 6 + 12  # every scalar of the pytree (L_raw is a full D×D)


# --- Student-t mixture on data with outliers ---------------------------------------------------------


class TParams(NamedTuple):
    logits: jax.Array
    loc: jax.Array
    log_scale: jax.Array
    log_df: jax.Array


def t_log_joint(p, x):
    D = x.shape[0]
    df = jnp.exp(p.log_df)
    delta = jnp.sum(((x - p.loc) * jnp.exp(-p.log_scale)) ** 2, -1)
    log_t = (gammaln((df + D) / 2) - gammaln(df / 2) - 0.5 * D * jnp.log(df * jnp.pi)
             - jnp.sum(p.log_scale, -1) - 0.5 * (df + D) * jnp.log1p(delta / df))
    return jax.nn.log_softmax(p.logits) + log_t


TM = jaxem.MixtureModel(t_log_joint, 3)
DIAG = jaxem.GaussianMixture(3, covariance_type="diag")
CENTERS = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])


@pytest.fixture(scope="module")
def outliers():
    """Three t(3)-noise clusters (300 rows) + 30 uniform outliers on [-15, 15]²; a shared k-means start."""
    rng = np.random.default_rng(0)
    X = CENTERS[rng.integers(0, 3, 300)] + 0.8 * rng.standard_t(3, size=(300, 2))
    X = jnp.asarray(np.concatenate([X, rng.uniform(-15, 15, size=(30, 2))]))
    guess = jnp.array([[-3.0, -1.0], [1.0, 3.0], [3.0, 1.0]])  # rough centres -> hard assignment
    r0 = jax.nn.one_hot(jnp.argmin(jnp.sum((X[:, None] - guess) ** 2, -1), 1), 3, dtype=X.dtype)
    p0 = DIAG.m_step(r0, X)
    t0 = TParams(jnp.log(p0.weights), p0.means, 0.5 * jnp.log(p0.covariances), jnp.full(3, jnp.log(5.0)))
    return X, p0, t0


@functools.partial(jax.jit, static_argnames="safe")
def fit_t(t0, X, lr, safe):
    gm = jaxem.GradientMStep(optax.adam(lr), num_steps=20, safe=safe)  # lr traced: one compile per mode
    return jaxem.fit(TM, t0, X, m_step=gm, tol=1e-8, max_iter=100)


def _location_error(est):
    est = np.asarray(est)
    return min(np.max(np.linalg.norm(est[list(p)] - CENTERS, axis=1)) for p in itertools.permutations(range(3)))


def _trace(res):
    return np.asarray(res.trace)[: int(res.n_iter)]


def test_student_t_beats_gaussian_on_outliers(outliers):
    X, p0, t0 = outliers
    g = jax.jit(lambda p, X: jaxem.fit(DIAG, p, X, tol=1e-8, max_iter=500))(p0, X)
    t = fit_t(t0, X, 0.05, True)
    assert int(t.status) == 0 and bool(t.converged)
    # measured: -4.633 (t) vs -5.259 (Gaussian) per sample; 0.2 is a third of that margin
    assert float(t.log_likelihood) > float(g.log_likelihood) + 0.2
    err_t, err_g = _location_error(t.params.loc), _location_error(g.params.means)
    assert err_t < 0.3 and err_t < 0.6 * err_g  # measured: 0.20 vs 0.46
    df = np.exp(np.asarray(t.params.log_df))
    assert np.all(df < 10.0)  # heavy tails learned (data: t(3) noise + outliers)
    assert np.all(np.diff(_trace(t)) >= -1e-12)  # safe mode: never decreases


def test_overshoot_is_reported_and_safe_mode_keeps_trace_monotone(outliers):
    X, _, t0 = outliers
    bad = fit_t(t0, X, 5.0, False)  # Adam with lr=5 on log-scales/log-dof: steps far past the maximum
    assert int(bad.status) & jaxem.Status.Q_DECREASED
    assert np.min(np.diff(_trace(bad))) < -1e-3  # and the log-likelihood really went down
    safe = fit_t(t0, X, 5.0, True)
    assert int(safe.status) & jaxem.Status.Q_DECREASED  # still reported...
    tr = _trace(safe)
    assert np.all(np.diff(tr) >= -1e-12)  # ...but every rejected step left the trace monotone
    assert float(safe.log_likelihood) >= float(tr[0])
    assert "safe=True" in jaxem.describe_status(bad.status)
    ok = fit_t(t0, X, 0.05, False)  # a sane learning rate does not trigger the flag
    assert not int(ok.status) & jaxem.Status.Q_DECREASED


# --- Fisher's identity -------------------------------------------------------------------------------


fisher = jax.jit(jaxem.fisher_score, static_argnums=0)
grad_log_lik = jax.jit(lambda model, p, X, w: jax.grad(model.log_likelihood)(p, X, w), static_argnums=0)


def test_fisher_identity_mixture_model(problem):
    X, _, u0 = problem
    u = jax.tree_util.tree_map(lambda a: a + 0.1, u0)  # away from any stationary point
    w = jnp.linspace(0.0, 2.0, X.shape[0])
    score, grad = fisher(MM, u, X, w), grad_log_lik(MM, u, X, w)
    assert float(optax.tree.norm(grad)) > 1.0  # not trivially zero
    assert_tree_allclose(score, grad, rtol=1e-9, atol=1e-9)


def test_fisher_identity_gaussian_mixture(problem):
    X, p0, _ = problem
    p = p0._replace(means=p0.means + 0.1)
    w = jnp.linspace(0.0, 2.0, X.shape[0])
    score, grad = fisher(GMM, p, X, w), grad_log_lik(GMM, p, X, w)  # grad: streamed code path
    assert float(optax.tree.norm(grad.means)) > 1.0
    assert_tree_allclose(score, grad, rtol=1e-9, atol=1e-9)


def test_fisher_score_vanishes_at_em_fixed_point(problem):
    X, p0, _ = problem
    ref = fit_closed_form(p0, X)
    score = fisher(GMM, ref.params, X, jnp.ones(X.shape[0]))
    assert float(optax.tree.norm(score.means)) < 1e-4  # ∇ log p = 0 at the MLE (means are free)


# --- GradientMStep semantics against a hand-written loop ---------------------------------------------


@jax.jit
def _grad_neg_q(p, X, w, r):  # ∇ of -Σ_n w_n Σ_k r_nk log_joint(p, x_n)_k / Σ_n w_n, written out
    lj = jax.vmap(gauss_log_joint, (None, 0))
    return jax.grad(lambda q: -jnp.sum(w[:, None] * r * lj(q, X)) / jnp.sum(w))(p)


@pytest.mark.parametrize("reset_state", [False, True])
def test_gradient_m_step_matches_reference_loop(problem, reset_state):
    """fit(..., GradientMStep(adam, 3), tol=0, max_iter=4) against a Python loop written from the
    definition: E-step, then 3 Adam steps on -Q/Σw with the responsibilities fixed, state carried."""
    X, _, u0 = problem
    w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, X.shape[0]))
    opt = optax.adam(0.05)
    gm = jaxem.GradientMStep(opt, num_steps=3, reset_state=reset_state)
    res = jaxem.fit(MM, u0, X, weights=w, m_step=gm, tol=0.0, max_iter=4)

    p, state, trace = u0, opt.init(u0), []
    wn = np.asarray(w)
    for _ in range(4):
        lj = np.asarray(jax.vmap(gauss_log_joint, (None, 0))(p, X))
        m = lj.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(lj - m).sum(1))
        r = np.exp(lj - lse[:, None])
        trace.append(np.sum(wn * lse) / np.sum(wn))
        if reset_state:
            state = opt.init(p)
        for _ in range(3):
            upd, state = opt.update(_grad_neg_q(p, X, wn, r), state, p)
            p = optax.apply_updates(p, upd)
    np.testing.assert_allclose(np.asarray(res.trace), trace, rtol=1e-12)
    assert_tree_allclose(res.params, p, rtol=1e-9, atol=1e-12)


# --- closed-form models, static configuration, dtype, errors -----------------------------------------


def test_gradient_m_step_on_gaussian_mixture_means_only(problem):
    """On a closed-form model, restrict the optimizer to its unconstrained leaf (means): weights and
    covariances stay put, the trace rises, and the fixed point satisfies the means' stationarity
    μ_k = Σ_n r_nk x_n / Σ_n r_nk (the exact conditional M-step)."""
    X, p0, _ = problem
    labels = jaxem.GaussianMixtureParams("frozen", "free", "frozen")
    opt = optax.multi_transform({"free": optax.sgd(1.0), "frozen": optax.set_to_zero()}, labels)
    gm = jaxem.GradientMStep(opt, num_steps=20)
    res = jax.jit(lambda p, X: jaxem.fit(GMM, p, X, m_step=gm, tol=1e-12, max_iter=100))(p0, X)
    assert int(res.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0
    np.testing.assert_array_equal(res.params.weights, p0.weights)
    np.testing.assert_array_equal(res.params.covariances, p0.covariances)
    tr = _trace(res)
    assert np.all(np.diff(tr) >= -1e-12) and tr[-1] > tr[0]
    r, _ = GMM.e_step(res.params, X)
    np.testing.assert_allclose(res.params.means, (r.T @ X) / jnp.sum(r, 0)[:, None], atol=1e-5)


def _counting(counter):
    def log_joint(p, x):
        counter.append(1)  # runs only while tracing
        return gauss_log_joint(p, x)

    return log_joint


def test_static_config_no_retrace_and_float32(problem):
    X, _, u0 = problem
    X32 = X.astype(jnp.float32)
    u32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), u0)
    traces = []
    model = jaxem.MixtureModel(_counting(traces), 3, n_features=2)
    opt = optax.sgd(0.1)
    gm = jaxem.GradientMStep(opt, num_steps=2, safe=True)
    assert hash(gm) == hash(jaxem.GradientMStep(opt, num_steps=2, safe=True))
    assert gm == jaxem.GradientMStep(opt, num_steps=2, safe=True) != jaxem.GradientMStep(opt, 3)
    assert model == jaxem.MixtureModel(model.log_joint, 3, n_features=2) != MM
    fit = jax.jit(jaxem.fit, static_argnames=("model", "m_step", "max_iter"))
    res = fit(model, u32, X32, m_step=gm, max_iter=5, tol=0.0)
    n = len(traces)
    assert n > 0
    u_other = jax.tree_util.tree_map(lambda a: a + 0.01, u32)
    fit(model, u_other, X32, m_step=jaxem.GradientMStep(opt, num_steps=2, safe=True), max_iter=5, tol=0.0)
    assert len(traces) == n  # equal model and step, new values: no retrace
    closure = jax.jit(lambda u, X: jaxem.fit(model, u, X, m_step=gm, max_iter=5, tol=0.0))
    res_c = closure(u32, X32)
    n = len(traces)
    closure(u_other, X32)
    assert len(traces) == n  # the closure form: the second call does not retrace either
    assert_tree_allclose(res_c.params, res.params, rtol=1e-6)
    assert res.params.means.dtype == jnp.float32 and res.log_likelihood.dtype == jnp.float32
    assert res.trace.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(res.trace)))
    with pytest.raises(ValueError, match="3 features but the parameters were made for 2"):
        jaxem.fit(model, u32, jnp.ones((10, 3), jnp.float32), m_step=gm)


def test_bad_input_messages(problem):
    X, _, u0 = problem
    with pytest.raises(NotImplementedError, match="GradientMStep"):
        jaxem.fit(MM, u0, X)  # no closed form: the error says what to use
    bad = jaxem.MixtureModel(lambda p, x: gauss_log_joint(p, x)[:2], 3)
    with pytest.raises(ValueError, match=r"must return shape \(n_components,\) = \(3,\)"):
        bad.e_step(u0, X)
    with pytest.raises(ValueError, match="num_steps"):
        jaxem.GradientMStep(optax.adam(0.1), num_steps=0)
    with pytest.raises(ValueError, match="optax.GradientTransformation"):
        jaxem.GradientMStep("adam")
    with pytest.raises(ValueError, match="n_components"):
        jaxem.MixtureModel(gauss_log_joint, 0)
    with pytest.raises(NotImplementedError, match="sample"):
        MM.sample(jax.random.key(0), u0, 5)


@pytest.mark.slow
def test_example_runs(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "student_t_mixture.py"
    spec = importlib.util.spec_from_file_location("student_t_mixture", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "t.png"
    mod.main(str(out))
    assert out.stat().st_size > 10_000
