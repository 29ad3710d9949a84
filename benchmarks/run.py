"""jaxem against scikit-learn and gmmx, measured in one run on this machine.

    pip install -e ".[bench]" && python benchmarks/run.py            # full run (~10 min on 2 cores)
    python benchmarks/run.py --quick                                  # smaller sizes, for a smoke test

Sections (issue 6):
  1. steady-state time per EM iteration, full covariance (compile excluded): (t(11 iters) - t(1)) / 10,
     best of 3, every library started from the same parameters;
  2. end-to-end time of a fit as a user runs it (init + fit to tol=1e-3, compile included), each in a
     fresh process: cold, and with JAX's persistent compilation cache warm (a script run again);
     then whole scripts timed from outside (interpreter start, imports, loading X, the fit);
  3. throughput of 2,000 small fits (N=500, D=2, K=3): one compiled call (jax.jit(jax.vmap), and
     an eager jaxem.batched, which runs equal parts of the batch on one thread per core) vs a
     Python loop of scikit-learn;
  4. peak RSS of a fit at N=2,000,000, D=16, K=16, float32 (child processes), against the size of X;
  5. achieved FLOP/s per EM iteration against this machine's dense matmul rate.
gmmx is skipped where it cannot run (it is not installed, or it cannot vmap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

os.environ.setdefault("XLA_FLAGS", "")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import jaxem  # noqa: E402

try:
    import gmmx
except ImportError:  # optional peer
    gmmx = None

warnings.filterwarnings("ignore")


def _now(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t


def best_of(fn, repeat=3):
    return min(_now(fn) for _ in range(repeat))


def make_data(N, D, K, dtype, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, D)) * 3.0
    X = centers[rng.integers(0, K, N)] + rng.normal(size=(N, D))
    return X.astype(dtype)


def start(X, K):
    model = jaxem.GaussianMixture(K, "full")
    return jax.jit(model.init, static_argnames="method")(jax.random.key(0), X,
                                                        method="random_from_data")


# --- 1. per iteration -----------------------------------------------------------------------------
def per_iter_jaxem(X, p0, K):
    model = jaxem.GaussianMixture(K, "full")
    fits = {n: jax.jit(lambda p, x, n=n: jaxem.fit(model, p, x, max_iter=n, tol=0)) for n in (1, 11)}
    for f in fits.values():
        jax.block_until_ready(f(p0, X))
    return (best_of(lambda: fits[11](p0, X)) - best_of(lambda: fits[1](p0, X))) / 10


def per_iter_sklearn(X, p0, K):
    from sklearn.mixture import GaussianMixture as SK

    prec = np.linalg.inv(np.asarray(p0.covariances, np.float64))
    def fit(n):
        return SK(K, weights_init=np.asarray(p0.weights, np.float64), means_init=np.asarray(p0.means),
                  precisions_init=prec, max_iter=n, tol=0, init_params="random_from_data",
                  random_state=0).fit(X)
    return (best_of(lambda: fit(11), 2) - best_of(lambda: fit(1), 2)) / 10


def per_iter_gmmx(X, p0, K):
    if gmmx is None or X.dtype != np.float32:  # gmmx supports float32 only
        return float("nan")
    with jax.enable_x64(False):  # gmmx fails when x64 is on
        g = gmmx.GaussianMixtureModelJax.from_squeezed(
            means=np.asarray(p0.means), covariances=np.asarray(p0.covariances),
            weights=np.asarray(p0.weights))
        x = jnp.asarray(X)
        fitters = {n: gmmx.EMFitter(max_iter=n, tol=0.0) for n in (1, 11)}
        for f in fitters.values():
            f.fit(x, g)
        return (best_of(lambda: fitters[11].fit(x, g).log_likelihood)
                - best_of(lambda: fitters[1].fit(x, g).log_likelihood)) / 10


def section_per_iteration(sizes, rows):
    print("\n1. Time per EM iteration, full covariance (ms; compile excluded)")
    print(f"{'N':>9} {'D':>3} {'K':>3} {'dtype':>8} {'jaxem':>9} {'sklearn':>9} {'gmmx':>9}"
          f" {'sk/jaxem':>9} {'gmmx/jaxem':>11}")
    for N, D, K, dtype in sizes:
        X = make_data(N, D, K, dtype)
        p0 = start(X, K)
        tj = per_iter_jaxem(X, p0, K)
        ts = per_iter_sklearn(X.astype(np.float64), p0, K) if dtype == np.float64 else float("nan")
        tg = per_iter_gmmx(X, p0, K)
        flops = 4.0 * N * K * D * D
        rows.append(dict(section="per_iter", N=N, D=D, K=K, dtype=np.dtype(dtype).name, jaxem=tj,
                         sklearn=ts, gmmx=tg, gflops=flops / tj / 1e9))
        print(f"{N:>9} {D:>3} {K:>3} {np.dtype(dtype).name:>8} {tj*1e3:>9.1f} {ts*1e3:>9.1f}"
              f" {tg*1e3:>9.1f} {ts/tj:>8.1f}x {tg/tj:>10.1f}x")


# --- 2. end to end --------------------------------------------------------------------------------
def _e2e_child(kind, N, D, K, cache_dir):
    """One fresh process per measurement: imports and the JAX runtime are up, nothing is compiled
    (or, for "jaxem-warm", JAX's persistent compilation cache already holds the programs)."""
    if kind == "jaxem-warm":
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    X = make_data(N, D, K, np.float64, seed=1)
    jax.block_until_ready(jnp.ones(1))
    out = {}
    if kind in ("jaxem-cold", "jaxem-warm"):
        model = jaxem.GaussianMixture(K, "full")
        t = time.perf_counter()
        p0 = model.init(jax.random.key(0), X)  # as a user runs it: eager calls
        r = jax.block_until_ready(jaxem.fit(model, p0, X, tol=1e-3))
        out = dict(seconds=time.perf_counter() - t, n_iter=int(r.n_iter),
                   score=float(r.log_likelihood))
    elif kind == "jaxem-estimator":
        from jaxem.sklearn import GaussianMixture as JG

        t = time.perf_counter()
        g = JG(K, tol=1e-3, random_state=0).fit(X)
        out = dict(seconds=time.perf_counter() - t, n_iter=int(g.n_iter_), score=float(g.score(X)))
    elif kind == "sklearn":
        from sklearn.mixture import GaussianMixture as SK

        t = time.perf_counter()
        sk = SK(K, tol=1e-3, random_state=0).fit(X)
        out = dict(seconds=time.perf_counter() - t, n_iter=int(sk.n_iter_), score=float(sk.score(X)))
    elif kind == "gmmx" and gmmx is not None:
        with jax.enable_x64(False):
            X32 = X.astype(np.float32)
            t = time.perf_counter()
            g = gmmx.GaussianMixtureSKLearn(K, tol=1e-3, random_state=0).fit(X32)
            jax.block_until_ready(g._gmm.means)
            out = dict(seconds=time.perf_counter() - t, n_iter=-1, score=float("nan"))
    else:
        raise ValueError(f"unknown end-to-end measurement {kind!r}")
    print(json.dumps(out))


def _child(args, env=None):
    env = None if env is None else {**os.environ, **env}
    res = subprocess.run([sys.executable, __file__] + [str(a) for a in args], capture_output=True,
                         text=True, env=env)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except Exception:
        print(f"   {args[1]}: failed ({res.stderr.strip().splitlines()[-1:]})")
        return None


# A whole script as a user runs it, timed from outside (interpreter start, imports, loading X, the
# fit): what `time python script.py` reports.
_SCRIPTS = {
    "sklearn": "import numpy as np\nfrom sklearn.mixture import GaussianMixture\nX = np.load({path!r})\n"
               "GaussianMixture({K}, tol=1e-3, random_state=0).fit(X)\n",
    "jaxem": "import numpy as np, jax\njax.config.update('jax_enable_x64', True)\nimport jaxem\n"
             "X = np.load({path!r})\nmodel = jaxem.GaussianMixture({K})\n"
             "p0 = model.init(jax.random.key(0), X)\n"
             "jax.block_until_ready(jaxem.fit(model, p0, X, tol=1e-3))\n",
    "jaxem.sklearn": "import numpy as np, jax\njax.config.update('jax_enable_x64', True)\n"
                     "from jaxem.sklearn import GaussianMixture\nX = np.load({path!r})\n"
                     "GaussianMixture({K}, tol=1e-3, random_state=0).fit(X)\n",
    "python + numpy only": "import numpy as np\nX = np.load({path!r})\n",
}


def _whole_scripts(X, K, repeat=3):
    import tempfile

    times = {name: [] for name in _SCRIPTS}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "X.npy")
        np.save(path, X)
        for _ in range(repeat):  # in turn, as the in-process rows
            for name, src in _SCRIPTS.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", src.format(path=path, K=K)], check=True,
                               capture_output=True)
                times[name].append(time.perf_counter() - t)
    return {name: min(t) for name, t in times.items()}


