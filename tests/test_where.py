"""`jaxem._where.where` is `jnp.where` without the nested jit, and the loop's finiteness check sees
every non-finite entry of every floating leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxem._fit import _all_finite
from jaxem._where import select, where

_rng = np.random.default_rng(0)
CASES = [
    (_rng.random((3, 4)) > 0.5, _rng.normal(size=(3, 4)), 0.0),  # weak Python scalar
    (_rng.random((3, 1)) > 0.5, np.ones(4, np.float32), 2.0),  # broadcasting, float32 kept
    (True, np.arange(3), -1),  # Python bool condition, integers
    (np.array(False), np.ones((2, 2), np.float32), np.zeros((2, 2), np.float64)),  # promotion
    (np.array([1, 0, 2]), np.arange(3), np.arange(3) * 10),  # non-boolean condition
    (_rng.random(5) > 0.5, np.float32(1.0), np.full(5, np.nan, np.float32)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_where_equals_jnp_where(case):
    c, x, y = CASES[case]
    expected = jnp.where(c, x, y)
    for got in (where(c, x, y), jax.jit(where)(c, x, y)):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_where_has_no_nested_jit_and_differentiates_and_vmaps():
    jaxpr = jax.make_jaxpr(lambda c, x: where(c, x, 0.0))(jnp.array([True, False]), jnp.ones(2))
    assert [e.primitive.name for e in jaxpr.eqns if e.primitive.name in ("pjit", "jit")] == []
    f = lambda x: jnp.sum(where(x > 0, x**2, -x))
    np.testing.assert_allclose(jax.grad(f)(jnp.array([-1.0, 2.0])), [-1.0, 4.0])
    out = jax.vmap(lambda c, x: where(c, x, 0.0))(jnp.array([True, False]), jnp.ones((2, 3)))
    np.testing.assert_array_equal(out, [[1, 1, 1], [0, 0, 0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("leaf", [0, 1, 2])
def test_all_finite_sees_any_nonfinite_entry(bad, leaf):
    tree = [np.ones(3), np.full((40, 40), 2.0), (np.float64(5.0), np.arange(4))]  # an int leaf too
    assert bool(jax.jit(_all_finite)(tree))
    flat, treedef = jax.tree_util.tree_flatten(tree)
    bad_leaf = np.array(flat[leaf], np.float64)
    bad_leaf.flat[bad_leaf.size // 2] = bad
    flat[leaf] = bad_leaf
    assert not bool(jax.jit(_all_finite)(jax.tree_util.tree_unflatten(treedef, flat)))


def test_all_finite_of_huge_finite_values_and_under_vmap():
    big = np.full(1000, np.finfo(np.float32).max, np.float32)  # a sum of them overflows; 0·x not
    assert bool(jax.jit(_all_finite)([big]))
    batch = np.ones((3, 50))
    batch[1, 7] = np.nan
    np.testing.assert_array_equal(jax.vmap(_all_finite)([batch]), [True, False, True])
    assert bool(_all_finite([np.arange(3)]))  # no floating leaf: nothing can be non-finite


def test_select_picks_whole_pytrees():
    a = {"m": np.ones((2, 3)), "w": np.float32(1.0)}
    b = {"m": np.zeros((2, 3)), "w": np.float32(0.0)}
    for pred, want in ((True, a), (False, b)):
        got = select(jnp.bool_(pred), a, b)
        for k in a:
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == want[k].dtype
