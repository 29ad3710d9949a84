"""Streaming reductions over row blocks: sums of per-chunk statistics without N-sized intermediates."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxpr_as_fun

from . import _shard
from ._where import where

# Rows per block when the caller does not choose: big enough for efficient GEMMs, small enough that
# the (chunk, K, D) working set stays in cache.
_TARGET_ELEMENTS = 1 << 18


def auto_chunk_size(n_rows: int, width: int) -> int:
    """Rows per chunk so that a ``(chunk, width)`` intermediate has about 2**18 elements (a multiple
    of 256 rows, at least 256)."""
    size = max(256, _TARGET_ELEMENTS // max(width, 1) // 256 * 256)
    return int(min(n_rows, size))


def chunked_sum(fn: Callable, X: jax.Array, w: jax.Array, chunk_size: int | None, width: int):
    """``sum over row blocks b of fn(X[b], w[b])`` for a pytree-valued ``fn``.

    The blocks are visited by `jax.lax.scan`, so only one block's intermediates are alive at a time.
    ``fn`` must give zero contributions for zero-weight rows (see `chunked_sum_rows`).

    Args:
      fn: ``fn(X_block (c, D), w_block (c,)) -> pytree`` of sums over the block.
      X: ``(N, D)`` data.
      w: ``(N,)`` weights.
      chunk_size: rows per block; None chooses one from ``width`` (the size of the widest per-row
        intermediate, e.g. ``K * D``).
      width: see ``chunk_size``.
    """
    return chunked_sum_rows(fn, (X, w), chunk_size, width)


def _block_indices(nb: int) -> np.ndarray:
    """0 .. nb-1 for a scan over blocks, as a NumPy array: a constant of the program, where
    `jnp.arange` is an iota that XLA's CPU backend compiles as a kernel of its own (~6 ms each)."""
    return np.arange(nb)


def _accumulator(shapes, varying: tuple = ()):
    """``(zero, add, result)`` for a streamed sum of the pytree ``shapes`` (of
    `jax.ShapeDtypeStruct`): ``acc = zero``, ``acc = add(acc, block_sums)``, ``result(acc)``.

    ``varying``: the `jax.shard_map` axes the sums vary over (the zero is cast to match, as a scan's
    carry keeps its type).

    Leaves of one dtype are summed as ONE flat vector: the scan starts from one zero vector and adds
    each block in one fused kernel, where a pytree costs a broadcast and an add kernel per leaf
    (XLA's CPU backend compiles each separately, ~6 ms apiece). Mixed dtypes stay a pytree.
    Below float64 the flat sum is compensated (Neumaier): the error over B blocks stays ~eps
    instead of growing like eps·√B.
    """
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    vary = lambda z: _shard.varying(z, varying)
    if len({x.dtype for x in leaves}) != 1:
        zero = jax.tree_util.tree_map(lambda x: vary(jnp.zeros(x.shape, x.dtype)), shapes)
        return zero, lambda acc, sums: jax.tree_util.tree_map(jnp.add, acc, sums), lambda acc: acc
    sizes = [math.prod(x.shape) for x in leaves]
    ends = np.cumsum(sizes)
    dtype = leaves[0].dtype

    def unflatten(flat):
        return jax.tree_util.tree_unflatten(
            tree, [flat[e - n:e].reshape(x.shape) for x, n, e in zip(leaves, sizes, ends)])

    def flat(sums):
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(sums)])

    if jnp.dtype(dtype).itemsize >= 8:
        return vary(jnp.zeros(int(ends[-1]), dtype)), lambda acc, sums: acc + flat(sums), unflatten

    # float32 (and narrower): compensated summation (Neumaier 1974) over the blocks, the carry
    # stacking the running sum and its lost low-order part: one fused elementwise kernel per block.
    # Without it the error of N=2M float32 rows in ~50 blocks was ~3x that of one block's sum.
    def add(acc, sums):
        s, comp = acc[0], acc[1]
        x = flat(sums)
        t = s + x
        lost = where(jnp.abs(s) >= jnp.abs(x), (s - t) + x, (x - t) + s)
        return jnp.stack([t, comp + lost])

    return vary(jnp.zeros((2, int(ends[-1])), dtype)), add, lambda acc: unflatten(acc[0] + acc[1])


