"""Row blocks from outside memory: sources, a background reader, and one streamed pass.

A *source* is an ``(N, D)`` array-like read in row blocks without being copied whole (a NumPy
array, ``np.load(path, mmap_mode="r")``, an h5py or zarr dataset: anything with ``shape`` and row
slicing), with optional ``(N,)`` weights and labels sliced alike, or a callable returning a fresh
iterable of blocks ``X_b``, ``(X_b, w_b)`` or ``(X_b, w_b, y_b)`` (labels; ``w_b`` may be None) of
any sizes. Every block is padded to ``block_size`` rows with zero rows of weight 0 (and label -1:
zeros are finite and in every family's support), so ONE compiled block program serves every block,
ragged ones included (one more for labelled blocks).

A pass (`stream_pass`) overlaps the three stages of a block: a background thread reads block i+2
(the disk read or the user's generator) and prepares it on the host while block i+1 is handed to
the device (`jax.device_put`) and blocks i-1 and i are queued or computing (JAX dispatch is
asynchronous); the host waits only for block i-2's small check flags, so the device always has the
next block queued when one finishes, even when the host thread is scheduled late. Nothing N-sized
is ever kept. A C-contiguous memmap (e.g. ``np.load(path, mmap_mode="r")``) is read from its file
with ``preadv`` (``O_DIRECT`` when the block is not in the page cache) straight into the reused,
page-aligned block buffers: see `jaxem._filerows`.
"""

from __future__ import annotations

import collections
import mmap
import queue
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._filerows import FileRows, aligned_bytes
from ._labels import check_dtype as check_labels_dtype
from ._labels import check_shape as check_labels_shape

# Elements per block (rows = this / D) when the caller does not choose: 4 MB of float32, small
# enough to overlap reading with computing, large enough that the per-block dispatch is nothing.
_BLOCK_ELEMENTS = 1 << 20


class StreamError(ValueError):
    """A bad block in a streamed pass (`jaxem.fit_stream`, `jaxem.init_stream`).

    Attributes:
      block: index of the offending block in the source (for an array source, block i holds rows
        ``i * block_size`` to ``(i + 1) * block_size``); None when the problem is not one block's.
      result: for `jaxem.fit_stream`, a `jaxem.FitResult` of the iterations completed before the
        failing pass (``params`` are the last complete pass's M-step, ``status`` has
        ``Status.INVALID_INPUT``); None for `jaxem.init_stream`.
    """

    def __init__(self, message: str, block: int | None = None, result: Any = None):
        super().__init__(message)
        self.block = block
        self.result = result


class HostBlock(NamedTuple):
    index: int  # the source's block index (a block larger than block_size gives several pieces)
    X: np.ndarray  # (block_size, D), padded with zero rows
    w: np.ndarray  # (block_size,), 0 on the padding
    y: np.ndarray  # (block_size,) int32 labels, -1 on the padding (unused unless `labelled`)
    labelled: bool  # the source's block had labels
    n: int  # real rows
    offset: int  # of the piece's first row in the source's block
    bufs: tuple = ()  # the pool's buffers holding X and w (given back once the block is done)

    def arrays(self) -> tuple:
        """What a block program takes: ``(X, w)``, and the labels of a labelled block."""
        return (self.X, self.w, self.y) if self.labelled else (self.X, self.w)


