"""Rows of a memory-mapped file read with ``preadv`` into reusable buffers (the `.npy` fast path).

Copying a block out of an `np.memmap` costs the CPU a page fault per few pages, the kernel's
page-cache fill and a copy, and a TLB shootdown when the pages are unmapped again: on a machine
whose cores are busy computing, that kernel work is taken from the compute. `FileRows` reads a
block's bytes straight from the file instead, into a page-aligned buffer that is reused from block
to block (and handed to the device without a copy):

* blocks whose pages are all in the page cache (`mincore`) are read with a plain ``preadv`` (a
  copy from the cache, no I/O);
* the others with ``O_DIRECT``: the disk DMA's into the buffer, no page-cache fill, no copy. The
  read covers the block's bytes rounded out to 4096-byte boundaries (the array's header and the
  neighbouring rows land in the buffer's margins). A filesystem that refuses ``O_DIRECT``
  (``EINVAL`` on open or read) gets buffered reads with sequential read-ahead instead;
* if a pass was paced by the disk (its direct reads took most of the pass's time) and the file
  fits in memory, later passes read buffered so that the page cache keeps the file: from then on
  the blocks come from memory.

Only a C-contiguous, read-only (mode ``"r"``) memmap of a file this process can identify (Linux
``/proc/self/maps``: the mapping's device, inode and file offset) takes this path; writable maps
are read buffered (coherent with the page cache their writes go to), copy-on-write maps and
anything else keep the generic row slicing.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time

import numpy as np

ALIGN = 4096  # O_DIRECT offsets, lengths and buffer addresses (>= any logical block size in use)


def aligned_bytes(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """An uninitialised uint8 array of ``nbytes`` starting on an ``align``-byte boundary."""
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes]


def _mapping_of(address: int):
    """``(start, file offset, device, inode)`` of this process's mapping holding ``address``
    (from /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= address < hi:
                    major, minor = (int(x, 16) for x in parts[3].split(":"))
                    return lo, int(parts[2], 16), os.makedev(major, minor), int(parts[4])
    except (OSError, ValueError, IndexError):
        return None
    return None


_libc = None


def _mincore():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            _libc.mincore.restype = ctypes.c_int
        except (OSError, AttributeError):
            _libc = False
    return _libc.mincore if _libc else None


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class FileRows:
    """Rows ``a:a+n`` of a C-contiguous memmap, read from its file (see the module docstring).

    ``FileRows.of(source)`` is None when the source does not qualify. One instance serves every
    pass of a fit (its choice of direct or cached reads carries over); `open`/`close` bracket a
    pass, `read` runs in the reader thread."""

    def __init__(self, source: np.memmap, path: str, offset: int, writable: bool, file_id):
        self.source, self.file_id = source, file_id  # (st_dev, st_ino) of the mapped file
        self.path, self.offset = path, offset
        self.n_rows, self.n_features = source.shape
        self.dtype = source.dtype
        self.row_bytes = source.shape[1] * source.dtype.itemsize
        self.nbytes = self.n_rows * self.row_bytes
        self.base = source.ctypes.data  # the mapping of row 0 (for mincore)
        self.direct = not writable and hasattr(os, "O_DIRECT")
        self.fd = self.fd_direct = None
        self.counts = {"direct": 0, "buffered": 0}  # blocks read each way, all passes
        self.passes = []  # (seconds, of which in direct reads) per pass

    @classmethod
    def of(cls, source) -> "FileRows | None":
        if not isinstance(source, np.memmap) or getattr(source, "_mmap", None) is None \
                or not hasattr(os, "preadv") or source.ndim != 2 \
                or not source.flags.c_contiguous or source.dtype.hasobject \
                or source.dtype.itemsize == 0 or source.size == 0 \
                or getattr(source, "mode", "c") not in ("r", "r+", "w+"):
            return None
        try:
            path = os.fspath(source.filename)
        except TypeError:
            return None
        address = source.ctypes.data
        m = _mapping_of(address)
        if m is None:
            return None
        start, map_offset, dev, ino = m
        try:
            st = os.stat(path)
        except OSError:
            return None
        offset = map_offset + address - start
        nbytes = source.shape[0] * source.shape[1] * source.dtype.itemsize
        if (st.st_dev, st.st_ino) != (dev, ino) or offset + nbytes > st.st_size:
            return None  # not the file that is mapped (replaced since), or truncated
        return cls(source, path, offset, source.mode != "r", (dev, ino))

    # --- a pass -----------------------------------------------------------------------------
    def _open(self, flags):
        fd = os.open(self.path, flags)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.file_id:
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "the mapped file is no longer at its path",
                                    self.path)
        return fd

    def open(self):
        """Start a pass. OSError when the path no longer names the mapped file (deleted or
        replaced since): the caller then reads through the map."""
        self.fd = self._open(os.O_RDONLY)
        try:
            os.posix_fadvise(self.fd, self.offset, self.nbytes, os.POSIX_FADV_SEQUENTIAL)
        except (OSError, AttributeError):
            pass
        if self.direct:
            try:
                self.fd_direct = self._open(os.O_RDONLY | os.O_DIRECT)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    os.close(self.fd)
                    self.fd = None
                    raise
                self.direct = False  # the filesystem refuses O_DIRECT (e.g. an old tmpfs)
        self.io = 0.0  # seconds in direct reads this pass
        self.t0 = time.perf_counter()

    def close(self, complete: bool = True):
        """End of a pass. A complete pass paced by the disk (direct reads busy 80% of its time)
        turns direct reads off for the next ones when the file fits in half the free memory."""
        for fd in (self.fd, self.fd_direct):
            if fd is not None:
                os.close(fd)
        self.fd = self.fd_direct = None
        elapsed = time.perf_counter() - self.t0
        self.passes.append((elapsed, self.io))
        if self.direct and complete and self.io > 0.8 * elapsed \
                and self.nbytes < _mem_available() // 2:
            self.direct = False

    def buffer_bytes(self, block_rows: int) -> int:
        """Bytes of a buffer holding ``block_rows`` rows at any offset, rounded out to pages."""
        return (block_rows * self.row_bytes + 2 * ALIGN - 1) // ALIGN * ALIGN + ALIGN

    def _cached(self, a: int, n: int) -> bool:
        mincore = _mincore()
        if mincore is None:
            return False
        page = mmap.PAGESIZE
        lo = self.base + a * self.row_bytes
        hi = lo + n * self.row_bytes
        lo -= lo % page
        vec = np.empty(-(-(hi - lo) // page), np.uint8)
        if mincore(lo, hi - lo, vec.ctypes.data) != 0:
            return False
        return bool(np.all(vec & 1))

    def read(self, a: int, n: int, buf: np.ndarray, block_rows: int) -> np.ndarray:
        """Rows ``a:a+n`` read into ``buf`` (page-aligned uint8 of ``buffer_bytes(block_rows)``);
        returns the ``(block_rows, D)`` view of ``buf`` whose first ``n`` rows are them (the rest:
        whatever the buffer held)."""
        s = self.offset + a * self.row_bytes
        e = s + n * self.row_bytes
        lo = s - s % ALIGN  # buf[0] holds file byte lo
        if self.fd_direct is not None and not self._cached(a, n):
            try:
                t = time.perf_counter()
                self._fill(self.fd_direct, buf, lo, lo, e + (-e % ALIGN), e)
                self.io += time.perf_counter() - t
                self.counts["direct"] += 1
                return self._view(buf, s - lo, block_rows)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self.direct = False  # the filesystem refuses these reads: buffered from now on
                os.close(self.fd_direct)
                self.fd_direct = None
        self._fill(self.fd, buf, lo, s, e, e)
        self.counts["buffered"] += 1
        return self._view(buf, s - lo, block_rows)

    @staticmethod
    def _fill(fd, buf, lo, start, stop, need):
        """``preadv`` file bytes ``start:stop`` into ``buf`` (byte ``lo`` at ``buf[0]``) until
        ``need`` is reached (an aligned read may stop early at the end of the file)."""
        pos = start
        mv = memoryview(buf)
        while pos < need:
            got = os.preadv(fd, [mv[pos - lo:stop - lo]], pos)
            if got <= 0:
                raise OSError(errno.EIO, f"unexpected end of file reading bytes {pos}:{need}")
            pos += got

    def _view(self, buf, head: int, block_rows: int) -> np.ndarray:
        return buf[head:head + block_rows * self.row_bytes].view(self.dtype).reshape(
            block_rows, self.n_features)