def _reader(rows: tuple, c: int):
    """``(number of blocks, read)``: ``read(i)`` is block i of every array in ``rows``, read in place
    with `jax.lax.dynamic_slice`. The last block is the last ``c`` rows, overlapping its
    predecessor; in it the rows that block i-1 already covered are zeroed in the last array of
    ``rows`` (the weights), so every block has the same shape and ``fn`` is traced once."""
    n = rows[0].shape[0]
    nb = -(-n // c)

    def read(i):
        start = jnp.minimum(i * c, n - c)
        block = [jax.lax.dynamic_slice_in_dim(a, start, c, axis=0) for a in rows]
        if n % c:
            fresh = start + np.arange(c) >= i * c
            last = block[-1]
            block[-1] = where(fresh.reshape((c,) + (1,) * (last.ndim - 1)), last, 0)
        return tuple(block)

    return nb, read


def _traced_once(fn: Callable, rows: tuple, c: int):
    """``fn`` traced once on blocks of ``c`` rows of ``rows``: ``(g, out)`` where ``g(*block)``
    replays that trace (binding its primitives, not re-running ``fn``'s Python) and ``out`` is the
    output's pytree of `jax.ShapeDtypeStruct`. Halves the tracing of a streamed pass, which needs
    the output shapes (the scan's initial carry) before its body is traced. Inside a
    `jax.shard_map` the blocks carry the rows' varying axes, so the replay type-checks."""
    def block(a):
        t = _shard.manual_type(a)
        kw = {} if t is None or not t.varying else dict(manual_axis_type=t,
                                                        sharding=jax.typeof(a).sharding)
        return jax.ShapeDtypeStruct((c,) + a.shape[1:], a.dtype, **kw)

    blocks = [block(a) for a in rows]
    closed, out = jax.make_jaxpr(fn, return_shape=True)(*blocks)
    replay = jaxpr_as_fun(closed)
    tree = jax.tree_util.tree_structure(out)
    return lambda *block: jax.tree_util.tree_unflatten(tree, replay(*block)), out


def _split(a):
    """How the rows of ``a`` are split over devices (a `jaxem._shard.Rows` or None): as the traced
    program says (`jaxem._shard.sharded_rows`), or, for a concrete array outside any program (an
    eager call), as its sharding says."""
    split = _shard.current()
    if split is None and not isinstance(a, jax.core.Tracer):
        split = _shard.row_sharding(a)
    return split


def chunked_sum_rows(fn: Callable, rows: tuple, chunk_size: int | None, width: int):
    """`chunked_sum` for any tuple of row-aligned arrays: ``sum_b fn(*(a[b] for a in rows))``.

    Blocks are read in place (no padded copy of the data) by one `jax.lax.scan`, so ``fn`` is
    traced and compiled once. The last block overlaps its predecessor, with the overlap zeroed in
    the last array of ``rows``: ``fn`` must give zero contributions for rows whose entry in the
    last array is zero (the weights, or weighted responsibilities).
    """
    n = rows[0].shape[0]
    split = _split(rows[0])
    if _shard.applies(split, n):  # rows split over devices: each sums its own, one psum
        return _shard.reduce_rows(split, lambda *r: chunked_sum_rows(fn, r, chunk_size, width),
                                  rows)
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(*rows)
    nb, read = _reader(rows, c)
    fn, shapes = _traced_once(fn, rows, c)
    zero, add, result = _accumulator(shapes, _shard.varying_axes(rows))

    def body(acc, i):
        return add(acc, fn(*read(i))), None

    return result(jax.lax.scan(body, zero, _block_indices(nb))[0])


def chunked_map(fn: Callable, X: jax.Array, chunk_size: int | None, width: int) -> jax.Array:
    """Row-wise ``fn(X_block) -> (c,)`` applied block by block, concatenated (no padded copy of X;
    ``fn`` traced once)."""
    n = X.shape[0]
    split = _split(X)
    if _shard.applies(split, n):  # each device maps its own rows
        return _shard.map_rows(split, lambda x: chunked_map(fn, x, chunk_size, width), (X,))
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(X)
    nb = -(-n // c)
    out = jax.lax.map(lambda i: fn(jax.lax.dynamic_slice_in_dim(X, jnp.minimum(i * c, n - c), c)),
                      _block_indices(nb))
    # The last block holds rows n-c .. n-1; the first (nb-1)·c - (n-c) of them are already out.
    return jnp.concatenate([out[:-1].reshape(-1), out[-1, (nb - 1) * c - (n - c):]])


def chunked_map_sum(fn: Callable, rows: tuple, chunk_size: int | None, width: int):
    """One streamed pass giving both a sum and a row-wise map: ``fn(*block) -> (sums, per_row)``
    with ``per_row`` of shape ``(c, ...)``; returns ``(Σ_blocks sums, per_row for all N rows)``.
    The sums follow `chunked_sum_rows` (overlap zeroed in the last array of ``rows``)."""
    n = rows[0].shape[0]
    split = _split(rows[0])
    if _shard.applies(split, n):
        return _shard.map_reduce_rows(
            split, lambda *r: chunked_map_sum(fn, r, chunk_size, width), rows)
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(*rows)
    nb, read = _reader(rows, c)
    fn, shapes = _traced_once(fn, rows, c)
    zero, add, result = _accumulator(shapes[0], _shard.varying_axes(rows))

    def body(acc, i):
        sums, per_row = fn(*read(i))
        return add(acc, sums), per_row

    total, out = jax.lax.scan(body, zero, _block_indices(nb))
    total = result(total)
    skip = (nb - 1) * c - (n - c)  # rows of the last block already given by its predecessor
    return total, jnp.concatenate([out[:-1].reshape((-1,) + out.shape[2:]), out[-1, skip:]])