class Source:
    """A checked ``source`` (see the module docstring) with its optional ``weights`` and
    ``labels``. ``check_labels(y_b, n) -> int32 y_b`` checks each block's labels (ValueError);
    without it (`jaxem.init_stream`) the labels a callable's blocks carry are not used."""

    def __init__(self, source, weights=None, n_features: int | None = None, labels=None,
                 check_labels: Callable | None = None):
        self.callable = callable(source) and not hasattr(source, "shape")
        if self.callable:
            for name, given in (("weights", weights), ("labels", labels)):
                if given is not None:
                    raise ValueError(f"{name}= is for array sources; a callable source yields "
                                     "blocks (X_b, w_b) or (X_b, w_b, y_b) (w_b may be None) with "
                                     f"their {name} instead.")
            self.n_rows = None
        else:
            shape = getattr(source, "shape", None)
            if shape is None or not hasattr(source, "__getitem__"):
                raise ValueError(
                    "source must be an (N, D) array-like with `shape` and row slicing (e.g. "
                    "np.load(path, mmap_mode='r'), an h5py/zarr dataset), or a callable returning a "
                    f"fresh iterable of blocks (e.g. `lambda: my_generator()`); got {type(source)}.")
            if len(shape) != 2:
                raise ValueError(f"source must be 2-D (n_samples, n_features), got shape {shape}.")
            if n_features is not None and shape[1] != n_features:
                raise ValueError(f"source has {shape[1]} features but the parameters were made for "
                                 f"{n_features}; pass data with the same columns.")
            if weights is not None and tuple(np.shape(weights)) != (shape[0],):
                raise ValueError(f"weights must have shape (n_samples,) = ({shape[0]},), got "
                                 f"{np.shape(weights)}.")
            if labels is not None:  # (values: block by block, as they are read)
                dtype = getattr(labels, "dtype", None)  # (a dtype's truth value is its length)
                check_labels_dtype(np.asarray(labels).dtype if dtype is None else dtype)
                check_labels_shape(np.shape(labels), (shape[0],))
            self.n_rows = int(shape[0])
            if self.n_rows < 1:
                raise ValueError("source has no rows.")
        self.source, self.weights, self.n_features = source, weights, n_features
        self.labels, self.check_labels = labels, check_labels
        self._mmap = _mapping(source)
        self.file = None if self.callable else FileRows.of(source)  # the preadv fast path

    def _advise(self, X, advice, inner: bool) -> None:
        if self._mmap is None or not isinstance(X, np.ndarray) or X.size == 0:
            return
        mm, base = self._mmap
        page = mmap.PAGESIZE
        start = X.ctypes.data - base
        end = start + X.nbytes
        if inner:  # whole pages inside the rows only
            start, end = -(-start // page) * page, end // page * page
        else:
            start, end = start // page * page, min(-(-end // page) * page, len(mm))
        if 0 <= start < end <= len(mm):
            try:
                mm.madvise(advice, start, end - start)
            except (OSError, ValueError):
                pass

    def prefetch(self, a: int, b: int) -> None:
        """Ask the kernel to start reading rows a:b of a memory-mapped source (asynchronously)."""
        if self._mmap is not None and a < self.n_rows:
            self._advise(self.source[a:b], mmap.MADV_WILLNEED, inner=False)

    def release(self, X) -> None:
        """Unmap the pages of a block just copied from a memory-mapped source (they stay in the
        page cache): without it the process's file-backed RSS grows to the file's size."""
        self._advise(X, mmap.MADV_DONTNEED, inner=True)

    def raw_blocks(self, block_size: int):
        """``(index, X_b, w_b or None, y_b or None)`` as the source gives them (array sources: row
        slices)."""
        if self.callable:
            for i, item in enumerate(self.source()):
                if isinstance(item, (tuple, list)):
                    if len(item) not in (2, 3):
                        raise StreamError(f"block {i}: a block must be X_b, a pair (X_b, w_b) or "
                                          f"a triple (X_b, w_b, y_b), got a sequence of "
                                          f"{len(item)} items.", i)
                    yield i, item[0], item[1], item[2] if len(item) == 3 else None
                else:
                    yield i, item, None, None
        else:
            rows = lambda a, v: None if v is None else v[a:a + block_size]
            for i, a in enumerate(range(0, self.n_rows, block_size)):
                self.prefetch(a + block_size, a + 2 * block_size)  # the next block, read ahead
                yield i, self.source[a:a + block_size], rows(a, self.weights), rows(a, self.labels)

    def first_block(self) -> np.ndarray:
        """The first block's X (a small read), e.g. for its dtype and a reference row."""
        for _, X, _, _ in self.raw_blocks(1024):
            return np.asarray(X)
        raise ValueError("source yielded no blocks.")


def _mapping(source):
    """``(mmap, its base address)`` behind a C-contiguous, shared `np.memmap` source, else None.
    (Not a copy-on-write one, mode "c": unmapping its pages would discard the caller's edits.)"""
    mm = getattr(source, "_mmap", None)
    if not isinstance(source, np.memmap) or mm is None or not hasattr(mmap, "MADV_DONTNEED") \
            or getattr(source, "mode", "c") not in ("r", "r+", "w+") \
            or not source.flags.c_contiguous:
        return None
    try:
        return mm, np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None


def default_block_size(n_features: int) -> int:
    """About ``_BLOCK_ELEMENTS`` values, in a multiple of 1024 rows: a block of a 4-byte or wider
    dtype is then a whole number of 4096-byte pages, so that every block of a `.npy` file starts
    at the same 64-byte-aligned place in its read buffer and reaches the device without a copy."""
    return max(1024, _BLOCK_ELEMENTS // max(int(n_features), 1) // 1024 * 1024)


def check_block_size(block_size) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f"block_size must be a positive integer (rows per block) or None, got "
                         f"{block_size!r}.")
    return int(block_size)


def _aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary (so that
    `jax.device_put` on CPU may use it in place instead of copying it)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class BufferPool:
    """A fixed set of reusable padded host buffers ``(X (B, D), w (B,), y (B,) int32)``.

    Every block goes through one of them, so a pass allocates nothing per block: with a fresh
    array per block glibc's allocator (its mmap threshold rises after the first frees, so later
    blocks come from fragmenting heaps) grows the process by tens of MB over millions of rows.
    A buffer comes back (`put`) once its block's program has finished with it."""

    def __init__(self, size: int, B: int, D: int, dtype, file: FileRows | None = None):
        """Buffers ``(X (B, D), w (B,))``; for a `FileRows` source ``(raw bytes, w (B,), X (B, D)
        or None)``: the rows are read into ``raw`` and used in place when the file has the
        compute dtype, else cast into ``X``."""
        self.free = queue.Queue()
        for _ in range(size):
            if file is None:
                self.free.put((_aligned_empty((B, D), dtype), _aligned_empty((B,), dtype),
                               _aligned_empty((B,), np.int32)))
            else:
                same = file.dtype == np.dtype(dtype)
                self.free.put((aligned_bytes(file.buffer_bytes(B)), _aligned_empty((B,), dtype),
                               _aligned_empty((B,), np.int32),
                               None if same else _aligned_empty((B, D), dtype)))

    def get(self, stop: threading.Event):
        while not stop.is_set():
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                pass
        raise _Stopped

    def put(self, bufs):
        self.free.put(bufs)


class _Stopped(Exception):
    pass


def _file_blocks(src: Source, block_size: int, pool: BufferPool, stop: threading.Event):
    """`host_blocks` of a `FileRows` source: each block read from the file into a pool buffer."""
    for i, a in enumerate(range(0, src.n_rows, block_size)):
        n = min(block_size, src.n_rows - a)
        y = None
        if src.labels is not None and src.check_labels is not None:
            try:
                y = src.check_labels(src.labels[a:a + n], n)
            except ValueError as err:
                raise StreamError(f"block {i} (rows from {a}): {err}", i) from None
        bufs = pool.get(stop)
        raw, wp, yp, Xp = bufs
        X = src.file.read(a, n, raw, block_size)
        if Xp is None:  # the file's rows are the block, in place
            Xp = X
        else:
            Xp[:n] = X[:n]
        Xp[n:] = 0
        wp[:n] = 1 if src.weights is None else src.weights[a:a + n]
        wp[n:] = 0
        yp[:n] = -1 if y is None else y
        yp[n:] = -1
        yield HostBlock(i, Xp, wp, yp, y is not None, n, 0, bufs)


def host_blocks(src: Source, block_size: int, dtype, D: int, pool: BufferPool | None = None,
                stop: threading.Event | None = None):
    """Padded `HostBlock` pieces of at most ``block_size`` rows, shapes checked on the host (in
    buffers of ``pool`` when given, else fresh arrays)."""
    if src.file is not None and pool is not None:
        yield from _file_blocks(src, block_size, pool, stop)
        return
    for i, X, w, y in src.raw_blocks(block_size):
        X = np.asarray(X)
        if X.ndim == 1 and D == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != D:
            raise StreamError(f"block {i}: X_b must have shape (n, {D}), got {X.shape}.", i)
        if w is not None:
            w = np.asarray(w)
            if w.shape != (X.shape[0],):
                raise StreamError(f"block {i}: weights must have shape ({X.shape[0]},), got "
                                  f"{w.shape}.", i)
        if y is not None and src.check_labels is not None:
            try:
                y = src.check_labels(y, X.shape[0])
            except ValueError as err:
                where = "" if src.callable else f" (rows from {i * block_size})"
                raise StreamError(f"block {i}{where}: {err}", i) from None
        else:
            y = None
        for a in range(0, X.shape[0], block_size):
            n = min(block_size, X.shape[0] - a)
            if pool is None:
                Xp, wp, yp = (np.empty((block_size, D), dtype), np.empty(block_size, dtype),
                              np.empty(block_size, np.int32))
            else:
                Xp, wp, yp = pool.get(stop)
            Xp[:n] = X[a:a + n]  # the read (and cast) of a memmap happens here
            Xp[n:] = 0
            src.release(X[a:a + n])
            wp[:n] = 1 if w is None else w[a:a + n]
            wp[n:] = 0
            yp[:n] = -1 if y is None else y[a:a + n]
            yp[n:] = -1
            yield HostBlock(i, Xp, wp, yp, y is not None, n, a, (Xp, wp, yp))


_END = object()


class Reader:
    """Runs an iterator in a background thread, ``depth`` items ahead; exceptions are re-raised
    in the consumer. `close` stops the thread (also when the consumer stops early)."""

    def __init__(self, make_iter: Callable, depth: int = 2):
        """``make_iter(stop)``: the iterator to run; ``stop`` is set when the consumer closes."""
        self._q = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make_iter,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _run(self, make_iter):
        try:
            for item in make_iter(self._stop):
                if not self._put(item):
                    return
        except _Stopped:
            return
        except BaseException as err:  # handed to the consumer
            self._put(("__error__", err))
            return
        self._put(_END)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                raise item[1]
            yield item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass


# --- per-block checks, on the device: [first non-finite X row, first non-finite weight, first
# negative weight, first row outside the support, rows with positive weight] ------------------
def block_flags(model, X, w):
    def first(bad):
        return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)

    # NaN entries are missing values for a model with missing="marginalize" (inf never is).
    missing = getattr(model, "missing", "error") == "marginalize"
    finite = ~jnp.isinf(X) if missing else jnp.isfinite(X)
    valid = getattr(model, "_valid", None)
    unsupported = (jnp.zeros(X.shape[0], bool) if valid is None
                   else ~jnp.all(valid(X) | ~finite, axis=1))
    return jnp.stack([first(~jnp.all(finite, axis=1)), first(~jnp.isfinite(w)), first(w < 0),
                      first(unsupported), jnp.sum(w > 0).astype(jnp.int32)])


