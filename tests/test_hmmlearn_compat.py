"""`jaxem.hmmlearn` against hmmlearn: the same fits from the same start, and hmmlearn's own test
files (vendored in tests/hmmlearn_suite/, `hmm` = jaxem.hmmlearn) with an expected pass list."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

hmm_ref = pytest.importorskip("hmmlearn.hmm")
from jaxem import hmmlearn as hmm  # noqa: E402

SUITE = Path(__file__).parent / "hmmlearn_suite"
ROOT = Path(__file__).parent.parent


# --- direct comparisons with hmmlearn -----------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian_data():
    """Three sequences (lengths 70, 50, 40) from a 3-state Gaussian HMM in 2-D."""
    ref = hmm_ref.GaussianHMM(3, "full", init_params="")
    ref.startprob_ = np.array([0.5, 0.3, 0.2])
    ref.transmat_ = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    ref.means_ = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
    ref.covars_ = np.array([np.eye(2), [[1.0, 0.3], [0.3, 0.5]], 0.7 * np.eye(2)])
    X, _ = ref.sample(160, random_state=0)
    return X, [70, 50, 40]


def _assert_same_fit(a, b, names, rtol=1e-7, atol=1e-9):
    assert a.monitor_.iter == b.monitor_.iter
    np.testing.assert_allclose(list(b.monitor_.history), list(a.monitor_.history), rtol=rtol)
    assert b.monitor_.converged == a.monitor_.converged
    for name in names:
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("covariance_type", [
    "diag", "full",
    pytest.param("spherical", marks=pytest.mark.slow),
    pytest.param("tied", marks=pytest.mark.slow)])
def test_gaussian_fit_equals_hmmlearn(gaussian_data, covariance_type):
    """Same random_state: hmmlearn's start (Dirichlet, k-means, data covariance + min_covar),
    then the same MAP iterates (covars_prior=1e-2 by default), iteration count and outputs."""
    X, lengths = gaussian_data
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=1, n_iter=30)
    a = hmm_ref.GaussianHMM(**kw).fit(X, lengths)
    b = hmm.GaussianHMM(**kw).fit(X, lengths)
    assert b.n_features == 2
    assert b._covars_.shape == a._covars_.shape
    _assert_same_fit(a, b, ["startprob_", "transmat_", "means_", "_covars_", "covars_"])
    np.testing.assert_allclose(b.score(X, lengths), a.score(X, lengths), rtol=1e-10)
    np.testing.assert_allclose([b.aic(X, lengths), b.bic(X, lengths)],
                               [a.aic(X, lengths), a.bic(X, lengths)], rtol=1e-10)
    if covariance_type != "full":  # inference (one more compiled program) checked once
        return
    la, pa = a.score_samples(X, lengths)
    lb, pb = b.score_samples(X, lengths)
    np.testing.assert_allclose(lb, la, rtol=1e-10)
    np.testing.assert_allclose(pb, pa, atol=1e-8)
    for algorithm in ("viterbi", "map"):
        sa, za = a.decode(X, lengths, algorithm=algorithm)
        sb, zb = b.decode(X, lengths, algorithm=algorithm)
        np.testing.assert_allclose(sb, sa, rtol=1e-10)
        np.testing.assert_array_equal(zb, za)


def test_gaussian_priors_and_fixed_params_equal_hmmlearn(gaussian_data):
    """User-set parameters kept (init_params=""), letters outside ``params`` held fixed, and
    hmmlearn's Dirichlet / normal / inverse-gamma priors in the M-step."""
    X, lengths = gaussian_data
    start = dict(startprob_=np.array([0.2, 0.3, 0.5]),
                 transmat_=np.array([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.25, 0.25, 0.5]]),
                 means_=np.array([[0.5, 0.5], [2.0, 0.0], [-1.0, 2.0]]),
                 covars_=np.array([[1.0, 2.0], [0.5, 0.5], [1.5, 1.0]]))
    kw = dict(n_components=3, covariance_type="diag", init_params="", params="tmc", n_iter=15,
              tol=1e-6, startprob_prior=2.0, transmat_prior=np.full((3, 3), 3.0),
              means_prior=np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0]]), means_weight=5.0,
              covars_prior=0.5, covars_weight=3.0)
    models = []
    for cls in (hmm_ref.GaussianHMM, hmm.GaussianHMM):
        m = cls(**kw)
        for k, v in start.items():
            setattr(m, k, v)
        models.append(m.fit(X, lengths))
    a, b = models
    np.testing.assert_array_equal(b.startprob_, start["startprob_"])  # 's' not in params
    _assert_same_fit(a, b, ["startprob_", "transmat_", "means_", "_covars_"])