def section_end_to_end(N, D, K, rows, repeat=3):
    import tempfile

    print(f"\n2. End-to-end fit as a user runs it (init + EM to tol=1e-3, compile included; each in a"
          f" fresh process, imports done; {repeat} rounds over the kinds in turn, median and range),"
          f" N={N} D={D} K={K} float64")
    with tempfile.TemporaryDirectory() as cache:
        kinds = ["sklearn", "jaxem-cold", "jaxem-estimator", "jaxem-warm"] + (["gmmx"] if gmmx else [])
        _child(["--e2e-child", "jaxem-warm", N, D, K, cache])  # fills the persistent cache
        runs = {kind: [] for kind in kinds}
        for _ in range(repeat):  # in turn, so that the machine's drift hits every kind alike
            for kind in kinds:
                r = _child(["--e2e-child", kind, N, D, K, cache])
                if r:
                    runs[kind].append(r)
    out = {k: dict(v[0], seconds=float(np.median([r["seconds"] for r in v])),
                   times=[r["seconds"] for r in v]) for k, v in runs.items() if v}
    sk = out.get("sklearn", {}).get("seconds", float("nan"))
    labels = {"sklearn": "scikit-learn", "jaxem-cold": "jaxem init + fit, cold (compiles)",
              "jaxem-estimator": "jaxem.sklearn estimator, cold (compiles)",
              "jaxem-warm": "jaxem, JAX persistent compilation cache warm", "gmmx": "gmmx (float32)"}
    for kind, r in out.items():
        it = f"{r['n_iter']} iterations, score {r['score']:.4f}" if r["n_iter"] >= 0 else ""
        span = f"{min(r['times']):.2f}-{max(r['times']):.2f}"
        print(f"   {labels[kind]:<46} {r['seconds']:6.2f} s [{span}]  ({it})  sklearn/this = "
              f"{sk / r['seconds']:.1f}x")
    scripts = _whole_scripts(make_data(N, D, K, np.float64, seed=1), K)
    print("   whole script, `python script.py` timed from outside (interpreter, imports, load X, fit;"
          " best of 3):")
    for name, t in scripts.items():
        ratio = "" if name.startswith("python") else f"  sklearn/this = {scripts['sklearn'] / t:.1f}x"
        print(f"     {name:<22} {t:6.2f} s{ratio}")
    rows.append(dict(section="end_to_end", N=N, D=D, K=K,
                     **{k: v["times"] for k, v in out.items()}, scripts=scripts))


