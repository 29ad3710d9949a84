"""Initial responsibilities: k-means, k-means++ (Arthur & Vassilvitskii 2007), random, random rows.

Each function returns ``(N, K)`` responsibilities; a family turns them into parameters with its
M-step, as scikit-learn's ``init_params`` does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from . import _shard
from ._compact import while_loop
from ._chunk import chunked_map, chunked_map_sum, chunked_sum_rows
from ._compile import compiled
from ._precision import uniform
from ._validate import check_init_result
from ._where import where

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
# Rows per block of the k-means++ passes: large enough that the per-block overhead is nothing (at
# 4,096 rows a pass over 2M rows took 2.5x longer), small enough to bound XLA's scratch.
_SWEEP_ROWS = 1 << 18


def _sq_dists(X, C, ref=None):
    """``(N, K)`` squared Euclidean distances, as one matrix product.

    The expansion ||x||² - 2x·c + ||c||² is taken about ``ref`` (default: the centers' mean),
    ||x - c||² = ||x - r||² - 2(x - r)·(c - r) + ||c - r||²: about the origin it cancels
    catastrophically for data far from it (float32 at an offset of 1e4 lost every digit of the
    clusters' spread), about a point among the data its error is eps·spread². ``x - r`` is formed
    block by block inside the streamed sweep, never as a copy of X."""
    r = jnp.mean(C, 0) if ref is None else ref
    X, C = X - r, C - r
    d = jnp.sum(X * X, 1)[:, None] - 2.0 * X @ C.T + jnp.sum(C * C, 1)[None, :]
    return jnp.maximum(d, 0.0)


def _nearest(X, C, ref):
    """``(N,)`` int32 index of each row's nearest center, exact ties (discrete data) going to the
    first: a distance within 64 eps of the row's scale of the minimum counts as the minimum, so the
    choice never hinges on rounding (e.g. of ``ref``, which moves by an ulp when the weights are
    scaled: the labels must not)."""
    d = _sq_dists(X, C, ref)
    scale = jnp.sum((X - ref) ** 2, 1) + jnp.max(jnp.sum((C - ref) ** 2, 1))
    tol = 64 * jnp.finfo(d.dtype).eps * scale
    return jnp.argmax(d <= (jnp.min(d, 1) + tol)[:, None], axis=1).astype(jnp.int32)


def _draw(u, mass):
    """Indices drawn ∝ ``mass`` (N,) by inverting its CDF at uniforms ``u`` (t,): O(N t) compares
    and t random numbers (`jax.random.categorical` would need N t, which dominates small fits).
    The first index whose cumulative mass exceeds u·total, found by an argmax (one reduction; XLA
    splits an integer count over N into a tree of four kernels); the last row always qualifies."""
    n = mass.shape[0]
    cdf = jnp.cumsum(mass)
    past = (cdf[:, None] > (u * cdf[-1])[None, :]) | (np.arange(n) == n - 1)[:, None]
    return jnp.argmax(past, axis=0).astype(jnp.int32)


def _draw_rows(u, mass):
    """`_draw`, two-level when the rows are split over devices (`jaxem._shard.draw_rows`)."""
    rows = _shard.current()
    if _shard.applies(rows, mass.shape[0]):
        return _shard.draw_rows(rows, u, mass)
    return _draw(u, mass)


def _take(X, idx):
    """``X[idx]`` for a few row indices; with rows split over devices, a psum of the owners'
    rows instead of a gather of X (`jaxem._shard.take_rows`)."""
    rows = _shard.current()
    if not _shard.applies(rows, X.shape[0]):
        return X[idx]
    return _shard.take_rows(rows, X, jnp.atleast_1d(idx)).reshape(jnp.shape(idx) + X.shape[1:])


def kmeans_plusplus(key, X, w, n_clusters: int):
    """Greedy weighted k-means++ seeding; returns ``(centers (K, D), indices (K,))``.

    The first center is drawn ∝ w_n; each further one is the best (lowest potential) of
    2 + ⌊log K⌋ candidates drawn ∝ w_n · min_j ||x_n - c_j||², as in scikit-learn. All uniforms are
    drawn up front; draws invert the cumulative mass.
    """
    n_trials = 2 + int(math.log(n_clusters))
    u = uniform(key, (n_clusters, n_trials), X.dtype)  # the same in float32 and float64
    D = X.shape[1]

    def sq_dists(x, C):  # elementwise: fuses into its reductions (two GEMMs on X would copy X)
        return jnp.sum((x[:, None, :] - C[None]) ** 2, -1)

    # Large N: both passes go over blocks of rows. Over all N rows at once XLA makes each pass one
    # library fusion whose scratch grows with N (N=2M, float32: +130 MB RSS and 10% slower).
    def potentials(C, closest):  # Σ_n w_n min(closest_n, ||x_n - c_t||²) for each candidate t
        fn = lambda x, cl, wb: jnp.sum(wb[:, None] * jnp.minimum(cl[:, None], sq_dists(x, C)), 0)
        return chunked_sum_rows(fn, (X, closest, w), _SWEEP_ROWS, n_trials * D)

    def sq_dists_to(c):
        return chunked_map(lambda x: sq_dists(x, c[None])[:, 0], X, _SWEEP_ROWS, D)

    def body(j, carry):
        idx, closest = carry
        first = j == 0
        pot = w * closest
        # The first center is drawn ∝ w; so are later ones if every weighted point already
        # coincides with a center.
        # (a float max: one kernel)
        cand = _draw_rows(u[j], where(first | (jnp.max(pot) <= 0), w, pot))
        Xc = _take(X, cand)
        best_t = where(first, 0, jnp.argmin(potentials(Xc, closest)))
        best = cand[best_t]
        d = sq_dists_to(Xc[best_t])
        return idx.at[j].set(best), where(first, d, jnp.minimum(closest, d))

    # Initial carries that cost no kernel of their own. Any idx will do, as the loop sets every
    # idx[j]: a NumPy constant that is neither a fill nor 0, 1, ... (XLA would turn those into a
    # broadcast or an iota kernel). `closest` starts as w: at j = 0 it only enters discarded values.
    idx0 = np.arange(n_clusters, 0, -1, dtype=np.int32)
    idx, _ = jax.lax.fori_loop(0, n_clusters, body, (idx0, w))
    return _take(X, idx), idx


def kmeans(key, X, w, n_clusters: int, max_iter: int = 300, tol: float = 1e-4):
    """Weighted Lloyd iterations from a k-means++ start; returns ``(centers, labels (N,))``.

    Stops as scikit-learn's KMeans: when no label changes, when the centers move by at most
    ``tol`` times the mean per-feature variance of X (summed squared shift), or after ``max_iter``
    sweeps. Each sweep labels the rows by the current centers and moves every center to the mean
    of its rows; the returned centers are the means of the returned labels (with no label
    change they are also the labels' nearest centers). An emptied cluster keeps its center.
    """
    centers, _ = kmeans_plusplus(key, X, w, n_clusters)
    p = w / jnp.sum(w)
    mean = p @ X
    tol_abs = tol * jnp.mean(jnp.sum(p[:, None] * (X - mean) ** 2, 0))  # a fused reduction

    # One streamed pass per sweep: the labels of the current centers and the weighted sums of the
    # rows per label (no (N, K) distance or one-hot matrix is ever formed).
    # Distances and sums about the weighted mean (a point among the data): float32 stays exact
    # to rounding of the clusters' spread wherever the data sit (see `_sq_dists`).
    def sweep(x, wb, C):
        labels = _nearest(x, C, mean)
        R = jax.nn.one_hot(labels, n_clusters, dtype=X.dtype) * wb[:, None]
        return (R.sum(0), R.T @ (x - mean)), labels

    def body(state):
        i, C, labels, _ = state
        (nk, sx), new = chunked_map_sum(lambda x, wb: sweep(x, wb, C), (X, w), None,
                                        n_clusters * X.shape[1])
        C_new = where(nk[:, None] > 0, mean + sx / where(nk > 0, nk, 1.0)[:, None], C)
        changed = jnp.max(where(new != labels, 1.0, 0.0)) > 0  # a float max: one kernel
        go_on = changed & (jnp.sum((C_new - C) ** 2) > tol_abs)
        return i + 1, C_new, new, go_on

    def cond(state):
        i, _, _, go_on = state
        return (i < max_iter) & go_on

    labels = jnp.full(X.shape[0], -1, jnp.int32)
    _, centers, labels, _ = while_loop(cond, body, (0, centers, labels, True))
    return centers, labels


# Compiled once per (model, shapes, method): an eager `model.init` would otherwise recompile the
# k-means loops on every call (their closures are new each time). Inlined under a caller's jit.
@compiled(static_argnames=("model", "method", "rows"))
def _init_compiled(model, key, X, w, method: str, rows=None):
    # rows split over devices: data-parallel passes
    return _shard.traced(rows, lambda key, X, w: _init_rows(model, key, X, w, method), key, X, w)


def _init_rows(model, key, X, w, method: str, hard=None):
    """The start of ``model`` on traced rows; ``hard``: the ``_hard_start(key, X, w, K, method)``
    already traced (`jaxem.select_n_components` shares one k-means among covariance types)."""
    K = model.n_components
    if method != "random" and hasattr(model, "_m_step_labels"):  # no (N, K) array for hard starts
        labels, centers = _hard_start(key, X, w, K, method) if hard is None else hard
        return model._m_step_labels(labels, X, w, centers)
    return model.m_step(_responsibilities(key, X, w, K, method), X, w)


def init_from_responsibilities(model, key, X, w, method: str = "kmeans"):
    """``model.m_step`` of the starting responsibilities of ``method``: one compiled program per
    (model, shapes, method), so an eager ``model.init`` compiles once instead of op by op."""
    if method not in INIT_METHODS:
        raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
    params = _init_compiled(model, key, X, w, method=method, rows=_shard.row_sharding(X))
    check_init_result(params, X)  # eager: non-finite starting params are a ValueError
    return params


def _responsibilities(key, X, w, n_components: int, method: str = "kmeans"):
    """``(N, K)`` starting responsibilities by scikit-learn's ``init_params`` rules.

    - ``"kmeans"``: one-hot labels of weighted k-means (k-means++ seeding then Lloyd).
    - ``"k-means++"``: one-hot on the k-means++ seeds only (each component starts from one row).
    - ``"random"``: uniform random rows, normalised.
    - ``"random_from_data"``: one-hot on K distinct rows drawn ∝ w.
    """
    K = n_components
    if method == "random":
        r = uniform(key, (X.shape[0], K), X.dtype)
        return r / r.sum(1, keepdims=True)
    labels = _hard_start(key, X, w, K, method)[0]
    return jax.nn.one_hot(labels, K, dtype=X.dtype)  # -1: a zero row


def _hard_start(key, X, w, n_components: int, method: str):
    """``(labels (N,) int32, centers (K, D))``: k-means labels, or the component of each seed row
    and -1 elsewhere ("k-means++", "random_from_data"); and the means of those labels (k-means'
    centers, or the seed rows themselves), about which one M-step pass suffices."""
    K = n_components
    if method == "kmeans":
        centers, labels = kmeans(key, X, w, K)
        return labels.astype(jnp.int32), centers
    if method == "k-means++":
        _, idx = kmeans_plusplus(key, X, w, K)
    elif method == "random_from_data":
        # K rows ∝ w without replacement (Gumbel top-k, as `jax.random.choice` does), from
        # precision-independent uniforms.
        gumbel = -jnp.log(-jnp.log(uniform(key, (X.shape[0],), X.dtype)))
        idx = jax.lax.top_k(jnp.log(w) + gumbel, K)[1]
    else:
        raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
    labels = jnp.full(X.shape[0], -1, jnp.int32).at[idx].set(np.arange(K, dtype=np.int32))
    return labels, _take(X, idx)
