"""Streaming reductions over row blocks: sums of per-chunk statistics without N-sized intermediates."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# Rows per block when the caller does not choose: big enough for efficient GEMMs, small enough that
# the (chunk, K, D) working set stays in cache.
_TARGET_ELEMENTS = 1 << 18


def auto_chunk_size(n_rows: int, width: int) -> int:
    """Rows per chunk so that a ``(chunk, width)`` intermediate has about 2**18 elements."""
    size = max(256, _TARGET_ELEMENTS // max(width, 1))
    return int(min(n_rows, size))


def chunked_sum(fn: Callable, X: jax.Array, w: jax.Array, chunk_size: int | None, width: int):
    """``sum over row blocks b of fn(X[b], w[b])`` for a pytree-valued ``fn``.

    The rows are padded with zero-weight zero rows to a multiple of ``chunk_size`` and the blocks are
    visited by `jax.lax.scan`, so only one block's intermediates are alive at a time. ``fn`` must give
    zero contributions for zero-weight rows.

    Args:
      fn: ``fn(X_block (c, D), w_block (c,)) -> pytree`` of sums over the block.
      X: ``(N, D)`` data.
      w: ``(N,)`` weights.
      chunk_size: rows per block; None chooses one from ``width`` (the size of the widest per-row
        intermediate, e.g. ``K * D``).
      width: see ``chunk_size``.
    """
    return chunked_sum_rows(fn, (X, w), chunk_size, width)


def _blocks(rows: tuple, c: int):
    """(number of full blocks, block reader by index, padded remainder block or None)."""
    n = rows[0].shape[0]
    nb, rem = divmod(n, c)
    read = lambda i: tuple(jax.lax.dynamic_slice_in_dim(a, i * c, c, axis=0) for a in rows)
    last = None
    if rem:  # only the remainder is copied (padded with zero rows to the block shape)
        last = tuple(jnp.pad(a[nb * c:], ((0, c - rem),) + ((0, 0),) * (a.ndim - 1)) for a in rows)
    return nb, read, last


def chunked_sum_rows(fn: Callable, rows: tuple, chunk_size: int | None, width: int):
    """`chunked_sum` for any tuple of row-aligned arrays: ``sum_b fn(*(a[b] for a in rows))``.

    Blocks are read in place with `jax.lax.dynamic_slice` (no padded copy of the data); the last,
    partial block is padded with zero rows, so ``fn`` must give zero contributions for all-zero
    rows of the weights.
    """
    n = rows[0].shape[0]
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(*rows)
    nb, read, last = _blocks(rows, c)

    def body(acc, i):
        return jax.tree_util.tree_map(jnp.add, acc, fn(*read(i))), None

    total, _ = jax.lax.scan(body, fn(*read(0)), jnp.arange(1, nb))
    if last is not None:
        total = jax.tree_util.tree_map(jnp.add, total, fn(*last))
    return total


def chunked_map(fn: Callable, X: jax.Array, chunk_size: int | None, width: int) -> jax.Array:
    """Row-wise ``fn(X_block) -> (c,)`` applied block by block, concatenated (no padded copy of X)."""
    n = X.shape[0]
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(X)
    nb, read, last = _blocks((X,), c)
    out = jax.lax.map(lambda i: fn(*read(i)), jnp.arange(nb)).reshape(-1)
    if last is not None:
        out = jnp.concatenate([out, fn(*last)[: n - nb * c]])
    return out
