"""jaxem.batched: vmap semantics evaluated block by block (lax.map)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem._batch import auto_batch_size, auto_threads
from helpers import assert_tree_allclose, blobs

MODEL = jaxem.GaussianMixture(2)


def _datasets(b=6, n=40):
    Xs = np.stack([blobs(seed=s, n=n, d=2, k=2)[0] for s in range(b)])
    Ws = np.ones((b, n))
    Ws[1, 30:] = 0.0  # a ragged member: its last 10 rows are padding
    return jnp.asarray(Xs), jnp.asarray(Ws)


def _one(key, X, w):
    return jaxem.fit(MODEL, MODEL.init(key, X, w), X, weights=w, max_iter=30)


@pytest.mark.parametrize("batch_size", [None, 1, 2, 4, 6])
def test_batched_equals_vmap(batch_size):
    Xs, Ws = _datasets()
    keys = jax.random.split(jax.random.key(0), Xs.shape[0])
    want = jax.jit(jax.vmap(_one))(keys, Xs, Ws)
    got = jax.jit(jaxem.batched(_one, batch_size=batch_size))(keys, Xs, Ws)  # 4: remainder block
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Each member keeps its own stopping point.
    assert len(set(np.asarray(got.n_iter).tolist())) > 1


@pytest.mark.parametrize("n_members,n_threads", [(6, 2), (5, 2), (5, 3), (6, 4)])
def test_batched_threads_equal_vmap(n_members, n_threads):
    """An eager call split over threads: equal parts, the last one overlapping the one before
    when the batch does not divide (5 over 2: members 0-2 and 2-4; 6 over 4: 0-1, 2-3, 4-5)."""
    Xs, Ws = _datasets(b=n_members)
    keys = jax.random.split(jax.random.key(0), n_members)
    want = jax.jit(jax.vmap(_one))(keys, Xs, Ws)
    got = jaxem.batched(_one, n_threads=n_threads)(keys, Xs, Ws)
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert got.n_iter.shape == (n_members,)


@pytest.mark.slow  # CI's 10-minute budget (10-20 s of compiles); run with -m slow
def test_batched_gradient_equals_vmap():
    Xs, Ws = _datasets(b=3)
    p0 = jax.vmap(lambda X, w: MODEL.init(jax.random.key(0), X, w))(Xs, Ws)
    fit_ll = lambda p, X, w: jaxem.fit(MODEL, p, X, weights=w, max_iter=200, tol=1e-10).log_likelihood
    loss = lambda mapper: lambda Xs: jnp.sum(mapper(fit_ll)(p0, Xs, Ws))
    g_map = jax.grad(loss(lambda f: jaxem.batched(f, batch_size=1)))(Xs)
    g_vmap = jax.grad(loss(jax.vmap))(Xs)
    np.testing.assert_allclose(g_map, g_vmap, rtol=1e-7, atol=1e-10)


def test_batched_errors():
    Xs, Ws = _datasets()
    with pytest.raises(ValueError, match="same leading batch"):
        jaxem.batched(lambda X, w: X.sum())(Xs, Ws[:3])
    with pytest.raises(ValueError, match="batch_size"):
        jaxem.batched(lambda X, w: X.sum(), batch_size=0)(Xs, Ws)
    with pytest.raises(ValueError, match="n_threads"):
        jaxem.batched(lambda X, w: X.sum(), n_threads=0)(Xs, Ws)


def test_auto_batch_size():
    assert auto_batch_size(2000, 10**3, backend="cpu") == 1
    assert auto_batch_size(2000, 100, backend="cpu") == 10
    assert auto_batch_size(7, 100, backend="cpu") == 7  # 10 > 7 members: all of them
    assert auto_batch_size(14, 100, backend="cpu") == 7  # largest divisor of 14 <= 10
    assert auto_batch_size(2000, 10**3, backend="gpu") == 2000


def test_auto_threads():
    assert auto_threads(2000, 1000, backend="gpu") == 1
    assert auto_threads(2000, 10**6, backend="cpu") == 1  # big members: XLA threads them itself
    assert 1 <= auto_threads(2000, 1000, backend="cpu") <= 2000
    assert auto_threads(1, 1000, backend="cpu") == 1


@pytest.mark.parametrize("n_threads", [1, 2])
def test_new_wrapper_of_the_same_function_does_not_recompile(caplog, n_threads):
    """`jaxem.batched(f)` made again (e.g. in a loop) finds the programs of the first wrapper: its
    call compiles nothing (single program, and threaded parts + join), with the same results."""
    import logging

    def f(x, y):
        return jnp.sum(x * y) + jnp.max(x)

    xs = jnp.arange(12.0).reshape(4, 3)
    first = jaxem.batched(f, batch_size=2, n_threads=n_threads)(xs, xs + 1.0)
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
        again = jaxem.batched(f, batch_size=2, n_threads=n_threads)(xs, xs + 1.0)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
    np.testing.assert_allclose(np.asarray(first), np.asarray(jax.vmap(f)(xs, xs + 1.0)))
    g = lambda x, y: f(x, y) + 1.0  # a different function: compiled anew
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
        other = jaxem.batched(g, batch_size=2, n_threads=n_threads)(xs, xs + 1.0)
    assert [r for r in caplog.records if "Compiling" in r.getMessage()]
    np.testing.assert_allclose(np.asarray(other), np.asarray(first) + 1.0)
