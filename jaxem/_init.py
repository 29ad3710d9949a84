"""Initial responsibilities: k-means, k-means++ (Arthur & Vassilvitskii 2007), random, random rows.

Each function returns ``(N, K)`` responsibilities; a family turns them into parameters with its
M-step, as scikit-learn's ``init_params`` does.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


def _sq_dists(X, C):
    """``(N, K)`` squared Euclidean distances, as one matrix product."""
    d = jnp.sum(X * X, 1)[:, None] - 2.0 * X @ C.T + jnp.sum(C * C, 1)[None, :]
    return jnp.maximum(d, 0.0)


def kmeans_plusplus(key, X, w, n_clusters: int):
    """Greedy weighted k-means++ seeding; returns ``(centers (K, D), indices (K,))``.

    The first center is drawn ∝ w_n; each further one is the best (lowest potential) of
    2 + ⌊log K⌋ candidates drawn ∝ w_n · min_j ||x_n - c_j||², as in scikit-learn.
    """
    n_trials = 2 + int(math.log(n_clusters))
    key, k0 = jax.random.split(key)
    logw = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    i0 = jax.random.categorical(k0, logw)
    idx = jnp.zeros(n_clusters, jnp.int32).at[0].set(i0.astype(jnp.int32))
    closest = _sq_dists(X, X[i0][None])[:, 0]

    def body(j, carry):
        key, idx, closest = carry
        key, sub = jax.random.split(key)
        pot = w * closest
        logits = jnp.where(pot > 0, jnp.log(jnp.where(pot > 0, pot, 1.0)), -jnp.inf)
        # If every weighted point already coincides with a center, fall back to the weights.
        logits = jnp.where(jnp.any(pot > 0), logits, logw)
        cand = jax.random.categorical(sub, logits, shape=(n_trials,))
        d = jnp.minimum(closest[:, None], _sq_dists(X, X[cand]))  # (N, trials)
        best = jnp.argmin(jnp.sum(w[:, None] * d, 0))
        return key, idx.at[j].set(cand[best].astype(jnp.int32)), d[:, best]

    _, idx, _ = jax.lax.fori_loop(1, n_clusters, body, (key, idx, closest))
    return X[idx], idx


def kmeans(key, X, w, n_clusters: int, max_iter: int = 100):
    """Weighted Lloyd iterations from a k-means++ start; returns ``(centers, labels (N,))``.

    Stops when no label changes or after ``max_iter`` sweeps; an emptied cluster keeps its center.
    """
    centers, _ = kmeans_plusplus(key, X, w, n_clusters)

    def assign(C):
        return jnp.argmin(_sq_dists(X, C), axis=1)

    def body(state):
        i, C, labels, _ = state
        R = jax.nn.one_hot(labels, n_clusters, dtype=X.dtype) * w[:, None]
        nk = R.sum(0)
        C = jnp.where(nk[:, None] > 0, (R.T @ X) / jnp.where(nk > 0, nk, 1.0)[:, None], C)
        new = assign(C)
        return i + 1, C, new, jnp.any(new != labels)

    def cond(state):
        i, _, _, changed = state
        return (i < max_iter) & changed

    labels = assign(centers)
    _, centers, labels, _ = jax.lax.while_loop(cond, body, (0, centers, labels, True))
    return centers, labels


# Compiled once per shape and method: eager `model.init` calls would otherwise recompile the k-means
# loop on every call (its closures are new each time). Inlined under a caller's jit.
@functools.partial(jax.jit, static_argnames=("n_components", "method"))
def _initial_responsibilities(key, X, w, n_components: int, method: str):
    return _responsibilities(key, X, w, n_components, method)


def initial_responsibilities(key, X, w, n_components: int, method: str = "kmeans"):
    """``(N, K)`` starting responsibilities by scikit-learn's ``init_params`` rules (see
    `_responsibilities`); raises ValueError for an unknown method."""
    if method not in INIT_METHODS:
        raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
    return _initial_responsibilities(key, X, w, n_components=int(n_components), method=method)


def _responsibilities(key, X, w, n_components: int, method: str = "kmeans"):
    """``(N, K)`` starting responsibilities by scikit-learn's ``init_params`` rules.

    - ``"kmeans"``: one-hot labels of weighted k-means (k-means++ seeding then Lloyd).
    - ``"k-means++"``: one-hot on the k-means++ seeds only (each component starts from one row).
    - ``"random"``: uniform random rows, normalised.
    - ``"random_from_data"``: one-hot on K distinct rows drawn ∝ w.
    """
    K = n_components
    if method == "kmeans":
        _, labels = kmeans(key, X, w, K)
        return jax.nn.one_hot(labels, K, dtype=X.dtype)
    if method == "k-means++":
        _, idx = kmeans_plusplus(key, X, w, K)
        return jnp.zeros((X.shape[0], K), X.dtype).at[idx, jnp.arange(K)].set(1.0)
    if method == "random":
        r = jax.random.uniform(key, (X.shape[0], K), X.dtype)
        return r / r.sum(1, keepdims=True)
    if method == "random_from_data":
        p = w / jnp.sum(w)
        idx = jax.random.choice(key, X.shape[0], (K,), replace=False, p=p)
        return jnp.zeros((X.shape[0], K), X.dtype).at[idx, jnp.arange(K)].set(1.0)
    raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
