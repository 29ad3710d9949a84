"""Data parallelism over rows: each device reduces its own rows, one all-reduce makes the total.

EM's E-step is a sum over rows (DESIGN.md): for X split by rows over devices d = 1..P,

    s(θ) = Σ_n s(x_n; θ) = Σ_d Σ_{n ∈ rows(d)} s(x_n; θ),

so each device computes its part with the family's own streamed pass (`jaxem._chunk`) on its local
rows, one ``lax.psum`` of the statistics (flattened into one vector: one all-reduce) gives every
device the total, and the M-step runs replicated. X is never gathered or moved.

How jaxem finds out that X is sharded by rows (`row_sharding`):

- a concrete `jax.Array` (an eager call, one process or several): its ``sharding`` is a
  `jax.sharding.NamedSharding` whose spec names mesh axes for dimension 0;
- a tracer under the caller's `jax.jit`: only when its type carries the spec, i.e. the mesh has
  `jax.sharding.AxisType.Explicit` axes (``jax.sharding.set_mesh`` / ``jax.make_mesh(...,
  axis_types=(AxisType.Explicit,))``). Under an ``Auto`` mesh a tracer's type does not say how it is
  sharded, and jaxem's program is left to XLA's partitioner (correct, but X may be gathered).

The driver (`jaxem.fit`, ``model.init``) then traces its program inside `sharded_rows`: every
streamed row reduction of `jaxem._chunk` becomes a `jax.shard_map` over the row axis with a
`psum`, every streamed row-wise map a `jax.shard_map` whose output stays sharded, and the fit's
statistics are one `psum` per iteration (`reduce_rows`). Families never see any of it.

By hand, in your own `jax.shard_map` (rows local to each device)::

    stats = jax.lax.psum(model.sufficient_statistics(params, X_local, w_local), "data")
    params = model.maximize(stats, params)
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


class Rows(NamedTuple):
    """Rows split over the mesh axes ``axes`` of ``mesh`` (a `jax.sharding.Mesh`, or the
    `jax.sharding.AbstractMesh` of a traced array): hashable, a static argument of jaxem's jits."""

    mesh: object
    axes: tuple

    @property
    def size(self) -> int:
        """Number of row shards (the product of the axes' sizes)."""
        return math.prod(self.mesh.shape[a] for a in self.axes)

    @property
    def spec(self) -> P:
        return P(self.axes if len(self.axes) > 1 else self.axes[0])


def _axes_of_dim0(spec) -> tuple:
    if len(spec) == 0 or spec[0] is None:
        return ()
    return tuple(spec[0]) if isinstance(spec[0], tuple) else (spec[0],)


def row_sharding(X) -> Rows | None:
    """`Rows` if ``X`` is split by rows over more than one device (see the module docstring), else
    None. None too when the number of rows is not a multiple of the number of shards (uneven shards
    are left to XLA's partitioner)."""
    if isinstance(X, jax.core.Tracer):
        aval = jax.typeof(X)
        mat = getattr(aval, "manual_axis_type", None)
        if mat is not None and mat.varying:  # rows local to the caller's shard_map
            return None
        sharding = getattr(aval, "sharding", None)
        if not isinstance(sharding, NamedSharding):
            return None
        types = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types))
        # Auto axes: the type does not say how the array is split (its spec is all None).
        if not all(types.get(a) == jax.sharding.AxisType.Explicit
                   for a in _axes_of_dim0(sharding.spec)):
            return None
    else:
        sharding = getattr(X, "sharding", None)
    if not isinstance(sharding, NamedSharding) or getattr(X, "ndim", 0) < 1:
        return None
    axes = _axes_of_dim0(sharding.spec)
    if not axes:
        return None
    rows = Rows(sharding.mesh, axes)
    if rows.size < 2 or X.shape[0] % rows.size:
        return None
    return rows


# The row sharding of the program being traced (set by the drivers around their tracing).
_state = threading.local()


def current() -> Rows | None:
    """The `Rows` that `sharded_rows` set for the program being traced, or None."""
    return getattr(_state, "rows", None)


@contextlib.contextmanager
def sharded_rows(rows: Rows | None):
    """Trace the enclosed code with row-aligned arrays split as ``rows`` (None: not split)."""
    prev = current()
    _state.rows = rows
    try:
        yield
    finally:
        _state.rows = prev


