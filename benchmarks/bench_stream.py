"""EM larger than memory: `jaxem.fit_stream` against Spark MLlib and against the disk.

    python benchmarks/bench_stream.py spark   # vs pyspark.ml GaussianMixture, local[2]
    python benchmarks/bench_stream.py disk    # a 4 GB float32 .npy in /tmp (deleted after)

spark: N=1M, D=8, K=8, full covariances, the same data for all. Time per iteration measured as
(fit with 1 + n iterations - fit with 1 iteration) / n with tol=0 (compilation, Spark's setup and
init excluded); jaxem.fit in memory and fit_stream over the .npy memmap alike (fit_stream's last
pass, the log-likelihood at the returned params, is counted as an iteration on both sides).

disk: N=62.5M, D=16 float32 (4.0 GB) written to /tmp; GaussianMixture(K=4, diag). Three
repeats (the machine is shared: each row's ratios are measured together) of: compute per pass =
in-memory jaxem.fit per iteration on the first 4M rows, scaled by N/4M; read = a sequential
buffered read of the file, cold (its pages dropped from the page cache with
posix_fadvise(DONTNEED), for this file only); one streamed pass cold, the next one ("warm": with
O_DIRECT reads the page cache is not filled, so it reads the disk again), and one with the whole
file in the page cache. The peak anonymous RSS (RssAnon, sampled every 20 ms) and file-backed RSS
(RssFile) are reported. BENCH_STREAM_N=15625000 runs it on a 1 GB file.
"""

import os
import sys
import tempfile
import threading
import time

import jax
import numpy as np

