"""Precision: float64 input with x64 off warns once (`jaxem.PrecisionWarning`), `jax.enable_x64`
gives float64 without touching the global configuration, and the same key gives the same start in
float32 and float64."""

import os
import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem

ROOT = pathlib.Path(jaxem.__file__).resolve().parent.parent

# Run with x64 OFF (the test session turns it on in conftest.py): a fresh interpreter.
_SCRIPT = textwrap.dedent("""
    import warnings
    import jax, numpy as np, jaxem
    assert not jax.config.jax_enable_x64
    X = np.random.default_rng(0).normal(size=(40, 2))           # float64
    model = jaxem.GaussianMixture(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p32 = model.init(jax.random.key(0), X, method="random")
        model.init(jax.random.key(0), X, method="random")        # a second call: no second warning
        model.init(jax.random.key(0), X.astype(np.float32), method="random")
        with jax.enable_x64(True):                               # scoped float64, no warning
            p64 = model.init(jax.random.key(0), X, method="random")
            inside = bool(jax.config.jax_enable_x64)
    ours = [w for w in caught if issubclass(w.category, jaxem.PrecisionWarning)]
    print("n_warnings", len(ours))
    print("filename", ours[0].filename)
    print("message", str(ours[0].message))
    print("dtypes", p32.means.dtype, p64.means.dtype)
    print("x64_inside_after", inside, bool(jax.config.jax_enable_x64))
    print("same_start", np.allclose(p32.means, p64.means, rtol=1e-5))
""")


def test_float64_data_with_x64_off_warns_once_and_enable_x64_gives_float64(tmp_path):
    script = tmp_path / "precision_check.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "0"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert out["n_warnings"] == "1"
    assert out["filename"] == str(script)  # points at the user's line, not inside jaxem
    assert "jax.enable_x64(True)" in out["message"] and "float32" in out["message"]
    assert out["dtypes"] == "float32 float64"
    assert out["x64_inside_after"] == "True False"  # the global configuration is untouched
    assert out["same_start"] == "True"


def test_precision_warning_is_a_user_warning():
    assert issubclass(jaxem.PrecisionWarning, UserWarning)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(3)
    centers = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    return centers[rng.integers(0, 3, 150)] + rng.normal(size=(150, 2))


@pytest.mark.parametrize("method", ["kmeans", "random", "random_from_data"])
def test_same_key_same_start_in_float32_and_float64(blobs, method):
    """The draws behind a start do not depend on the precision: float32 and float64 starts from one
    key agree to float32 rounding (before, float64 drew other numbers: another start)."""
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    key = jax.random.key(7)
    p32 = model.init(key, blobs.astype(np.float32), method=method)
    p64 = model.init(key, blobs, method=method)
    assert p32.means.dtype == jnp.float32 and p64.means.dtype == jnp.float64
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p32), p64,
                                rtol=1e-4, atol=1e-5)  # float32 rounding of the same start


def test_same_key_same_start_ppca(blobs):
    model = jaxem.PPCA(1)
    p32 = model.init(jax.random.key(2), blobs.astype(np.float32))
    p64 = model.init(jax.random.key(2), blobs)
    chex.assert_trees_all_close(p32.W.astype(jnp.float64), p64.W, rtol=1e-5)


def test_precision_independent_uniforms_are_uniform():
    """float64 uniforms = the float32 draw + finer bits: within [0, 1), moments of U[0, 1)."""
    from jaxem._precision import uniform

    u64 = np.asarray(uniform(jax.random.key(0), (50_000,), jnp.float64))
    u32 = np.asarray(uniform(jax.random.key(0), (50_000,), jnp.float32))
    assert u64.min() >= 0.0 and u64.max() < 1.0
    assert np.all(np.abs(u64 - u32) < 2.0**-23)
    assert len(np.unique(u64)) == u64.size  # finer than float32's grid (which has 2^23 values)
    assert abs(u64.mean() - 0.5) < 6e-3 and abs(u64.var() - 1 / 12) < 6e-3
