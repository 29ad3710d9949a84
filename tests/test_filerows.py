"""The `.npy` fast path of `jaxem.fit_stream` (`jaxem._filerows.FileRows`): a memmap's blocks read
from its file with preadv / O_DIRECT are byte-for-byte the blocks the generic memmap path copies."""

import errno
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _filerows
from jaxem._blocks import BufferPool, Source, host_blocks, stream_pass

D = 3


def _drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _blocks(src, B, dtype, *, fast):
    """Every padded (index, X, w, n) of one pass, via the file reader or the generic path."""
    file = src.file if fast else None
    saved, src.file = src.file, file
    try:
        pool = BufferPool(6, B, src.source.shape[1], dtype, file)
        if file is not None:
            file.open()
        out = []
        for b in host_blocks(src, B, dtype, src.source.shape[1], pool, threading.Event()):
            out.append((b.index, b.X.copy(), b.w.copy(), b.n))
            pool.put(b.bufs)
        if file is not None:
            file.close()
        return out
    finally:
        src.file = saved


def _assert_same(a, b):
    assert len(a) == len(b)
    for (i, X, w, n), (j, Y, v, m) in zip(a, b):
        assert (i, n) == (j, m)
        np.testing.assert_array_equal(X, Y)  # padding rows included (zeros)
        np.testing.assert_array_equal(w, v)


@pytest.fixture(scope="module")
def odd_file(tmp_path_factory):
    """1001 float64 rows of D=3 after a 77-byte header (no row is page- or 64-byte-aligned), its
    pages dropped from the page cache so that the reads really go to the disk."""
    path = tmp_path_factory.mktemp("filerows") / "odd.bin"
    X = np.random.default_rng(0).normal(size=(1001, D))
    with open(path, "wb") as f:
        f.write(b"h" * 77)
        f.write(X.tobytes())
    _drop_cache(path)
    return str(path), X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])  # in place / cast to float32
def test_file_reader_equals_memmap_path(odd_file, dtype):
    path, X = odd_file
    Xm = np.memmap(path, np.float64, "r", offset=77, shape=X.shape)
    src = Source(Xm)
    assert src.file is not None and src.file.offset == 77
    fast = _blocks(src, 128, dtype, fast=True)  # 7 full blocks, a ragged 8th of 105 rows
    assert [b[3] for b in fast] == [128] * 7 + [105]
    _assert_same(fast, _blocks(src, 128, dtype, fast=False))
    np.testing.assert_array_equal(np.concatenate([b[1][:b[3]] for b in fast]), X.astype(dtype))
    assert sum(src.file.counts.values()) == 8
    if dtype == np.float64 and src.file.direct:  # a filesystem that takes O_DIRECT
        assert src.file.counts["direct"] > 0, src.file.counts


def test_file_reader_row_slice_and_weights(odd_file):
    path, X = odd_file
    Xm = np.memmap(path, np.float64, "r", offset=77, shape=X.shape)[37:]  # offset 77 + 37 rows
    w = np.random.default_rng(1).uniform(size=len(Xm))
    src = Source(Xm, w)
    assert src.file.offset == 77 + 37 * 8 * D
    _assert_same(_blocks(src, 100, np.float64, fast=True),
                 _blocks(src, 100, np.float64, fast=False))


def test_file_reader_falls_back_when_o_direct_is_refused(odd_file, monkeypatch):
    path, X = odd_file
    Xm = np.memmap(path, np.float64, "r", offset=77, shape=X.shape)
    ref = _blocks(Source(X), 128, np.float64, fast=False)  # (not through the map: its pages
    real_open, real_preadv = os.open, os.preadv  # would stay cached, and be read buffered)

    def no_direct_open(p, flags, *a):  # e.g. an old tmpfs: EINVAL on open
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(p, flags, *a)

    monkeypatch.setattr(_filerows.os, "open", no_direct_open)
    src = Source(Xm)
    _drop_cache(path)
    _assert_same(_blocks(src, 128, np.float64, fast=True), ref)
    assert not src.file.direct and src.file.counts == {"direct": 0, "buffered": 8}
    monkeypatch.setattr(_filerows.os, "open", real_open)

    src = Source(Xm)  # O_DIRECT opens, but its reads are refused (alignment): buffered after
    direct_fds = []

    def refusing_preadv(fd, buffers, offset, *a):
        if fd == src.file.fd_direct:
            direct_fds.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset, *a)

    monkeypatch.setattr(_filerows.os, "preadv", refusing_preadv)
    _drop_cache(path)
    _assert_same(_blocks(src, 128, np.float64, fast=True), ref)
    assert len(direct_fds) == 1 and not src.file.direct
    assert src.file.counts == {"direct": 0, "buffered": 8}


