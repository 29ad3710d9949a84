"""Every example runs, saves its plot (matplotlib installed) and prints what its docstring claims:
each test parses the printed numbers and checks the claim, not only that the script ran. The quick
start runs in CI; the others are marked slow (each takes 10-25 s on 2 cores; run them with
`python -m pytest -m slow tests/test_examples.py`)."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
# Examples that draw with matplotlib unconditionally (the others plot only if it is installed).
NEEDS_MATPLOTLIB = {"bernoulli_digits.py", "bic_curve.py", "gmm_ellipses.py", "hmm_regimes.py"}


def _run(name, tmp_path):
    if name in NEEDS_MATPLOTLIB and not HAS_MATPLOTLIB:
        pytest.skip(f"{name} needs matplotlib")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    env.pop("JAX_ENABLE_X64", None)  # the examples run as a user runs them: jax's defaults
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if HAS_MATPLOTLIB and name != "quickstart.py":
        assert list(tmp_path.glob("*.png")), f"{name} saved no PNG; stdout: {proc.stdout[-500:]}"
    return proc.stdout


def _number(pattern, out):
    m = re.search(pattern, out)
    assert m, f"{pattern!r} not in the output:\n{out[-1500:]}"
    return float(m.group(1))


def test_quickstart(tmp_path):
    out = _run("quickstart.py", tmp_path)
    assert "converged=True" in out and "status: ok" in out
    # Three blobs of 300 points at (-4, 0), (0, 3), (4, 0): equal weights, means recovered.
    weights = [float(v) for v in re.search(r"weights: \[([^\]]*)\]", out).group(1).split()]
    assert all(abs(w - 1 / 3) < 0.02 for w in weights), weights
    means = [float(v) for v in re.findall(r"-?\d+\.\d+", out.split("means:")[1].split("BIC")[0])]
    truth = [-4.0, 0.0, 0.0, 3.0, 4.0, 0.0]
    assert all(abs(a - b) < 0.2 for a, b in zip(means, truth)), means


@pytest.mark.slow
def test_student_t_mixture_locates_the_centres_the_gaussian_misses(tmp_path):
    out = _run("student_t_mixture.py", tmp_path)
    gauss = _number(r"Gaussian .*location error (\d+\.\d+)", out)
    student = _number(r"Student-t .*location error (\d+\.\d+)", out)
    assert student < 0.5, out  # every true centre found (t-distributed clusters, scale 0.8)
    assert gauss > 2.0, out  # the best Gaussian fit spends a component on the outliers
    assert out.count("status: ok") == 2
    assert _number(r"Student-t locates the three centres (\d+\.\d+)x", out) > 4


@pytest.mark.slow
def test_differentiable_em_separates_the_three_groups(tmp_path):
    out = _run("differentiable_em.py", tmp_path)
    losses = [float(v) for v in re.findall(r"^step +\d+ +loss (\d+\.\d+)", out, re.M)]
    assert losses[-1] < 0.1 < losses[0], losses  # trained through jaxem.fit, no plateau at ~0.3
    # All three groups separated (two merged groups would leave 2/9 of the pairs wrong: 0.778).
    assert _number(r"accuracy after training: (\d\.\d+)", out) >= 0.95


@pytest.mark.slow
def test_bernoulli_prototypes_are_the_digits(tmp_path):
    out = _run("bernoulli_digits.py", tmp_path)
    assert "converged=True" in out and "status: ok" in out
    assert _number(r"purity (\d\.\d+)", out) > 0.7
    assert _number(r"\((\d+) distinct digits among the 10 prototypes\)", out) >= 8


@pytest.mark.slow
def test_bic_curve_picks_the_true_number_of_components(tmp_path):
    out = _run("bic_curve.py", tmp_path)
    assert _number(r"best: K=(\d+)", out) == 4  # the data have 4 well-separated blobs


@pytest.mark.slow
def test_gmm_ellipses_recovers_the_centres(tmp_path):
    out = _run("gmm_ellipses.py", tmp_path)
    assert "converged=True" in out
    assert _number(r"nearest fitted mean: (\d+\.\d+)", out) < 0.25  # 250 points per component


@pytest.mark.slow
def test_hmm_regimes_recovers_the_regimes(tmp_path):
    out = _run("hmm_regimes.py", tmp_path)
    assert "converged=True" in out and "status: ok" in out
    vols = [float(v) for v in re.search(r"fitted volatilities: \[([^\]]*)\]", out).group(1).split()]
    assert all(abs(v / t - 1) < 0.15 for v, t in zip(vols, [0.5, 1.5, 4.0])), vols
    assert _number(r"state recovery accuracy: (\d\.\d+)", out) > 0.85


@pytest.mark.slow
def test_mfa_digits_beats_a_diagonal_gaussian_mixture(tmp_path):
    # The printed claim: MFA's held-out log-likelihood beats a diagonal GMM with the same K.
    out = _run("mfa_digits.py", tmp_path)
    line = next(l for l in out.splitlines() if l.startswith("held-out log-likelihood"))
    mfa, gmm = (float(v) for v in re.findall(r"\) (-?[0-9.]+)", line))
    assert mfa > gmm + 1.0 and line.endswith("True"), line
    assert "MFA: converged=True" in out and "status: ok" in out


@pytest.mark.slow
def test_impute_example_claim(tmp_path):
    """examples/impute.py: EM on the observed entries (missing="marginalize") imputes the wine
    data's deleted entries far better than column means, and at least as well as scikit-learn's
    IterativeImputer (within 5%)."""
    out = _run("impute.py", tmp_path)
    claim = next(l for l in out.splitlines() if l.startswith("claim:"))
    gain = float(claim.split("error is ")[1].split("%")[0])
    ratio = float(claim.split("and ")[1].split("x ")[0])
    assert gain >= 15 and ratio <= 1.05, claim
