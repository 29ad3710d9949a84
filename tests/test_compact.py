"""The compacting loop (jaxem._compact): under vmap, finished members dropped in levels of
shrinking width, with the plain batched loop's results and forward derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _compact
from helpers import assert_tree_allclose, blobs

MODEL = jaxem.GaussianMixture(2)
_OPTS = dict(jaxem.COMPILER_OPTIONS)
jit = lambda f: jax.jit(f, compiler_options=_OPTS)


@pytest.fixture(scope="module")
def vmapped():
    """(P0, Xs, Ws, the plain jax.jit(jax.vmap) of their fits: 6 members, one level)."""
    Xs = np.stack([blobs(seed=s, n=40, d=2, k=2)[0] for s in range(6)])
    Ws = np.ones((6, 40))
    Ws[1, 30:] = 0.0  # a ragged member: its last 10 rows are padding
    Xs, Ws = jnp.asarray(Xs), jnp.asarray(Ws)
    keys = jax.random.split(jax.random.key(0), 6)
    init = lambda k, X, w: MODEL.init(k, X, w, method="random_from_data")
    P0 = jit(jax.vmap(init))(keys, Xs, Ws)
    one = lambda p, X, w: jaxem.fit(MODEL, p, X, weights=w, max_iter=30)
    assert _compact.widths(6) == [6]
    return P0, Xs, Ws, jit(jax.vmap(one))(P0, Xs, Ws)


def test_vmapped_fit_compacts_finished_members(monkeypatch, vmapped):
    """Under vmap the EM loop runs in levels of shrinking width (here 6 members, then the 2 still
    running): the same fits as the plain batched loop."""
    monkeypatch.setattr(_compact, "_MIN_BATCH", 2)
    monkeypatch.setattr(_compact, "_MIN_WIDTH", 2)
    monkeypatch.setattr(_compact, "_RATIO", 3)
    levels = []
    widths = _compact.widths
    monkeypatch.setattr(_compact, "widths", lambda b: levels.append(widths(b)) or widths(b))
    P0, Xs, Ws, want = vmapped
    # max_iter=31: a new trace (not the batched one cached from `vmapped`); no member reaches 30
    one = lambda p, X, w: jaxem.fit(MODEL, p, X, weights=w, max_iter=31)
    got = jit(jax.vmap(one))(P0, Xs, Ws)
    assert levels == [[6, 2]]
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
    np.testing.assert_array_equal(jit(jax.vmap(_collatz_steps(_compact.while_loop)))(n),
                                  jax.vmap(_collatz_steps(jax.lax.while_loop))(n))
    a = jnp.linspace(0.5, 1e4, 200)
    jvp = lambda loop: jit(jax.vmap(lambda a: jax.jvp(_newton_sqrt(loop), (a,), (1.0,))))(a)
    (y, dy), (y0, dy0) = jvp(_compact.while_loop), jvp(jax.lax.while_loop)
    np.testing.assert_allclose(y, y0, rtol=1e-14)
    np.testing.assert_allclose(dy, dy0, rtol=1e-12)
    np.testing.assert_allclose(dy, 0.5 / np.sqrt(a), rtol=1e-10)
    # jvp of vmap: the levels' loops, gathers and scatters differentiated
    y1, dy1 = jit(lambda a: jax.jvp(jax.vmap(_newton_sqrt(_compact.while_loop)), (a,),
                                        (jnp.ones_like(a),)))(a)
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(dy1, dy0, rtol=1e-12)
