"""Shared problems and reference helpers for the tests."""

import jax
import jax.numpy as jnp
import numpy as np


def blobs(seed=0, n=120, d=2, k=3, spread=4.0, dtype=np.float64):
    """Well-separated Gaussian blobs: (X (n, d), labels (n,))."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    labels = rng.integers(0, k, size=n)
    X = centers[labels] + rng.normal(size=(n, d))
    return X.astype(dtype), labels


def sklearn_precisions(params, covariance_type):
    """precisions_init for scikit-learn from jaxem covariances."""
    cov = np.asarray(params.covariances)
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(cov)
    return 1.0 / cov


def sklearn_gmm_from(params, covariance_type, **kw):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=params.weights.shape[0],
        covariance_type=covariance_type,
        weights_init=np.asarray(params.weights),
        means_init=np.asarray(params.means),
        precisions_init=sklearn_precisions(params, covariance_type),
        **kw,
    )


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / (np.abs(b) + 1e-12)))


def assert_tree_allclose(a, b, **kw):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)