def traced(rows: Rows | None, fn: Callable, *args):
    """``fn(*args)`` traced with the row-aligned arrays split as ``rows`` (`sharded_rows`).

    On a mesh with `jax.sharding.AxisType.Explicit` axes, ``fn`` runs in auto mode
    (`jax.sharding.auto_axes`, outputs replicated): jaxem's programs mix row-split and replicated
    arrays freely, which explicit sharding types would refuse, and the data-parallel parts are
    `jax.shard_map` s with their own specs either way."""
    if rows is None:
        return fn(*args)
    mesh = getattr(rows.mesh, "abstract_mesh", rows.mesh)
    explicit = [a for a, t in zip(mesh.axis_names, mesh.axis_types)
                if t == jax.sharding.AxisType.Explicit]
    if not explicit:
        with sharded_rows(rows):
            return fn(*args)
    auto = rows._replace(mesh=mesh.update_axis_types(
        {a: jax.sharding.AxisType.Auto for a in explicit}))

    def inner(*a):
        with sharded_rows(auto):
            return fn(*a)

    with jax.sharding.use_abstract_mesh(mesh):
        return jax.sharding.auto_axes(inner, axes=tuple(explicit), out_sharding=P())(*args)


def applies(rows: Rows | None, n: int) -> bool:
    return rows is not None and n % rows.size == 0


def manual_type(a):
    """The manual-axis type of ``a`` (which axes of an enclosing `jax.shard_map` it varies over),
    or None outside one."""
    return getattr(jax.typeof(a), "manual_axis_type", None)


def varying_axes(arrays) -> tuple:
    """Mesh axes of an enclosing `jax.shard_map` over which some array of ``arrays`` varies
    (sorted; empty outside a shard_map)."""
    axes = set()
    for a in arrays:
        t = manual_type(a)
        if t is not None:
            axes |= set(t.varying)
    return tuple(sorted(axes))


def varying(z, axes: tuple):
    """``z`` cast to vary over ``axes`` (`varying_axes` of the data), as a loop's initial carry
    must when its body mixes it with the data; ``z`` itself when ``axes`` is empty."""
    return jax.lax.pcast(z, axes, to="varying") if axes else z


def psum_flat(tree, axes):
    """`jax.lax.psum` of a pytree as ONE all-reduce per dtype: the leaves are concatenated into a
    vector, summed across ``axes``, and split again (XLA may not combine one all-reduce per
    leaf)."""
    leaves, tree_def = jax.tree_util.tree_flatten(tree)
    if not leaves:
        return tree
    groups: dict = {}
    for i, x in enumerate(leaves):
        groups.setdefault(jnp.result_type(x), []).append(i)
    out = list(leaves)
    for dtype, idx in groups.items():
        flat = jnp.concatenate([jnp.ravel(leaves[i]).astype(dtype) for i in idx])
        flat = jax.lax.psum(flat, axes)
        ends = np.cumsum([math.prod(np.shape(leaves[i])) for i in idx])
        for i, e, n in zip(idx, ends, [math.prod(np.shape(leaves[i])) for i in idx]):
            out[i] = flat[e - n:e].reshape(np.shape(leaves[i]))
    return jax.tree_util.tree_unflatten(tree_def, out)


def _local(fn):
    """``fn`` run on local rows: no further sharding of the arrays it sees."""

    def run(*args):
        with sharded_rows(None):
            return fn(*args)

    return run


def reduce_rows(rows: Rows, fn: Callable, arrays: tuple):
    """Σ over all rows of ``fn(*arrays)`` (a pytree of sums over the rows it is given): ``fn`` runs
    on each device's rows, then one `psum_flat`. ``fn`` may close over replicated values."""
    local = _local(fn)
    sums = jax.shard_map(lambda *a: psum_flat(local(*a), rows.axes), mesh=rows.mesh,
                         in_specs=(rows.spec,) * len(arrays), out_specs=P())
    return sums(*arrays)


def map_rows(rows: Rows, fn: Callable, arrays: tuple):
    """``fn(*arrays)`` for a row-wise ``fn`` (output rows aligned with the input's): run on each
    device's rows, the output left split the same way."""
    return jax.shard_map(_local(fn), mesh=rows.mesh, in_specs=(rows.spec,) * len(arrays),
                         out_specs=rows.spec)(*arrays)