# --- 3. many small fits ---------------------------------------------------------------------------
def section_small_fits(B, N, D, K, rows):
    from sklearn.mixture import GaussianMixture as SK

    Xs = np.stack([make_data(N, D, K, np.float64, seed=s) for s in range(B)])
    model = jaxem.GaussianMixture(K, "full")

    def one(key, x):
        return jaxem.fit(model, model.init(key, x), x, tol=1e-3)

    keys = jax.random.split(jax.random.key(0), B)
    print(f"\n3. {B} fits of N={N} D={D} K={K} (init + EM to tol=1e-3), one compiled call")
    n_loop = min(B, 100)
    t_sk = _now(lambda: [SK(K, tol=1e-3, random_state=i).fit(Xs[i]) for i in range(n_loop)])
    t_sk_all = t_sk * B / n_loop
    print(f"   sklearn loop: {t_sk_all:.1f} s (timed {n_loop} fits, scaled)")
    out = dict(section="small_fits", B=B, sklearn=t_sk_all)
    # jax.jit(jax.vmap(one)): the user's jit, XLA's default options. jaxem.batched(one) called
    # eagerly compiles itself (one program, jaxem.COMPILER_OPTIONS on CPU).
    for name, f in (("jax.jit(jax.vmap)", jax.jit(jax.vmap(one))), ("jaxem.batched", jaxem.batched(one))):
        t_first = _now(lambda: f(keys, Xs))  # includes compile
        t_steady = best_of(lambda: f(keys, Xs), 2)
        r = f(keys, Xs)
        out[name] = (t_steady, t_first)
        print(f"   jaxem {name:<17}: {t_steady:5.2f} s steady ({B / t_steady:,.0f} fits/s), {t_first:5.2f} s"
              f" with compile  ->  {t_sk_all / t_steady:4.0f}x steady, {t_sk_all / t_first:4.0f}x with"
              f" compile (mean n_iter {float(r.n_iter.mean()):.1f}, max {int(r.n_iter.max())})")
    rows.append(out)


