"""Issue 15 (reliability), the API half: no silent wrong answers from the estimator, the generalized-EM
M-step, the threaded batch driver, and argument validation."""

import contextlib
import io
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxem
from helpers import blobs

X2 = blobs(seed=0, n=120, d=2, k=2)[0]


# --- GradientMStep(safe=True): an M-step that rejects every step -----------------------------------
def _log_joint_1d(p, x):
    return jax.nn.log_softmax(p["logits"]) + jax.scipy.stats.norm.logpdf(
        x[0], p["loc"], jnp.exp(p["log_s"]))


MM = jaxem.MixtureModel(_log_joint_1d, 2)
P1 = {"logits": jnp.zeros(2), "loc": jnp.array([-1.0, 1.0]), "log_s": jnp.zeros(2)}
X1 = np.concatenate([np.random.default_rng(0).normal(-2, 1, (50, 1)),
                     np.random.default_rng(1).normal(2, 1, (50, 1))])
SGD_NAN = jaxem.GradientMStep(optax.sgd(20.0), safe=True)  # lr=20 on log-scales: the step is NaN


def test_safe_gradient_mstep_that_rejects_every_step_is_a_failure_not_convergence():
    r = jaxem.fit(MM, P1, X1, m_step=SGD_NAN)
    status = int(r.status)
    from jaxem._status import FATAL
    assert status & jaxem.Status.STEP_REJECTED and jaxem.Status.STEP_REJECTED & FATAL
    assert not bool(r.converged) and int(r.n_iter) == 1  # stopped at the first rejected M-step
    # no step accepted: the returned parameters are the starting ones, finite
    for a, b in zip(jax.tree_util.tree_leaves(r.params), jax.tree_util.tree_leaves(P1)):
        np.testing.assert_array_equal(a, b)
    assert "no step accepted" in jaxem.describe_status(status)
    # unsafe mode: the NaN step is taken and caught by the non-finite guard
    u = jaxem.fit(MM, P1, X1, m_step=jaxem.GradientMStep(optax.sgd(20.0)))
    assert int(u.status) & jaxem.Status.NONFINITE and not bool(u.converged)


def test_safe_gradient_mstep_at_a_fixed_point_still_converges():
    """Rejecting only rounding-level steps at the optimum is convergence, not STEP_REJECTED."""
    gm = jaxem.GradientMStep(optax.adam(0.05), num_steps=20, safe=True)
    r = jaxem.fit(MM, P1, X1, m_step=gm, tol=1e-9, max_iter=400)
    assert bool(r.converged) and not int(r.status) & jaxem.Status.STEP_REJECTED


# --- threads keep the caller's jax.enable_x64 --------------------------------------------------------
@contextlib.contextmanager
def _global_x64(value):
    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", value)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


_GMM2 = jaxem.GaussianMixture(2)


def _one(p, X):  # from given starts: no k-means program to compile
    return jaxem.fit(_GMM2, jaxem.GaussianMixtureParams(*p), X, max_iter=10)


@pytest.mark.parametrize("global_x64,local_x64,dtype", [(False, True, np.float64),
                                                         (True, False, np.float32)])
def test_batched_threads_use_the_callers_x64_context(global_x64, local_x64, dtype):
    """Inside ``with jax.enable_x64(local):`` the worker threads compute as the caller's thread
    does (x64 is thread-local: they used to see the global setting): same dtype, same numbers."""
    Xs = np.stack([blobs(seed=s, n=40, d=2, k=2)[0] for s in range(4)])  # float64 NumPy
    starts = (np.full((4, 2), 0.5), Xs[:, :2].copy(), np.tile(np.eye(2), (4, 2, 1, 1)))
    with _global_x64(global_x64), jax.enable_x64(local_x64):
        inputs = [(starts, Xs)]  # NumPy input: was silently computed in the global precision
        if local_x64:  # JAX float64 arrays: were a while_loop carry TypeError in the threads
            inputs.append(jax.tree_util.tree_map(jnp.asarray, (starts, Xs)))
        for p, X in inputs:
            threaded = jaxem.batched(_one, n_threads=2)(p, X)
            single = jaxem.batched(_one, n_threads=1)(p, X)
            assert threaded.params.means.dtype == dtype
            for a, b in zip(jax.tree_util.tree_leaves(threaded), jax.tree_util.tree_leaves(single)):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        if local_x64:  # fit_restarts runs its restarts through the same threads
            init = lambda k: jaxem.GaussianMixtureParams(
                jnp.full(2, 0.5), jnp.asarray(Xs[0, :2]) + jax.random.normal(k, (2, 2)),
                jnp.tile(jnp.eye(2), (2, 1, 1)))
            best = jaxem.fit_restarts(_GMM2, jax.random.key(0), Xs[0], 4, init_fn=init,
                                      max_iter=10, batch_size=1)
            assert best.params.means.dtype == dtype


