"""jaxem.sklearn.GaussianMixture: scikit-learn's own estimator checks, and agreement with scikit-learn."""

import functools
import pathlib
import pickle
import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from helpers import sklearn_precisions
from jaxem.sklearn import GaussianMixture

ROOT = pathlib.Path(__file__).resolve().parents[1]  # run subprocesses on this checkout's jaxem


# The configuration scikit-learn itself uses when it runs these checks on its GaussianMixture
# (sklearn/utils/_test_common/instance_generator.py: n_init=2, max_iter=5). Two checks are skipped
# by scikit-learn itself in this environment (not by us): check_sample_weights_pandas_series
# (pandas is not installed) and check_array_api_input (SCIPY_ARRAY_API is not set).
@parametrize_with_checks([GaussianMixture(n_init=2, max_iter=5)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=5 rarely converges
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    """Digits reduced to 5 principal components of its first 500 rows: the raw 64 pixels include
    constant columns (singular full covariances, which both libraries only survive through
    reg_covar) and would break the D <= 5 budget of this shared machine; the PCA scores are real,
    correlated, multimodal data of the same images."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    return PCA(5, random_state=0).fit_transform(load_digits().data[:500])


@functools.partial(jax.jit, static_argnames="model")
def _init(key, X, model):
    return model.init(key, X)


_STARTS = {}


def _start(X, K, ct):
    """A k-means start, computed once per (data, K, type) for the whole module."""
    key = (X.tobytes(), K, ct)
    if key not in _STARTS:
        _STARTS[key] = _init(jax.random.key(0), X, model=jaxem.GaussianMixture(K, ct))
    return _STARTS[key]


def _pair(X, K, ct, **kw):
    """jaxem's and scikit-learn's estimators given the same weights/means/precisions_init."""
    from sklearn.mixture import GaussianMixture as SK

    p0 = _start(X, K, ct)
    init = dict(weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
                precisions_init=sklearn_precisions(p0, ct))
    return GaussianMixture(K, covariance_type=ct, **init, **kw), SK(K, covariance_type=ct, **init, **kw)


CASES = [("iris", 3, "full"), ("iris", 3, "diag"), ("wine", 3, "full"), ("digits", 4, "full")]
CASES += [pytest.param("iris", 3, ct, marks=pytest.mark.slow) for ct in ["spherical", "tied"]]
ITER = dict(max_iter=200)  # one static max_iter: these tests share compiled programs (tol is traced)


@pytest.mark.parametrize("dataset,K,ct", CASES)
def test_same_score_and_predictions_as_sklearn(request, dataset, K, ct):
    X = request.getfixturevalue(dataset)
    ours, theirs = _pair(X, K, ct, tol=1e-4, **ITER)
    labels = ours.fit_predict(X)
    theirs.fit(X)
    assert ours.converged_ and theirs.converged_
    assert ours.n_iter_ == theirs.n_iter_
    # Same iterates from the same start: differences are float64 round-off (~1e-12), but they grow
    # over up to 200 iterations, hence 1e-8.
    np.testing.assert_allclose(ours.score(X), theirs.score(X), rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=0, atol=1e-7)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(labels, theirs.predict(X))
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-7)
    for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6,
                                   atol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours.bic(X), theirs.bic(X), rtol=1e-10)
    np.testing.assert_allclose(ours.aic(X), theirs.aic(X), rtol=1e-10)
    # sample() draws with NumPy exactly as scikit-learn does.
    ours.random_state = theirs.random_state = 0
    (xs, ys), (xt, yt) = ours.sample(40), theirs.sample(40)
    np.testing.assert_array_equal(ys, yt)
    np.testing.assert_allclose(xs, xt, rtol=1e-6, atol=1e-8)


def test_n_init_best_is_at_least_every_restart(iris):
    """The batched best equals the best of 10 independent sequential fits from the same starts."""
    model = jaxem.GaussianMixture(3, "full")
    key = jax.random.key(7)
    best, everyone = jax.jit(lambda k: jaxem.fit_restarts(
        model, k, iris, 10, init_method="random", return_all=True, max_iter=100))(key)
    single = jax.jit(lambda k: jaxem.fit(model, model.init(k, iris, method="random"), iris,
                                         max_iter=100).log_likelihood)
    singles = np.asarray([single(k) for k in jax.random.split(key, 10)])  # one compile, 10 runs
    np.testing.assert_allclose(everyone.log_likelihood, singles, rtol=0, atol=1e-9)
    assert float(best.log_likelihood) >= singles.max() - 1e-12
    assert np.ptp(singles) > 1e-3  # the restarts really differ, so choosing matters


def test_estimator_n_init_keeps_its_best_restart(iris):
    """n_init=10, reproduced from the estimator's seed and padded data: restart i starts from
    ``fold_in(key(seed), i)`` (so restart 0 is the n_init=1 fit) and the chosen restart is the one
    with the highest final lower bound, as scikit-learn chooses (first on ties)."""
    import jax.numpy as jnp

    from jaxem.sklearn import _pad

    est = GaussianMixture(3, n_init=10, init_params="random", random_state=0).fit(iris)
    one = GaussianMixture(3, n_init=1, init_params="random", random_state=0).fit(iris)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    Xp, wp = _pad(iris, np.ones(len(iris)))
    model, key = jaxem.GaussianMixture(3), jax.random.key(seed)
    run = jax.jit(lambda i: jaxem.fit(model, model.init(jax.random.fold_in(key, i), Xp, wp,
                                                        method="random"), Xp, weights=wp))
    results = [run(jnp.uint32(i)) for i in range(10)]
    lbs = np.array([float(r.trace[int(r.n_iter) - 1]) for r in results])
    assert np.ptp(lbs) > 1e-3  # the restarts differ, so choosing matters
    best = int(np.argmax(lbs))
    np.testing.assert_allclose(est.lower_bound_, lbs[best], rtol=0, atol=1e-10)
    np.testing.assert_allclose(est.means_, results[best].params.means, rtol=0, atol=1e-8)
    np.testing.assert_allclose(one.lower_bound_, lbs[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(one.means_, results[0].params.means, rtol=0, atol=1e-8)
    assert est.lower_bound_ >= one.lower_bound_


def test_pickle_round_trip(iris):
    est = _pair(iris, 3, "full", **ITER)[0].fit(iris)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict(iris), est.predict(iris))
    assert clone.score(iris) == est.score(iris)
    assert clone.get_params().keys() == est.get_params().keys()
    assert clone.fit(iris).score(iris) == pytest.approx(est.score(iris), abs=1e-12)


def test_convergence_warning(iris):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est = _pair(iris, 3, "full", tol=0.0, **ITER)[0].fit(iris)
    assert not est.converged_ and est.n_iter_ == 200 and len(est.lower_bounds_) == 200


def test_sample_weight_equals_duplicated_rows(iris):
    """Integer weights = repeated rows: ours weighted vs scikit-learn (no weights) on repeats."""
    counts = np.random.default_rng(0).integers(1, 4, iris.shape[0])
    ours, theirs = _pair(iris, 3, "full", tol=1e-6, **ITER)
    ours.fit(iris, sample_weight=counts.astype(float))
    theirs.fit(np.repeat(iris, counts, axis=0))
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-7)
    # the weighted mean log-likelihood equals the mean over the repeated rows
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=0, atol=1e-8)


def test_warm_start_continues_the_fit(iris):
    """A warm-started second fit continues from the first, as scikit-learn's (tol=0: a fixed
    iteration count; the first iteration's convergence test is in test_reliability_api.py)."""
    ours, theirs = _pair(iris, 3, "full", tol=0.0, warm_start=True, **ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(iris).fit(iris)
        theirs.fit(iris).fit(iris)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-7)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=0, atol=1e-8)


def test_float64_without_global_x64(iris):
    """With x64 off, float64 input is still fitted in float64 (it matches scikit-learn to 1e-10,
    which float32 cannot) and the flag is left off; float32 input stays float32. (The conftest
    turns x64 on globally; `jax.enable_x64(False)` switches it off for this test's thread.)"""
    from sklearn.mixture import GaussianMixture as SK

    init = dict(means_init=iris[[0, 60, 120]], random_state=0)
    with jax.enable_x64(False):
        ours = GaussianMixture(3, **init).fit(iris)
        assert ours.means_.dtype == np.float64 and ours.score_samples(iris).dtype == np.float64
        assert not jax.config.jax_enable_x64
        f32 = GaussianMixture(3, **init).fit(iris.astype(np.float32))
        assert f32.means_.dtype == np.float32
        assert not jax.config.jax_enable_x64
    theirs = SK(3, **init).fit(iris)
    assert abs(ours.score(iris) - theirs.score(iris)) < 1e-10
    assert abs(f32.score(iris) - theirs.score(iris)) < 1e-3  # float32: agrees only to ~1e-5


def test_bad_init_parameters_raise(iris):
    with pytest.raises(ValueError, match="normalized"):
        GaussianMixture(2, weights_init=[0.5, 0.6]).fit(iris)
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture(2, means_init=np.zeros((3, 4))).fit(iris)
    with pytest.raises(ValueError, match="positive-definite"):
        GaussianMixture(2, precisions_init=-np.stack([np.eye(4)] * 2)).fit(iris)
    with pytest.raises(ValueError, match="sample_weight"):
        GaussianMixture(3).fit(iris, sample_weight=np.r_[1.0, 1.0, np.zeros(148)])


def test_importing_jaxem_does_not_import_sklearn():
    code = "import sys, jaxem; assert 'sklearn' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# --- issue 15: no silent wrong answers (atomic fit, scikit-learn's messages, warm-start convergence)
def _fitted_state(est):
    """Every attribute of the estimator (fitted ones included), copied."""
    return {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else
                list(v) if isinstance(v, list) else v) for k, v in vars(est).items()}