import jaxem
from jaxem._blocks import Source
from jaxem._stream import _Streamer


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Peak RssAnon / RssFile (MB) of this process while the block runs (sampled)."""

    def __enter__(self):
        self.anon = self.file = 0
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                self.anon = max(self.anon, _status_kb("RssAnon") / 1024)
                self.file = max(self.file, _status_kb("RssFile") / 1024)
                time.sleep(0.02)

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _timed(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t, out


def _mixture_data(N, D, K, seed=0, dtype=np.float32, out=None):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(K, D))
    scales = rng.uniform(0.5, 1.5, size=(K, D))
    X = np.empty((N, D), dtype) if out is None else out
    step = 1 << 20
    for a in range(0, N, step):
        n = min(step, N - a)
        z = rng.integers(0, K, n)
        X[a:a + n] = centers[z] + scales[z] * rng.standard_normal((n, D))
    return X


def per_iteration(run, n=10):
    """(time of run(1 + n) - time of run(1)) / n, after a warm-up (compile) run."""
    run(1)
    t1, _ = _timed(lambda: run(1))
    tn, _ = _timed(lambda: run(1 + n))
    return (tn - t1) / n


def spark_section(N=1_000_000, D=8, K=8, n=10):
    from pyspark.ml.clustering import GaussianMixture as SparkGMM
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    X = _mixture_data(N, D, K)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "X.npy")
    np.save(path, X)
    Xm = np.load(path, mmap_mode="r")
    model = jaxem.GaussianMixture(K, covariance_type="full")
    p0 = model.init(jax.random.key(0), X[:100_000])
    rows = []
    t_fit = per_iteration(lambda m: jaxem.fit(model, p0, X, max_iter=m, tol=0.0), n)
    rows.append(("jaxem.fit (in memory, float32)", t_fit))
    t_stream = per_iteration(
        lambda m: jaxem.fit_stream(model, p0, Xm, max_iter=m, tol=0.0), n)
    rows.append(("jaxem.fit_stream (.npy memmap, float32)", t_stream))

    for name, t in rows:
        print(f"  {name}: {1e3 * t:.0f} ms/iter", flush=True)
    csv = os.path.join(tmp, "X.csv")  # the same rows, as text Spark reads natively
    np.savetxt(csv, X, delimiter=",", fmt="%.9g")
    spark = (SparkSession.builder.master("local[2]").appName("bench_stream")
             .config("spark.driver.memory", "4g").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    cols = [f"x{j}" for j in range(D)]
    df = spark.read.csv(csv, schema=", ".join(f"{c} DOUBLE" for c in cols))
    df = VectorAssembler(inputCols=cols, outputCol="features").transform(df).select("features")
    df = df.repartition(2).cache()
    df.count()

    def spark_run(m):
        t = time.perf_counter()
        SparkGMM(k=K, maxIter=m, tol=0.0, seed=1).fit(df)
        return time.perf_counter() - t

    spark_run(1)  # warm-up (JIT of the JVM, caching)
    t1 = spark_run(1)
    tn = spark_run(1 + n)
    t_spark = (tn - t1) / n
    rows.append(("Spark MLlib GaussianMixture (local[2], float64)", t_spark))
    spark.stop()
    os.remove(path)
    os.remove(csv)
    print(f"\nN={N:,} D={D} K={K} full covariances, per EM iteration (mean of {n}), 2 cores")
    print(f"{'':<50}{'ms/iter':>9}{'Spark / this':>14}")
    for name, t in rows:
        print(f"{name:<50}{1e3 * t:9.0f}{t_spark / t:14.2f}")


def _drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_rate(path):
    buf = bytearray(64 << 20)
    size = os.path.getsize(path)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return size / (time.perf_counter() - t) / 1e9  # GB/s


def _cpu():
    t = os.times()
    return t.user + t.system


def disk_section(N=62_500_000, D=16, K=4, ct="diag", subset=4_000_000, repeats=3):
    path = os.path.join(tempfile.gettempdir(), "jaxem_bench_stream.npy")
    try:
        t = time.perf_counter()
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N, D))
        _mixture_data(N, D, K, out=out)
        out.flush()
        del out  # unmapped: its pages can leave the page cache
        t = time.perf_counter() - t
        gb = os.path.getsize(path) / 1e9
        print(f"\nwrote {path}: N={N:,} D={D} float32, {gb:.2f} GB in {t:.0f} s")
        Xm = np.load(path, mmap_mode="r")
        model = jaxem.GaussianMixture(K, covariance_type=ct)
        head = lambda n: np.array(np.load(path, mmap_mode="r")[:n])  # (a map of its own, gone
        p0 = model.init(jax.random.key(0), head(200_000))  # after: no pages left mapped)
        p0 = jax.tree_util.tree_map(jax.numpy.asarray, p0)
        src = Source(Xm)
        s = _Streamer(model, p0, src, None, False)
        jax.block_until_ready(s.statistics(p0, "")[:2])  # compile
        _drop_cache(path)
        with PeakRss() as rss:  # a cold and a warm pass, nothing else in memory
            jax.block_until_ready(s.statistics(p0, "")[:2])
            jax.block_until_ready(s.statistics(p0, "")[:2])
        Xs = head(subset)
        print(f"GaussianMixture(K={K}, {ct}), block_size={s.B:,} rows; reader: "
              f"{'preadv/O_DIRECT (jaxem._filerows)' if src.file is not None else 'memmap copy'}")
        print(f"{'':<4}{'load':>6}{'compute':>9}{'read':>7}{'cold':>7}{'(cpu)':>7}{'warm':>7}"
              f"{'cached':>8}{'cold/max':>10}{'warm/max':>10}{'cached/max':>11}   [s/pass]")
        rows = []
        for r in range(repeats):
            load = os.getloadavg()[0]
            fit = lambda m: jax.block_until_ready(jaxem.fit(model, p0, Xs, max_iter=m, tol=0.0))
            fit(1)
            c0, t0 = _cpu(), time.perf_counter()
            fit(1)
            c1, t1 = _cpu(), time.perf_counter()
            fit(4)
            c2, t2 = _cpu(), time.perf_counter()
            compute = ((t2 - t1) - (t1 - t0)) / 3 * N / subset  # per iteration, scaled to N
            cpu_compute = ((c2 - c1) - (c1 - c0)) / 3 * N / subset
            _drop_cache(path)
            read = gb / _read_rate(path)  # buffered, cold
            _drop_cache(path)
            c0 = _cpu()
            t_cold, _ = _timed(lambda: s.statistics(p0, "")[:2])
            cpu_cold = _cpu() - c0
            t_warm, _ = _timed(lambda: s.statistics(p0, "")[:2])
            _read_rate(path)  # the whole file into the page cache
            t_cached, _ = _timed(lambda: s.statistics(p0, "")[:2])
            bound = max(compute, read)
            row = (load, compute, read, t_cold, cpu_cold, t_warm, t_cached, t_cold / bound,
                   t_warm / bound, t_cached / bound, cpu_compute)
            rows.append(row)
            print(f"{r + 1:<4}{row[0]:6.1f}" + "".join(f"{x:7.2f}" for x in row[1:6])
                  + f"{row[6]:8.2f}{row[7]:10.2f}{row[8]:10.2f}{row[9]:11.2f}", flush=True)
        med = np.median(np.array(rows), axis=0)
        print(f"{'med':<4}{med[0]:6.1f}" + "".join(f"{x:7.2f}" for x in med[1:6])
              + f"{med[6]:8.2f}{med[7]:10.2f}{med[8]:10.2f}{med[9]:11.2f}")
        best = np.min(np.array(rows), axis=0)  # each time's best over the repeats
        bound = max(best[1], best[2])
        print(f"{'min':<4}{'':>6}" + "".join(f"{x:7.2f}" for x in best[1:6])
              + f"{best[6]:8.2f}{best[3] / bound:10.2f}{best[5] / bound:10.2f}"
              f"{best[6] / bound:11.2f}")
        print("compute = in-memory jaxem.fit per iteration on the first "
              f"{subset:,} rows x N/{subset:,}; read = sequential buffered read, cold; cold = a "
              "pass after dropping the file's pages (posix_fadvise DONTNEED), (cpu) its process "
              "CPU seconds (user + sys); warm = the next pass; cached = a pass with the whole file "
              "in the page cache; min: each column's best over the repeats (ratios of the "
              "bests). Target: pass / max(compute, read) <= 1.3.")
        if src.file is not None:
            print(f"blocks read with O_DIRECT / buffered over all passes: {src.file.counts}; "
                  "share of each pass in direct reads: "
                  + " ".join(f"{io / t:.2f}" for t, io in src.file.passes))
        cpus = np.array([(r[-1], r[4]) for r in rows])
        print("process CPU seconds per pass: in-memory fit ~"
              + " ".join(f"{c:.2f}" for c in cpus[:, 0]) + "; fit_stream cold "
              + " ".join(f"{c:.2f}" for c in cpus[:, 1])
              + f" (ratio of medians {np.median(cpus[:, 1]) / np.median(cpus[:, 0]):.2f})")
        print(f"peak RSS during a cold and a warm pass: anonymous {rss.anon:.0f} MB, file-backed "
              f"{rss.file:.0f} MB (the data is {1e3 * gb:.0f} MB)")
    finally:
        if os.path.exists(path):
            os.remove(path)


if __name__ == "__main__":
    print(f"jax {jax.__version__}, {jax.devices()[0]}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    which = sys.argv[1:] or ["spark", "disk"]
    if "spark" in which:
        spark_section()
    if "disk" in which:
        n = os.environ.get("BENCH_STREAM_N")  # a smaller file for development, e.g. 15625000 (1 GB)
        r = os.environ.get("BENCH_STREAM_REPEATS", "3")
        disk_section(repeats=int(r), **({} if n is None else {"N": int(n)}))