def _check_flags(flags, index: int, start: int | None, offset: int,
                 data_message: str | None) -> int:
    """Raise `StreamError` naming the block for bad flags; return its rows with positive weight.
    ``start``: the block's first row in an array source (None for a callable source); ``offset``:
    the piece's first row within the source's block."""
    f = np.asarray(flags)
    where = f"block {index}" + ("" if start is None else f" (rows from {start})")
    row = lambda r: (f"row {offset + r} of the block" if start is None
                     else f"row {start + offset + r}")
    if f[0] >= 0:
        raise StreamError(f"{where}: X contains NaN or inf (first at {row(f[0])}); drop or "
                          "impute it, or give it weight 0 and any finite value (GaussianMixture, "
                          "PPCA and FactorAnalysis take NaN as missing values with "
                          "missing=\"marginalize\"; inf is never valid).", index)
    if f[1] >= 0:
        raise StreamError(f"{where}: weights contain NaN or inf ({row(f[1])}); pass finite, "
                          "non-negative weights.", index)
    if f[2] >= 0:
        raise StreamError(f"{where}: weights must be non-negative (0 marks padding rows); "
                          f"{row(f[2])} is negative.", index)
    if f[3] >= 0:
        raise StreamError(f"{where}: {row(f[3])} is outside the family's support: "
                          f"{data_message or 'invalid values'}", index)
    return int(f[4])