def _assert_same_state(est, state):
    assert set(vars(est)) == set(state)
    for k, v in state.items():
        got = getattr(est, k)
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype, k
            np.testing.assert_array_equal(got, v, err_msg=k)
        else:
            assert type(got) is type(v) and got == v, k


ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined empirical "
               "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
               "the number of components, increase reg_covar, or scale the input data.")


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_failed_fit_leaves_the_estimator_exactly_as_it_was(iris, ct):
    est = GaussianMixture(2, covariance_type=ct, reg_covar=0, random_state=0).fit(iris)
    state, labels = _fitted_state(est), est.predict(iris)
    cases = [
        (np.ones((50, 4)), ILL_DEFINED),  # collapsed data, reg_covar=0 (was SciPy's LinAlgError)
        (iris * 1e200, "X's scale overflows float64"),  # finite, but its squares are not
        (iris.astype(np.float32) * 1e20, "X's scale overflows float32"),
        (np.ones((50, 3)), ILL_DEFINED),  # after validate_data set n_features_in_ = 3: restored
    ]
    for X, msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg)):
            est.fit(X)
        _assert_same_state(est, state)
        np.testing.assert_array_equal(est.predict(iris), labels)
    # the estimator still refits normally afterwards
    assert est.fit(iris).converged_


