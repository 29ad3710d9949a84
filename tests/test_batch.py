"""jaxem.batched: vmap semantics evaluated block by block (lax.map); the compacting loop of a
vmapped fit (jaxem._compact)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _compact
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


@pytest.fixture(scope="module")
def vmapped():
    """(keys, Xs, Ws, jax.jit(jax.vmap(_one)) of them): one compile shared by the tests."""
    Xs, Ws = _datasets()
    keys = jax.random.split(jax.random.key(0), Xs.shape[0])
    return keys, Xs, Ws, jax.jit(jax.vmap(_one))(keys, Xs, Ws)


@pytest.mark.parametrize("batch_size", [None, 1, 2, 4, 6])
def test_batched_equals_vmap(batch_size, vmapped):
    keys, Xs, Ws, want = vmapped
    got = jax.jit(jaxem.batched(_one, batch_size=batch_size))(keys, Xs, Ws)  # 4: remainder block
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Each member keeps its own stopping point.
    assert len(set(np.asarray(got.n_iter).tolist())) > 1


@pytest.mark.parametrize("n_members,n_threads", [(6, 2), (5, 2), (5, 3), (6, 4)])
def test_batched_threads_equal_vmap(n_members, n_threads, vmapped):
    """An eager call split over threads: equal parts, the last one overlapping the one before
    when the batch does not divide (5 over 2: members 0-2 and 2-4; 6 over 4: 0-1, 2-3, 4-5)."""
    keys, Xs, Ws, want = vmapped
    keys, Xs, Ws = keys[:n_members], Xs[:n_members], Ws[:n_members]
    want = jax.tree_util.tree_map(lambda a: a[:n_members], want)
    got = jaxem.batched(_one, n_threads=n_threads)(keys, Xs, Ws)
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert got.n_iter.shape == (n_members,)


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


def test_vmapped_fit_compacts_finished_members(monkeypatch, vmapped):
    """Under vmap the k-means and EM loops run in levels of shrinking width (here 6 members, then
    the 2 still running): the same fits as the plain batched loops."""
    monkeypatch.setattr(_compact, "_MIN_BATCH", 2)
    monkeypatch.setattr(_compact, "_MIN_WIDTH", 2)
    monkeypatch.setattr(_compact, "_RATIO", 3)
    levels = []
    widths = _compact.widths
    monkeypatch.setattr(_compact, "widths", lambda b: levels.append(widths(b)) or widths(b))
    keys, Xs, Ws, want = vmapped
    # max_iter=31: a new trace (not the batched one cached from `vmapped`); no member reaches 30
    one = lambda key, X, w: jaxem.fit(MODEL, MODEL.init(key, X, w), X, weights=w, max_iter=31)
    got = jax.jit(jax.vmap(one))(keys, Xs, Ws)
    assert levels and all(l == [6, 2] for l in levels)  # EM (k-means too, unless cached)
    assert int(want.n_iter.max()) < 30
    assert_tree_allclose(got._replace(trace=got.trace[:, :30]), want, rtol=1e-10, atol=1e-12)
    assert len(set(np.asarray(got.n_iter).tolist())) > 1


def _collatz_steps(loop):
    step = lambda c: (jnp.where(c[0] % 2 == 0, c[0] // 2, 3 * c[0] + 1), c[1] + 1)
    return lambda n: loop(lambda c: c[0] > 1, step, (n, 0))[1]


def _newton_sqrt(loop):
    return lambda a: loop(lambda y: jnp.abs(y * y - a) > 1e-12 * a, lambda y: (y + a / y) / 2, a)


def test_compacting_loop_equals_while_loop_under_vmap_and_jvp():
    """`jaxem._compact.while_loop` over 200 members (levels 200, 34): jax.lax.while_loop's values,
    and its forward derivatives (Newton's square root: d√a/da = 1/(2√a))."""
    assert _compact.widths(200) == [200, 34]
    n = jnp.arange(1, 201)
    np.testing.assert_array_equal(jax.jit(jax.vmap(_collatz_steps(_compact.while_loop)))(n),
                                  jax.vmap(_collatz_steps(jax.lax.while_loop))(n))
    a = jnp.linspace(0.5, 1e4, 200)
    jvp = lambda loop: jax.jit(jax.vmap(lambda a: jax.jvp(_newton_sqrt(loop), (a,), (1.0,))))(a)
    (y, dy), (y0, dy0) = jvp(_compact.while_loop), jvp(jax.lax.while_loop)
    np.testing.assert_allclose(y, y0, rtol=1e-14)
    np.testing.assert_allclose(dy, dy0, rtol=1e-12)
    np.testing.assert_allclose(dy, 0.5 / np.sqrt(a), rtol=1e-10)
    # jvp of vmap: the levels' loops, gathers and scatters differentiated
    y1, dy1 = jax.jit(lambda a: jax.jvp(jax.vmap(_newton_sqrt(_compact.while_loop)), (a,),
                                        (jnp.ones_like(a),)))(a)
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(dy1, dy0, rtol=1e-12)