def stream_pass(src: Source, block_size: int, dtype, D: int, step: Callable, carry, *,
                model=None, on_host: Callable | None = None, bar=None):
    """One pass over ``src``: ``carry, flags = step(carry, X_b, w_b)`` per padded block (device
    arrays; ``step(carry, X_b, w_b, y_b)`` for a block with labels, `HostBlock.arrays`), flags
    checked two blocks behind so the device never waits for the host. ``on_host(b)``
    sees each `HostBlock` (e.g. to sample rows). Returns ``(carry, rows with positive weight)``."""
    depth, lag = 2, 2  # blocks read ahead; blocks dispatched before the oldest one's flags are read
    if src.file is not None:
        try:
            src.file.open()
        except OSError:  # the file was deleted or replaced since it was mapped: read the map
            src.file = None
    pool = BufferPool(depth + lag + 3, block_size, D, dtype, src.file)
    reader = Reader(lambda stop: host_blocks(src, block_size, dtype, D, pool, stop), depth)
    done = False
    msg = getattr(model, "_data_message", None)
    pending, n_pos = collections.deque(), 0

    def retire(pending):
        """Block j-lag's flags (waiting for its program to finish), then its buffers back."""
        flags, index, row0, offset, bufs, dev = pending
        n = _check_flags(flags, index, row0, offset, msg)
        del dev  # the device arrays (which may alias the buffers) go before the buffers return
        pool.put(bufs)
        return n

    try:
        for b in reader:
            dev = tuple(jax.device_put(a) for a in b.arrays())
            carry, flags = step(carry, *dev)
            if on_host is not None:
                on_host(b)
            if len(pending) == lag:
                n_pos += retire(pending.popleft())
            row0 = None if src.callable else b.index * block_size
            if bar is not None:
                bar.update(b.n)
            pending.append((flags, b.index, row0, b.offset, b.bufs, dev))
            del dev, b
        while pending:
            n_pos += retire(pending.popleft())
        done = True
    finally:
        reader.close()
        if src.file is not None:
            src.file.close(complete=done)
    return carry, n_pos


# --- compensated sums (Neumaier 1974) of pytrees: acc + comp is the sum to ~1 ulp -------------
def neumaier_add(acc, comp, x):
    def one(s, c, v):
        if not jnp.issubdtype(s.dtype, jnp.inexact):
            return s + v, c
        t = s + v
        return t, c + jnp.where(jnp.abs(s) >= jnp.abs(v), (s - t) + v, (v - t) + s)

    leaves, tree = jax.tree_util.tree_flatten(acc)
    pairs = [one(s, c, v) for s, c, v in zip(leaves, tree.flatten_up_to(comp),
                                              tree.flatten_up_to(x))]
    return (jax.tree_util.tree_unflatten(tree, [p[0] for p in pairs]),
            jax.tree_util.tree_unflatten(tree, [p[1] for p in pairs]))


def zeros_like_shapes(shapes):
    """Host zeros (as device arrays) for a pytree of `jax.ShapeDtypeStruct`."""
    return jax.tree_util.tree_map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), shapes)


def progress_bar(progress: bool, total, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, leave=False)