# --- argument validation: a ValueError that names the argument ---------------------------------------
MODELS = {
    "GaussianMixture": lambda **kw: jaxem.GaussianMixture(**kw),
    "PPCA": lambda **kw: jaxem.PPCA(**kw),
    "FactorAnalysis": lambda **kw: jaxem.FactorAnalysis(**kw),
    "BernoulliMixture": lambda **kw: jaxem.BernoulliMixture(**kw),
    "PoissonMixture": lambda **kw: jaxem.PoissonMixture(**kw),
    "MixtureModel": lambda **kw: jaxem.MixtureModel(_log_joint_1d, **kw),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True, None])
def test_model_n_components_must_be_a_positive_int(name, k):
    with pytest.raises(ValueError, match="n_components must be a positive int"):
        MODELS[name](n_components=k)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "MixtureModel"])
def test_model_chunk_size_must_be_a_positive_int_or_none(name):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        MODELS[name](n_components=1, chunk_size=0)
    assert MODELS[name](n_components=1, chunk_size=None).chunk_size is None


def test_model_numpy_integer_n_components_is_the_same_model():
    m = jaxem.GaussianMixture(np.int64(3))
    assert m == jaxem.GaussianMixture(3) and hash(m) == hash(jaxem.GaussianMixture(3))
    assert type(m.n_components) is int


@pytest.mark.parametrize("make,arg", [
    (lambda v: jaxem.GaussianMixture(2, reg_covar=v), "reg_covar"),
    (lambda v: jaxem.BernoulliMixture(2, min_prob=v), "min_prob"),
    (lambda v: jaxem.PoissonMixture(2, min_rate=v), "min_rate"),
])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "0.1"])
def test_model_float_options_are_checked(make, arg, value):
    with pytest.raises(ValueError, match=arg):
        make(value)


def test_model_string_options_are_checked():
    with pytest.raises(ValueError, match="covariance_type"):
        jaxem.GaussianMixture(2, covariance_type="ful")
    with pytest.raises(ValueError, match="statistics"):
        jaxem.GaussianMixture(2, statistics="fast")


@pytest.fixture(scope="module")
def gm_start():
    model = jaxem.GaussianMixture(2)
    return model, model.init(jax.random.key(0), X2)


@pytest.mark.parametrize("tol", [float("nan"), -1e-3, float("inf")])
def test_fit_tol_must_be_finite_and_nonnegative(gm_start, tol):
    model, p = gm_start
    with pytest.raises(ValueError, match="tol must be finite and >= 0"):
        jaxem.fit(model, p, X2, tol=tol)


def test_fit_and_selection_counts_must_be_positive_ints(gm_start):
    model, p = gm_start
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        jaxem.fit(model, p, X2, max_iter=0)
    with pytest.raises(ValueError, match="n_init must be a positive int"):
        jaxem.fit_restarts(model, jax.random.key(0), X2, n_init=0)
    with pytest.raises(ValueError, match="n_init must be a positive int"):
        jaxem.select_n_components(jax.random.key(0), X2, [1, 2], n_init=0)
    with pytest.raises(ValueError, match="n_components_range"):
        jaxem.select_n_components(jax.random.key(0), X2, [1, 2.5])


