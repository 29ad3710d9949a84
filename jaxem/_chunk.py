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
    n = X.shape[0]
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(X, w)
    n_blocks = -(-n // c)
    pad = n_blocks * c - n
    Xb = jnp.pad(X, ((0, pad), (0, 0))).reshape(n_blocks, c, X.shape[1])
    wb = jnp.pad(w, (0, pad)).reshape(n_blocks, c)
    first = fn(Xb[0], wb[0])

    def body(acc, xw):
        out = fn(*xw)
        return jax.tree_util.tree_map(jnp.add, acc, out), None

    total, _ = jax.lax.scan(body, first, (Xb[1:], wb[1:]))
    return total


def chunked_map(fn: Callable, X: jax.Array, chunk_size: int | None, width: int) -> jax.Array:
    """Row-wise ``fn(X_block) -> (c,)`` applied block by block (`jax.lax.map`), concatenated."""
    n = X.shape[0]
    c = auto_chunk_size(n, width) if chunk_size is None else int(min(chunk_size, n))
    if c >= n:
        return fn(X)
    nb = -(-n // c)
    Xb = jnp.pad(X, ((0, nb * c - n), (0, 0))).reshape(nb, c, X.shape[1])
    return jax.lax.map(fn, Xb).reshape(-1)[:n]