def test_verbose_without_tqdm_prints_sklearns_messages(iris, monkeypatch, capsys):
    """Without tqdm, verbose=2 prints scikit-learn's messages (time lapses aside) from the trace."""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ours, theirs = _pair(iris, 3, "full", tol=1e-4, verbose=2, verbose_interval=3, **ITER)
    ours.fit(iris)
    out_ours = capsys.readouterr().out
    theirs.fit(iris)
    out_theirs = capsys.readouterr().out
    strip = lambda s: re.sub(r"time lapse [0-9.]+s", "time lapse -", s)
    assert "Initialization 0\n  Iteration 3\t" in out_ours and "lower bound" in out_ours
    assert strip(out_ours) == strip(out_theirs)


def test_warm_start_detects_convergence_after_one_iteration_like_sklearn(iris):
    """A warm start compares its first lower bound with the previous fit's lower_bound_: with
    max_iter=1 the repeated fits converge at the same refit as scikit-learn's."""
    ours, theirs = _pair(iris, 3, "full", tol=1e-3, warm_start=True, max_iter=1)
    counts = []
    for est in (ours, theirs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for i in range(200):
                est.fit(iris)
                if est.converged_:
                    break
        counts.append(i)
    assert ours.converged_ and ours.n_iter_ == 1 and counts[0] == counts[1] > 1
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-7)


# --- scikit-learn's own test file, run against jaxem.sklearn.GaussianMixture ------------------------
# sklearn/mixture/tests/test_gaussian_mixture.py of the installed scikit-learn, with its
# `from sklearn.mixture import GaussianMixture` replaced by jaxem's, run by pytest in a subprocess.
# Left out: tests of scikit-learn's private helpers (they never touch the estimator, or mock/set its
# private methods) and the array-API tests (skipped in this environment anyway).
SKLEARN_PRIVATE = {
    "test_suffstat_sk_full", "test_suffstat_sk_tied", "test_suffstat_sk_diag",
    "test_gaussian_suffstat_sk_spherical", "test_compute_log_det_cholesky",
    "test_gaussian_mixture_log_probabilities",
    "test_gaussian_mixture_precisions_init",  # calls the private _set_parameters
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters",  # mocks a private helper
    "test_gaussian_mixture_array_api_compliance",
    "test_gaussian_mixture_raises_where_array_api_not_implemented",
}
SKLEARN_EXPECTED_PASS = {
    "test_gaussian_mixture_attributes", "test_check_means", "test_check_precisions",
    "test_gaussian_mixture_estimate_log_prob_resp", "test_gaussian_mixture_predict_predict_proba",
    "test_gaussian_mixture_fit_predict", "test_gaussian_mixture_fit_predict_n_init",
    "test_gaussian_mixture_fit", "test_gaussian_mixture_fit_best_params",
    "test_gaussian_mixture_fit_convergence_warning", "test_multiple_init",
    "test_gaussian_mixture_n_parameters", "test_bic_1d_1component", "test_gaussian_mixture_aic_bic",
    "test_gaussian_mixture_verbose", "test_warm_start", "test_convergence_detected_with_warm_start",
    "test_score", "test_score_samples", "test_monotonic_likelihood", "test_regularisation",
    "test_fitted_precision_covariance_concistency", "test_sample", "test_init",
    "test_gaussian_mixture_setting_best_params", "test_init_means_not_duplicated",
    "test_means_for_all_inits", "test_max_iter_zero", "test_gaussian_mixture_precisions_init_diag",
    "test_gaussian_mixture_single_component_stable",
}
# scikit-learn's own message for weights outside [0, 1] swaps "max" and "min" (it formats
# (min, max) into "max value {}, min value {}"); jaxem prints them the right way round.
SKLEARN_EXPECTED_FAIL = {"test_check_weights"}
# By default, a fast subset (~15 s on a quiet machine, mostly the subprocess's imports): three of
# the tests issue 15 fixed, a divergence case next to them, and the documented failure. The other
# two it fixed (test_regularisation, test_gaussian_mixture_verbose: ~20 s) are covered here by
# test_failed_fit_leaves_the_estimator_exactly_as_it_was and
# test_verbose_without_tqdm_prints_sklearns_messages, and run with the whole file (-m slow).
SKLEARN_FAST = ["test_init", "test_convergence_detected_with_warm_start",
                "test_monotonic_likelihood", "test_gaussian_mixture_setting_best_params",
                "test_check_weights"]