def map_reduce_rows(rows: Rows, fn: Callable, arrays: tuple):
    """``fn(*arrays) -> (sums, per_row)``: the sums all-reduced, the row-wise part left split."""
    local = _local(fn)

    def body(*a):
        sums, per_row = local(*a)
        return psum_flat(sums, rows.axes), per_row

    return jax.shard_map(body, mesh=rows.mesh, in_specs=(rows.spec,) * len(arrays),
                         out_specs=(P(), rows.spec))(*arrays)


def _shard_index(rows: Rows):
    """This device's position along the row axes (row-major over ``rows.axes``), inside a map."""
    idx = 0
    for a in rows.axes:
        idx = idx * rows.mesh.shape[a] + jax.lax.axis_index(a)
    return idx


def take_rows(rows: Rows, X, idx):
    """``X[idx]`` for a few global row indices ``idx (t,)``: each device contributes the rows it
    holds (zeros elsewhere) and one psum of the ``(t, D)`` result replaces a gather of X."""

    def body(x):
        n = x.shape[0]
        local = idx - _shard_index(rows) * n
        mine = (local >= 0) & (local < n)
        got = x[jnp.clip(local, 0, n - 1)]
        got = jnp.where(mine.reshape((-1,) + (1,) * (got.ndim - 1)), got, jnp.zeros_like(got))
        return jax.lax.psum(got, rows.axes)

    return jax.shard_map(_local(body), mesh=rows.mesh, in_specs=(rows.spec,), out_specs=P())(X)


def draw_rows(rows: Rows, u, mass):
    """Row indices drawn ∝ ``mass`` (N,) at uniforms ``u`` (t,) by inverting the cumulative mass,
    two-level: the devices' total masses are all-reduced (P numbers), each device inverts its
    own part of the CDF, and a ``pmin`` picks the first row found. The same rows as one inversion
    over all N (up to the rounding of the cumulative sums); the last row always qualifies."""
    P_ = rows.size

    def body(m):
        n = m.shape[0]
        me = _shard_index(rows)
        cdf = jnp.cumsum(m)
        # every device's total mass: P numbers, as a psum of one-hot vectors
        totals = jax.lax.psum(jnp.where(jnp.arange(P_) == me, cdf[-1], 0), rows.axes)
        offset = jnp.sum(jnp.where(jnp.arange(P_) < me, totals, 0))
        target = u * jnp.sum(totals)
        last = (me == P_ - 1) & (jnp.arange(n) == n - 1)
        past = ((offset + cdf)[:, None] > target[None, :]) | last[:, None]
        found = jnp.any(past, axis=0)
        first = me * n + jnp.argmax(past, axis=0)
        big = jnp.iinfo(jnp.int32).max
        return jax.lax.pmin(jnp.where(found, first, big).astype(jnp.int32), rows.axes)

    return jax.shard_map(_local(body), mesh=rows.mesh, in_specs=(rows.spec,), out_specs=P())(mass)


def place_like_rows(X, w):
    """Weights ``w`` (host or device) put on ``X``'s row sharding when X is a concrete array split
    by rows (also across processes, where every process passes the same host ``w``). Else ``w``."""
    rows = None if isinstance(X, jax.core.Tracer) else row_sharding(X)
    if rows is None or isinstance(w, jax.core.Tracer):
        return w
    target = NamedSharding(rows.mesh, rows.spec)
    if isinstance(w, jax.Array):
        if w.sharding.is_equivalent_to(target, 1) or not w.is_fully_addressable:
            return w
        return jax.device_put(w, target)
    w = np.asarray(w)
    return jax.make_array_from_callback(w.shape, target, lambda index: w[index])


def replicate_on(rows: Rows, tree):
    """Leaves of ``tree`` committed to devices outside ``rows``' mesh (e.g. parameters computed on
    one local device) copied to every device of the mesh, so that they can meet the data in one
    program (across processes too: every process passes the same values)."""
    devices = set(rows.mesh.devices.flat)
    target = NamedSharding(rows.mesh, P())

    def put(x):
        if not isinstance(x, jax.Array) or not x.committed or x.sharding.device_set == devices:
            return x
        if not x.is_fully_addressable:
            return x  # a global array on another mesh: left to jit to report
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)
