"""Bad input outside jit: a ValueError that says what to change."""

import jax
import numpy as np
import pytest

import jaxem
from helpers import blobs


@pytest.fixture
def setup():
    X, _ = blobs(seed=0, n=30)
    model = jaxem.GaussianMixture(3)
    return model, model.init(jax.random.key(0), X), X


def test_nan_in_X(setup):
    model, p, X = setup
    X = X.copy()
    X[4, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf.*row"):
        jaxem.fit(model, p, X)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.init(jax.random.key(0), X)


def test_wrong_rank(setup):
    model, p, X = setup
    with pytest.raises(ValueError, match="2-D.*reshape"):
        jaxem.fit(model, p, X[:, 0])


def test_feature_mismatch(setup):
    model, p, X = setup
    with pytest.raises(ValueError, match="3 features.*made for 2"):
        jaxem.fit(model, p, np.c_[X, X[:, :1]])
    with pytest.raises(ValueError, match="features"):
        model.score_samples(p, np.c_[X, X[:, :1]])


def test_negative_weights(setup):
    model, p, X = setup
    w = np.ones(len(X))
    w[0] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        jaxem.fit(model, p, X, weights=w)


def test_weight_shape(setup):
    model, p, X = setup
    with pytest.raises(ValueError, match=r"weights must have shape"):
        jaxem.fit(model, p, X, weights=np.ones(len(X) + 1))


def test_too_many_components(setup):
    _, _, X = setup
    with pytest.raises(ValueError, match="n_components=5 is larger.*positive weight \\(4\\)"):
        jaxem.GaussianMixture(5).init(jax.random.key(0), X[:4])
    model, p, X = setup
    w = np.zeros(len(X))
    w[:2] = 1
    with pytest.raises(ValueError, match="n_components=3"):
        jaxem.fit(model, p, X, weights=w)


def test_unknown_covariance_type():
    with pytest.raises(ValueError, match="unknown covariance_type 'ful'.*full"):
        jaxem.GaussianMixture(2, "ful")


def test_bad_options(setup):
    model, p, X = setup
    with pytest.raises(ValueError, match="adjoint"):
        jaxem.fit(model, p, X, adjoint="magic")
    with pytest.raises(ValueError, match="max_iter"):
        jaxem.fit(model, p, X, max_iter=0)
    with pytest.raises(ValueError, match="init method"):
        model.init(jax.random.key(0), X, method="nope")
    with pytest.raises(ValueError, match="reg_covar"):
        jaxem.GaussianMixture(2, reg_covar=-1.0)


def test_host_data_moved_without_compiling_and_not_aliased(caplog):
    """A NumPy X (and the default weights) reach the device with no compiled copy program, as a
    private copy: changing the caller's array afterwards changes nothing (jax.device_put alone would
    alias it on CPU). Integer data become floating; JAX arrays pass through."""
    import logging

    from jaxem._validate import as_data

    X = np.arange(12.0).reshape(6, 2)
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
        Xd, wd = as_data(X)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    X[0, 0] = 99.0
    assert float(Xd[0, 0]) == 0.0 and wd.dtype == Xd.dtype and float(wd.sum()) == 6.0
    Xi, _ = as_data(np.ones((3, 2), np.int32))
    assert jax.numpy.issubdtype(Xi.dtype, jax.numpy.floating)
    assert as_data(Xd)[0] is Xd or np.array_equal(as_data(Xd)[0], Xd)


def test_import_does_not_load_optax():
    """`import jaxem` stays light: optax is imported when a GradientMStep first runs."""
    import subprocess
    import sys

    code = "import sys, jaxem; assert 'optax' not in sys.modules, 'optax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
