"""A tqdm progress bar fed from inside the EM `while_loop` by `jax.debug.callback`.

`jax.debug.callback` under `jax.vmap` is unrolled into one host call per batch member (JAX's
``debug_batching_rule``), which would mean thousands of bars and a compile time that grows with the
batch. `report` is therefore a `jax.custom_batching.custom_vmap` whose batching rule first reduces
the batch to ONE report: the largest iteration count among the members that were still running,
with that member's log-likelihood, and "done" once every member has stopped. Nested vmaps reduce
recursively. The arguments are `stop_gradient`-ed so `jax.grad`/`jax.jvp` pass straight through.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from ._where import where

_BAR = None  # the open bar (host side); one fit at a time shows a bar


def _host_update(i, ll, done, running, *, total: int):
    """Host side: create the bar on the first report, advance it, close it when done."""
    global _BAR
    from tqdm.auto import tqdm

    if not bool(running):  # a step of a stopped loop (bounded scan, or a finished batch)
        return
    i, ll, done = int(i), float(ll), bool(done)
    if _BAR is not None and i < _BAR.n:  # a new fit started before the old one reported done
        _BAR.close()
        _BAR = None
    if _BAR is None:
        _BAR = tqdm(total=total, desc="EM", unit="it", leave=True)
    _BAR.set_postfix(loglik=f"{ll:.6g}", refresh=False)
    _BAR.update(i - _BAR.n)
    if done:
        _BAR.close()
        _BAR = None


@functools.lru_cache(maxsize=None)
def _reporter(total: int):
    """The custom_vmap'd report for a bar of length ``total`` (cached: same function, no retrace)."""

    @custom_vmap
    def rep(i, ll, done, running):
        jax.debug.callback(functools.partial(_host_update, total=total), i, ll, done, running)
        return i

    @rep.def_vmap
    def rep_batched(axis_size, in_batched, i, ll, done, running):
        # One report for the whole batch: the furthest member that was still running.
        i, ll, done, running = (jnp.broadcast_to(x, (axis_size,)) for x in (i, ll, done, running))
        j = jnp.argmax(where(running, i, -1))
        out = rep(i[j], ll[j], jnp.all(done | ~running), jnp.any(running))
        return jnp.broadcast_to(out, (axis_size,)), True

    return rep


def report(i, ll, done, running, max_iter: int):
    """Send (iteration ``i``, mean log-likelihood ``ll``, ``done``) to the progress bar.

    ``running`` says whether this (batch member's) loop was still active when the step began; under
    vmap the while_loop body also runs for members that have already stopped.
    """
    sg = jax.lax.stop_gradient
    _reporter(int(max_iter))(sg(i), sg(ll), sg(done), sg(running))


def with_progress(step, active, max_iter: int):
    """Wrap a loop ``step(state) -> state`` so that it reports ``state.i`` and ``state.ll``."""

    def wrapped(state):
        out = step(state)
        new = out[0] if isinstance(out, tuple) and not hasattr(out, "_fields") else out
        report(new.i, new.ll, ~active(new), active(state), max_iter)
        return out

    return wrapped
