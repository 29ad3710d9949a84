"""Row-block streaming: sums and maps over blocks equal the unchunked computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxem._chunk import auto_chunk_size, chunked_map, chunked_map_sum, chunked_sum, chunked_sum_rows


@pytest.mark.parametrize("n, c", [(100, 10), (101, 10), (109, 10), (7, 10), (256, 255)])
def test_chunked_sum_and_map_equal_direct(n, c):
    rng = np.random.default_rng(n)
    X = jnp.asarray(rng.normal(size=(n, 3)))
    w = jnp.asarray(rng.uniform(size=n))
    fn = lambda x, wb: (jnp.sum(wb[:, None] * x * x, 0), jnp.sum(wb))
    got = chunked_sum(fn, X, w, c, 1)
    want = fn(X, w)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-12)
    # A 2-d "weights" array (weighted responsibilities) as the last of several row arrays.
    R = jnp.asarray(rng.uniform(size=(n, 4)))
    got = chunked_sum_rows(lambda x, r: r.T @ x, (X, R), c, 1)
    np.testing.assert_allclose(got, R.T @ X, rtol=1e-12)
    np.testing.assert_allclose(chunked_map(lambda x: jnp.sum(x, 1), X, c, 1), jnp.sum(X, 1),
                               rtol=1e-12)


def test_auto_chunk_size():
    assert auto_chunk_size(10**6, 256) == 1024
    assert auto_chunk_size(100, 256) == 100
    assert auto_chunk_size(10**6, 10**6) == 256  # at least 256 rows
    assert auto_chunk_size(10**6, 153) % 256 == 0


@pytest.mark.parametrize("n, c", [(100, 10), (109, 10), (7, 10)])
def test_chunked_map_sum_equals_direct(n, c):

    rng = np.random.default_rng(n)
    X = jnp.asarray(rng.normal(size=(n, 3)))
    w = jnp.asarray(rng.uniform(size=n))
    fn = lambda x, wb: (jnp.sum(wb[:, None] * x, 0), jnp.argmax(x, 1))
    total, per_row = chunked_map_sum(fn, (X, w), c, 1)
    want_total, want_rows = fn(X, w)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)
    np.testing.assert_array_equal(per_row, want_rows)


def test_kmeans_streamed_over_blocks_matches_sklearn():
    """70,000 rows: the Lloyd sweeps run over several row blocks. Centers are the weighted means of
    the returned labels, and the inertia matches scikit-learn's KMeans."""
    from sklearn.cluster import KMeans

    from jaxem._init import kmeans

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 2)) * 5
    X = centers[rng.integers(0, 4, 70_000)] + rng.normal(size=(70_000, 2))
    w = np.ones(len(X))
    C, labels = kmeans(jax.random.key(0), jnp.asarray(X), jnp.asarray(w), 4)
    C, labels = np.asarray(C), np.asarray(labels)
    for k in range(4):
        np.testing.assert_allclose(C[k], X[labels == k].mean(0), rtol=1e-9)
    inertia = np.sum((X - C[labels]) ** 2)
    sk = KMeans(4, n_init=1, random_state=0).fit(X)
    assert inertia <= sk.inertia_ * (1 + 1e-3)  # both stop on a center-shift tolerance


def test_kmeans_plusplus_streamed_equals_whole(monkeypatch):
    """Over blocks of rows (as for large N; here 64-row blocks, the last one overlapping) k-means++
    draws the same seeds as over all rows at once, weights included."""
    from jaxem import _init

    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(1000, 3)) + 4 * rng.integers(0, 5, (1000, 1)))
    w = jnp.asarray(rng.uniform(0.5, 2.0, 1000)).at[:50].set(0.0)  # zero weights: never seeds
    seeds = lambda: jax.jit(lambda k: _init.kmeans_plusplus(k, X, w, 6)[1])(jax.random.key(3))
    whole = np.asarray(seeds())
    monkeypatch.setattr(_init, "_SWEEP_ROWS", 64)
    np.testing.assert_array_equal(np.asarray(seeds()), whole)
    assert len(set(whole.tolist())) == 6 and np.all(whole >= 50)


def test_streamed_pass_traces_its_block_once():
    """A streamed pass needs the block's output shapes before its loop body is traced; the block
    function's Python still runs once (the body replays that trace), with the same result."""
    calls = []

    def fn(x, wb):
        calls.append(1)
        return jnp.sum(wb[:, None] * x, 0), wb[:, None] * x[:, :1]

    X = jnp.asarray(np.random.default_rng(0).normal(size=(103, 3)))
    w = jnp.asarray(np.random.default_rng(1).uniform(size=103))
    total, per_row = jax.jit(lambda X, w: chunked_map_sum(fn, (X, w), 10, 1))(X, w)
    assert len(calls) == 1
    np.testing.assert_allclose(total, w @ X, rtol=1e-12)
    np.testing.assert_allclose(per_row[:, 0], w * X[:, 0], rtol=1e-12)
    calls.clear()
    jax.jit(lambda X, w: chunked_sum(lambda x, wb: fn(x, wb)[0], X, w, 10, 1))(X, w)
    assert len(calls) == 1


def test_streamed_sum_of_a_pytree_keeps_shapes_and_dtypes():
    """One dtype: the leaves are accumulated as one flat vector and come back in their shapes;
    mixed dtypes (an integer count) are summed leaf by leaf, exactly."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(53, 3)))
    w = jnp.asarray(rng.uniform(size=53))
    fn = lambda x, wb: {"s": jnp.sum(wb), "m": (wb[:, None] * x).T @ x, "v": wb @ x}
    got, want = chunked_sum(fn, X, w, 10, 1), fn(X, w)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-12)
    count = lambda x, wb: (jnp.sum(wb > 0, dtype=jnp.int32), jnp.sum(wb))
    n_pos, total = chunked_sum(count, X, w.at[5].set(0.0), 10, 1)
    assert n_pos.dtype == jnp.int32 and int(n_pos) == 52
    np.testing.assert_allclose(total, float(jnp.sum(w.at[5].set(0.0))), rtol=1e-12)