def test_categorical_and_poisson_equal_hmmlearn():
    rng = np.random.RandomState(0)
    lengths = [60, 40]
    ref = hmm_ref.CategoricalHMM(2, init_params="")
    ref.startprob_, ref.transmat_ = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    ref.emissionprob_ = np.array([[0.1, 0.4, 0.5], [0.6, 0.3, 0.1]])
    X, _ = ref.sample(100, random_state=rng)
    kw = dict(n_components=2, random_state=3, n_iter=20, emissionprob_prior=1.5)
    a = hmm_ref.CategoricalHMM(**kw).fit(X, lengths)
    b = hmm.CategoricalHMM(**kw).fit(X, lengths)
    assert b.n_features == 3
    _assert_same_fit(a, b, ["startprob_", "transmat_", "emissionprob_"])
    np.testing.assert_array_equal(b.predict(X, lengths), a.predict(X, lengths))

    ref = hmm_ref.PoissonHMM(2, init_params="")
    ref.startprob_, ref.transmat_ = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    ref.lambdas_ = np.array([[3.0, 1.0], [0.5, 6.0]])
    X, _ = ref.sample(100, random_state=rng)
    kw = dict(n_components=2, random_state=3, n_iter=20, lambdas_prior=1.0, lambdas_weight=0.5)
    a = hmm_ref.PoissonHMM(**kw).fit(X, lengths)
    b = hmm.PoissonHMM(**kw).fit(X, lengths)
    _assert_same_fit(a, b, ["startprob_", "transmat_", "lambdas_"])
    np.testing.assert_allclose(b.score(X, lengths), a.score(X, lengths), rtol=1e-10)
    # sample: NumPy draws in hmmlearn's order, so the same seed gives the same sequences
    xa, za = a.sample(30, random_state=7)
    xb, zb = b.sample(30, random_state=7)
    np.testing.assert_array_equal(zb, za)
    np.testing.assert_array_equal(xb, xa)


def test_bad_input_raises(gaussian_data):
    X, lengths = gaussian_data
    with pytest.raises(ValueError, match="lengths"):
        hmm.GaussianHMM(2, n_iter=1).fit(X, [10, 20])
    with pytest.raises(ValueError, match="covariance_type"):
        hmm.GaussianHMM(2, covariance_type="bogus", n_iter=1).fit(X)
    with pytest.raises(ValueError, match="integers"):
        hmm.CategoricalHMM(2).fit(np.array([[0.5], [1.0]]))
    h = hmm.GaussianHMM(3, n_iter=30, random_state=1).fit(X, lengths)  # compiled above
    with pytest.raises(ValueError, match="features"):
        h.score(np.ones((5, 3)))


# --- hmmlearn's own test files ------------------------------------------------------------------
def _expected_pass():
    lines = (SUITE / "expected_pass.txt").read_text().splitlines()
    return {l.strip() for l in lines if l.strip() and not l.startswith("#")}


# Default run: a fast subset covering each class's public behaviour (few compiled shapes).
FAST = [
    "hmmlearn_test_categorical_hmm.py::TestCategoricalAgainstWikipedia::"
    "test_decode_viterbi[log]",
    "hmmlearn_test_categorical_hmm.py::TestCategoricalAgainstWikipedia::test_predict[log]",
    "hmmlearn_test_categorical_hmm.py::TestCategoricalHMM::test_attributes[log]",
    "hmmlearn_test_categorical_hmm.py::TestCategoricalHMM::test_fit[log]",
    "hmmlearn_test_categorical_hmm.py::TestCategoricalHMM::"
    "test__check_and_set_categorical_n_features[log]",
    "hmmlearn_test_poisson_hmm.py::TestPoissonHMM::test_attributes[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithDiagonalCovars::"
    "test_bad_covariance_type[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithDiagonalCovars::test_sample[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithDiagonalCovars::"
    "test_fit_left_right[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithDiagonalCovars::"
    "test_covar_is_writeable[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithDiagonalCovars::"
    "test_fit_too_little_data[log]",
    "hmmlearn_test_gaussian_hmm.py::TestGaussianHMMWithSphericalCovars::test_issue_385[log]",
]


def _run_suite(tmp_path, node_ids):
    """Run the vendored files in a subprocess; returns {test id: outcome}."""
    xml = tmp_path / "suite.xml"
    env = dict(os.environ, HMMLEARN_SEED="0", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    args = [str(SUITE / n) for n in node_ids] if node_ids else [str(SUITE)]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         "-o", "python_files=hmmlearn_test_*.py", "-o", "addopts=", f"--junitxml={xml}",
         "--rootdir", str(ROOT), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert xml.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        module = case.get("classname").split(".")
        i = next(k for k, part in enumerate(module) if part.startswith("hmmlearn_test_"))
        node = f"{module[i]}.py::" + "::".join(module[i + 1:] + [case.get("name")])
        bad = any(c.tag in ("failure", "error") for c in case)
        skipped = any(c.tag == "skipped" for c in case)
        outcomes[node] = "failed" if bad else "skipped" if skipped else "passed"
    return outcomes


def _check_pass_list(outcomes, expected):
    passed = {n for n, o in outcomes.items() if o == "passed"}
    regressions = sorted(expected - passed)
    fixed = sorted(passed - expected)
    assert not regressions and not fixed, (
        f"hmmlearn suite: newly failing {regressions}; newly passing (update "
        f"tests/hmmlearn_suite/expected_pass.txt) {fixed}")


def test_hmmlearn_suite_fast_subset(tmp_path):
    outcomes = _run_suite(tmp_path, FAST)
    assert set(outcomes) == set(FAST)
    _check_pass_list(outcomes, _expected_pass() & set(FAST))


@pytest.mark.slow
def test_hmmlearn_suite_full(tmp_path):
    """All of hmmlearn 0.3.3's GaussianHMM, CategoricalHMM and PoissonHMM tests (~130; minutes)."""
    outcomes = _run_suite(tmp_path, None)
    _check_pass_list(outcomes, _expected_pass())