def test_which_sources_take_the_file_reader(odd_file, tmp_path):
    path, X = odd_file
    Xm = np.memmap(path, np.float64, "r", offset=77, shape=X.shape)
    assert Source(np.memmap(path, np.float64, "c", offset=77, shape=X.shape)).file is None
    assert Source(Xm[:, :2]).file is None  # not C-contiguous
    assert Source(Xm[::2]).file is None
    assert Source(np.asarray(Xm)).file is None  # a plain ndarray (a view of the map)
    other = tmp_path / "w.npy"  # writable: buffered reads only (coherent with its writes)
    Xw = np.lib.format.open_memmap(other, mode="w+", dtype=np.float64, shape=(300, D))
    Xw[:] = X[:300]
    src = Source(Xw)
    assert src.file is not None and not src.file.direct
    _assert_same(_blocks(src, 128, np.float64, fast=True),
                 _blocks(src, 128, np.float64, fast=False))
    src = Source(Xm)
    os.replace(path, str(tmp_path / "moved.bin"))  # the path now names another file: not used
    np.save(path, X + 1)
    try:
        assert Source(Xm).file is None
        with pytest.raises(FileNotFoundError):  # nor by a Source made before the swap
            src.file.open()
        ok = jnp.array([-1, -1, -1, -1, 0])  # block flags: nothing wrong
        total, _ = stream_pass(src, 128, np.float64, D,
                               lambda c, X, w: (c + jnp.sum(X * w[:, None]), ok), 0.0)
        assert src.file is None  # ... whose pass reads the map instead: the old rows
        np.testing.assert_allclose(float(total), X.sum(), rtol=1e-12)
    finally:
        os.replace(str(tmp_path / "moved.bin"), path)


def test_disk_bound_pass_keeps_small_file_cached(odd_file):
    path, X = odd_file
    f = Source(np.memmap(path, np.float64, "r", offset=77, shape=X.shape)).file
    f.open()
    f.t0 -= 1.0
    f.io = 0.5  # compute-bound: direct reads stay
    f.close()
    assert f.direct
    f.open()
    f.t0 -= 1.0
    f.io = 0.9
    f.close(complete=False)  # an interrupted pass decides nothing
    assert f.direct
    f.open()
    f.t0 -= 1.0
    f.io = 0.9  # the disk set the pace, and the file fits in memory: keep it in the page cache
    f.close()
    assert not f.direct


def test_fit_stream_over_the_file_reader_and_bad_block(tmp_path):
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(size=(700, D)), 5.0 + rng.normal(size=(800, D))])
    path = str(tmp_path / "X.npy")
    np.save(path, X)
    _drop_cache(path)
    Xm = np.load(path, mmap_mode="r")
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    p0 = model.init(jax.random.key(0), X)
    r_mem = jaxem.fit_stream(model, p0, X, max_iter=3, tol=0.0, block_size=512)
    r_file = jaxem.fit_stream(model, p0, Xm, max_iter=3, tol=0.0, block_size=512)
    np.testing.assert_array_equal(r_file.trace, r_mem.trace)  # the same blocks, bit for bit
    np.testing.assert_array_equal(np.asarray(r_file.params.means), np.asarray(r_mem.params.means))
    # partial labels read alongside the file's blocks (same rows as the in-memory source)
    y = np.where(np.arange(1500) % 7 == 0, (X[:, 0] > 2.5).astype(np.int32), -1)
    kw = dict(labels=y, max_iter=3, tol=0.0, block_size=512)
    r_lab = jaxem.fit_stream(model, p0, Xm, **kw)
    np.testing.assert_array_equal(r_lab.trace, jaxem.fit_stream(model, p0, X, **kw).trace)
    assert not np.array_equal(r_lab.trace, r_mem.trace)  # the labels were used
    with pytest.raises(jaxem.StreamError, match=r"block 1 \(rows from 512\): .*labels"):
        jaxem.fit_stream(model, p0, Xm, labels=np.where(np.arange(1500) == 600, 5, y),
                         block_size=512)
    Xb = np.lib.format.open_memmap(path, mode="r+")
    Xb[1100, 2] = np.nan
    Xb.flush()
    del Xb
    with pytest.raises(jaxem.StreamError, match=r"block 2 \(rows from 1024\): X contains NaN "
                                                r"or inf \(first at row 1100\)") as info:
        jaxem.fit_stream(model, p0, np.load(path, mmap_mode="r"), block_size=512)
    assert info.value.block == 2