def test_fit_params_of_the_wrong_model_name_the_field(gm_start):
    model, p = gm_start
    for other in (jaxem.GaussianMixture(3), jaxem.GaussianMixture(2, "diag")):
        with pytest.raises(ValueError, match=r"params\.(weights|covariances) has shape"):
            jaxem.fit(other, p, X2)
    with pytest.raises(ValueError, match=r"params\.weights has shape \(2,\) but "
                                         r"GaussianMixture expects \(3,\)"):
        jaxem.GaussianMixture(3).score_samples(p, X2)


def test_fit_casts_float32_params_to_the_data_dtype(gm_start):
    model, p = gm_start
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
    r32, r64 = jaxem.fit(model, p32, X2), jaxem.fit(model, p, X2)
    assert r32.params.means.dtype == jnp.float64 and int(r32.status) == 0
    # the cast start differs from p by float32 rounding only (~1e-7 relative)
    np.testing.assert_allclose(r32.params.means, r64.params.means, rtol=1e-5)


def test_data_without_features_or_complex_is_refused(gm_start):
    model, p = gm_start
    with pytest.raises(ValueError, match="X has 0 features"):
        jaxem.fit(model, p, np.zeros((10, 0)))
    with pytest.raises(ValueError, match="X is complex"):
        jaxem.fit(model, p, X2 + 1j)
    with pytest.raises(ValueError, match="X is complex"):
        model.score_samples(p, X2 * (1 + 0j))


def test_predict_refuses_nan_rows_eagerly_and_labels_them_minus_one_under_jit(gm_start):
    model, p = gm_start
    X = X2.copy()
    X[[3, 7], 1] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=r"X contains NaN or inf in 2 row\(s\) \(first: \[3, 7\]\)"):
        model.predict(p, X)
    labels = np.asarray(jax.jit(model.predict)(p, X))
    ok = np.ones(len(X), bool)
    ok[[3, 7]] = False
    assert np.all(labels[~ok] == -1)
    np.testing.assert_array_equal(labels[ok], np.asarray(model.predict(p, X2))[ok])


def test_sample_refuses_nan_weights(gm_start):
    model, p = gm_start
    with pytest.raises(ValueError, match="params.weights must be finite"):
        model.sample(jax.random.key(0), p._replace(weights=jnp.array([jnp.nan, 0.5])), 5)
    with pytest.raises(ValueError, match="params.means contains NaN"):
        model.sample(jax.random.key(0), p._replace(means=p.means.at[0, 0].set(jnp.nan)), 5)
    pm = jaxem.PoissonMixture(2)
    pp = jaxem.PoissonMixtureParams(jnp.array([0.5, -0.5]), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="params.weights must be finite, non-negative"):
        pm.sample(jax.random.key(0), pp, 5)


def test_product_mixtures_score_outside_the_support_as_minus_inf():
    Xc = np.array([[1.0, 2.0], [-1.0, 2.0], [0.0, 3.0]])
    pm = jaxem.PoissonMixture(2)
    pp = jaxem.PoissonMixtureParams(jnp.array([0.4, 0.6]), jnp.array([[1.0, 2.0], [3.0, 0.5]]))
    s = np.asarray(pm.score_samples(pp, Xc))
    assert s[1] == -np.inf and np.all(np.isfinite(s[[0, 2]]))
    # the finite rows are the Poisson mixture's log density, computed with SciPy
    from scipy.stats import poisson
    ref = np.log(sum(w * poisson.pmf(Xc[[0, 2]], r).prod(1)
                     for w, r in zip([0.4, 0.6], [[1.0, 2.0], [3.0, 0.5]])))
    np.testing.assert_allclose(s[[0, 2]], ref, rtol=1e-12)
    assert float(pm.log_likelihood(pp, Xc)) == -np.inf
    assert float(pm.log_likelihood(pp, Xc, np.array([1.0, 0.0, 1.0]))) == pytest.approx(ref.sum())
    bm = jaxem.BernoulliMixture(1)
    bp = jaxem.BernoulliMixtureParams(jnp.ones(1), jnp.full((1, 2), 0.3))
    np.testing.assert_array_equal(np.asarray(bm.score_samples(bp, [[2.0, 0.0]])), [-np.inf])
