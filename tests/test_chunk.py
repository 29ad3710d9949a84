"""Row-block streaming: sums and maps over blocks equal the unchunked computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxem._chunk import auto_chunk_size, chunked_map, chunked_sum, chunked_sum_rows


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