# --- 4. peak memory -------------------------------------------------------------------------------
def _rss_child(kind, N, D, K):
    rng = np.random.default_rng(3)  # float32 throughout, built in place: no N-sized temporaries
    X = rng.standard_normal((N, D), dtype=np.float32)
    centers = rng.standard_normal((K, D), dtype=np.float32) * 3
    for s in range(0, N, 1 << 16):
        X[s:s + (1 << 16)] += centers[rng.integers(0, K, min(1 << 16, N - s))]
    x = jax.block_until_ready(jax.device_put(X))  # a large X goes to the device once
    del X
    if kind in ("jaxem", "jaxem-kmeans"):
        model = jaxem.GaussianMixture(K, "full")
        method = "kmeans" if kind == "jaxem-kmeans" else "random_from_data"
        p0 = model.init(jax.random.key(0), x, method=method)
        jax.block_until_ready(jaxem.fit(model, p0, x, max_iter=5, tol=0))
    elif kind == "gmmx":
        jax.config.update("jax_enable_x64", False)
        model = jaxem.GaussianMixture(K, "full")
        p0 = model.init(jax.random.key(0), x, method="random_from_data")
        g = gmmx.GaussianMixtureModelJax.from_squeezed(means=p0.means, covariances=p0.covariances,
                                                       weights=p0.weights)
        jax.block_until_ready(gmmx.EMFitter(max_iter=5, tol=0.0).fit(x, g).log_likelihood)
    elif kind != "baseline":
        raise ValueError(f"unknown RSS measurement {kind!r}")  # never a silent baseline
    print(json.dumps(dict(rss_mb=_peak_rss_mb())))