_SKLEARN_CONFTEST = '''
import sys
import numpy as np
import pytest

sys.modules["tqdm"] = sys.modules["tqdm.auto"] = None  # as without tqdm: the printed fallback


@pytest.fixture(params=[np.float64])  # scikit-learn's default (float32 needs an opt-in variable)
def global_dtype(request):
    return request.param


@pytest.fixture(params=[42])  # scikit-learn's default seed
def global_random_seed(request):
    return request.param
'''


def _run_sklearn_test_file(tmp_path, names):
    """Outcome per test function ("passed" if every parametrisation passed) of ``names``."""
    import importlib.util
    import xml.etree.ElementTree as ET

    spec = importlib.util.find_spec("sklearn.mixture.tests.test_gaussian_mixture")
    src = pathlib.Path(spec.origin).read_text()
    line = "from sklearn.mixture import GaussianMixture\n"
    assert src.count(line) == 1
    (tmp_path / "test_gm_jaxem.py").write_text(
        src.replace(line, "from jaxem.sklearn import GaussianMixture\n"))
    (tmp_path / "conftest.py").write_text(_SKLEARN_CONFTEST)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
           "-W", "ignore", "--junitxml=report.xml", "--rootdir", str(tmp_path)]
    cmd += [f"test_gm_jaxem.py::{n}" for n in sorted(names)]
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    outcomes = {}
    for case in ET.parse(tmp_path / "report.xml").getroot().iter("testcase"):
        name = case.get("name").split("[")[0]
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        prev = outcomes.get(name, "skipped")
        outcomes[name] = "failed" if bad or prev == "failed" else (
            prev if skipped else "passed")
    return outcomes, out.stdout[-3000:]


def _check_sklearn_outcomes(outcomes, names, log):
    assert set(outcomes) == set(names), log  # every requested test was found and run
    passed = {n for n, o in outcomes.items() if o == "passed"}
    assert passed == set(names) - SKLEARN_EXPECTED_FAIL, log
    assert all(outcomes[n] == "failed" for n in SKLEARN_EXPECTED_FAIL & set(names)), log


@pytest.mark.slow  # CI's 10-minute budget (10-20 s of compiles); run with -m slow
def test_sklearn_own_test_file_fast_subset(tmp_path):
    outcomes, log = _run_sklearn_test_file(tmp_path, SKLEARN_FAST)
    _check_sklearn_outcomes(outcomes, SKLEARN_FAST, log)


@pytest.mark.slow
def test_sklearn_own_test_file(tmp_path):
    """The whole file (~80 s of CPU): 30 of its 31 estimator tests pass."""
    names = SKLEARN_EXPECTED_PASS | SKLEARN_EXPECTED_FAIL
    outcomes, log = _run_sklearn_test_file(tmp_path, names)
    _check_sklearn_outcomes(outcomes, names, log)
    import importlib.util  # the file holds no estimator test we did not classify
    src = pathlib.Path(importlib.util.find_spec(
        "sklearn.mixture.tests.test_gaussian_mixture").origin).read_text()
    defined = set(re.findall(r"^def (test_\w+)\(", src, re.M))
    assert defined == names | SKLEARN_PRIVATE