def _peak_rss_mb():
    """Peak RSS of this address space (VmHWM). ru_maxrss would include the parent's peak: it
    survives fork + exec on Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def section_memory(N, D, K, rows):
    x_mb = N * D * 4 / 2**20
    print(f"\n4. Peak RSS, N={N:,} D={D} K={K} float32 (X is {x_mb:.0f} MB; target < 2 X + 300 MB"
          f" = {2 * x_mb + 300:.0f} MB)")
    kinds = ["baseline", "jaxem", "jaxem-kmeans", "jaxem-kmeans-pinned"] + (
        ["gmmx"] if gmmx is not None else [])
    labels = {"baseline": "baseline", "jaxem": "jaxem", "jaxem-kmeans": "jaxem, k-means init",
              "jaxem-kmeans-pinned": "  same, glibc mmap threshold pinned", "gmmx": "gmmx"}
    # glibc raises its mmap threshold after each large free, so XLA's freed temporaries then come
    # from (and fragment) the heap; MALLOC_MMAP_THRESHOLD_ pins it (a process setting, for scale).
    pinned = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = {}
    for kind in kinds:
        child_kind = kind.replace("-pinned", "")
        r = _child(["--rss-child", child_kind, N, D, K], env=pinned if kind.endswith("pinned") else None)
        out[kind] = r["rss_mb"] if r else float("nan")
    for kind, mb in out.items():
        extra = "" if kind == "baseline" else f"; {mb - out['baseline']:5.0f} MB above the baseline"
        ok = "" if kind == "baseline" else ("  meets target" if mb < 2 * x_mb + 300 else "  MISSES")
        print(f"   {labels[kind]:<20} peak RSS {mb:6.0f} MB  ({mb / x_mb:.2f} x X{extra}){ok}")
    print("   (baseline: Python + JAX runtime + X made on the host and moved to the device with"
          " jax.device_put, no fit; jaxem/gmmx: init with random rows unless stated, 5 EM iterations)")
    rows.append(dict(section="memory", N=N, x_mb=x_mb, **out))


# --- 5. FLOP/s ------------------------------------------------------------------------------------
def matmul_rate(dtype, n=2048):
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(dtype))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    return 2 * n**3 / best_of(lambda: f(a), 5)


def section_flops(rows):
    print("\n5. Achieved FLOP/s per EM iteration (4 N K D^2 flops) vs dense matmul on this machine")
    for dtype in (np.float64, np.float32):
        rate = matmul_rate(dtype)
        for r in rows:
            if r["section"] == "per_iter" and r["dtype"] == np.dtype(dtype).name:
                print(f"   N={r['N']:>9,} D={r['D']:>2} K={r['K']:>2} {r['dtype']:>8}: "
                      f"{r['gflops']:6.1f} GFLOP/s = {r['gflops'] * 1e9 / rate:5.1%} of matmul "
                      f"({rate / 1e9:.1f} GFLOP/s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rss-child", nargs=4)
    ap.add_argument("--e2e-child", nargs=5)
    ap.add_argument("--only", default="12345")
    args = ap.parse_args()
    if args.rss_child:
        kind, N, D, K = args.rss_child
        return _rss_child(kind, int(N), int(D), int(K))
    if args.e2e_child:
        kind, N, D, K, cache = args.e2e_child
        return _e2e_child(kind, int(N), int(D), int(K), cache)
    q = args.quick
    print(f"jaxem {jaxem.__version__}, jax {jax.__version__}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    rows = []
    if "1" in args.only:
        big = (20_000 if q else 100_000, 16, 16)
        huge = (100_000 if q else 1_000_000, 8, 8)
        section_per_iteration([(*big, np.float64), (*big, np.float32), (*huge, np.float64),
                               (*huge, np.float32)], rows)
    if "2" in args.only:
        section_end_to_end(20_000 if q else 100_000, 16, 16, rows)
    if "3" in args.only:
        section_small_fits(200 if q else 2000, 500, 2, 3, rows)
    if "4" in args.only:
        section_memory(200_000 if q else 2_000_000, 16, 16, rows)
    if "5" in args.only and "1" in args.only:
        section_flops(rows)


if __name__ == "__main__":
    main()
