"""Compile time of a cold start (issue 17, item 4): each measurement in a fresh process.

    python benchmarks/bench_compile.py                  # every job, 5 fresh processes each
    python benchmarks/bench_compile.py --repeat 3 --jobs select fit
    python benchmarks/bench_compile.py --programs       # also list each job's compiled programs

Jobs (iris: N=150, D=4; imports and loading the data are not timed, everything after is):
  select   `jaxem.select_n_components(key, X, range(1, 9), covariance_types=(all four))` (float32,
           the default) against scikit-learn's loop over the same 32 (type, K) fits and their BIC.
           Target: <= 5 s.
  fit      the first `jaxem.sklearn.GaussianMixture(3, covariance_type=ct).fit(X)` of a process
           (float64, as scikit-learn), per covariance type, against scikit-learn's fit. Target:
           <= 0.5 s.
  batched  `jaxem.batched(f)` called, then a second `jaxem.batched(f)` wrapper of the same f called
           on the same shapes: the second must compile nothing (target: 0 programs).

Every job runs in its own fresh interpreter (so JAX starts cold), with JAX's persistent
compilation cache off. "programs" counts XLA compilations (jax.monitoring's backend-compile event),
"XLA s" sums their compile times (wall, overlapping when compiled side by side), "CPU s" is the
process's CPU time (all threads) over the timed part: on a busy machine it moves much less than
the wall time. The machine is shared: each job is repeated and the table shows medians, with the
1-minute load average around the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CTS = ("full", "tied", "diag", "spherical")


# --- child side: one measurement in this fresh process ----------------------------------------
def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return r.ru_utime + r.ru_stime


def _child(job: str, arg: str | None) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np
    from sklearn.datasets import load_iris

    X = load_iris().data
    if job.endswith("-sklearn"):
        from sklearn.mixture import GaussianMixture as SK

        t, c = time.perf_counter(), _cpu()
        if job == "select-sklearn":
            for ct in CTS:
                for K in range(1, 9):
                    SK(K, covariance_type=ct, random_state=0).fit(X).bic(X)
        else:
            SK(3, covariance_type=arg, random_state=0).fit(X)
        return {"time": time.perf_counter() - t, "cpu": _cpu() - c, "programs": 0, "xla": 0.0}

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import jaxem
    import jaxem.sklearn

    events = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append((kw.get("fun_name", "?"), duration))

    jax.monitoring.register_event_duration_secs_listener(listen)
    out = {}
    if job == "select-jaxem":
        key = jax.random.key(0)  # the caller's key (its own small program), made before timing
        events.clear()
        t, c = time.perf_counter(), _cpu()
        sel = jaxem.select_n_components(key, X, range(1, 9), covariance_types=CTS)
        out["time"], out["cpu"] = time.perf_counter() - t, _cpu() - c
        out["best"] = [int(sel.best_n_components), sel.best_covariance_type]
    elif job == "fit-jaxem":
        t, c = time.perf_counter(), _cpu()
        jaxem.sklearn.GaussianMixture(3, covariance_type=arg, random_state=0).fit(X)
        out["time"], out["cpu"] = time.perf_counter() - t, _cpu() - c
    elif job == "batched-jaxem":
        Xs = np.random.default_rng(0).normal(size=(4, 100, 2)).astype(np.float32)
        model = jaxem.GaussianMixture(2)
        keys = jax.random.split(jax.random.key(1), 4)

        def one(key, X):
            return jaxem.fit(model, model.init(key, X), X)

        events.clear()
        t = time.perf_counter()
        jax.block_until_ready(jaxem.batched(one)(keys, Xs))
        out["first"] = time.perf_counter() - t
        out["first_programs"] = len(events)
        events.clear()
        t, c = time.perf_counter(), _cpu()
        jax.block_until_ready(jaxem.batched(one)(keys, Xs))  # a new wrapper of the same function
        out["time"], out["cpu"] = time.perf_counter() - t, _cpu() - c
    out["programs"] = len(events)
    out["xla"] = sum(d for _, d in events)
    out["names"] = [f"{n} {d:.3f}" for n, d in events]
    return out


# --- parent side ----------------------------------------------------------------------------------
def _run(job: str, arg: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", job] + ([arg] if arg else [])
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{job} {arg or ''} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _measure(job, arg, repeat):
    runs, loads = [], []
    for _ in range(repeat):
        loads.append(os.getloadavg()[0])
        runs.append(_run(job, arg))
    loads.append(os.getloadavg()[0])
    med = lambda k: statistics.median(r[k] for r in runs)
    return runs, {"time": med("time"), "cpu": med("cpu"), "programs": med("programs"),
                  "xla": med("xla"),
                  "load": statistics.median(loads), "all": [r["time"] for r in runs]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", nargs="*", default=["select", "fit", "batched"])
    ap.add_argument("--programs", action="store_true", help="list the compiled programs")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], a.child[1] if len(a.child) > 1 else None)))
        return
    import jax

    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, {a.repeat} fresh processes per row "
          f"(medians), load average at start {os.getloadavg()[0]:.1f}")
    head = (f"{'job':<38}{'jaxem s':>8}{'CPU s':>7}{'target':>8}{'programs':>9}{'XLA s':>7}"
            f"{'sklearn s':>10}{'CPU s':>7}{'load':>6}  jaxem runs (s)")
    print(head)
    print("-" * len(head))
    rows = []
    if "select" in a.jobs:
        rows.append(("select_n_components 4 types x K=1..8", "select", None, 5.0))
    if "fit" in a.jobs:
        rows += [(f"sklearn.GaussianMixture(3, {ct!r}).fit", "fit", ct, 0.5) for ct in CTS]
    if "batched" in a.jobs:
        rows.append(("batched(f) again: 2nd wrapper call", "batched", None, 0))
    for label, job, arg, target in rows:
        runs, m = _measure(f"{job}-jaxem", arg, a.repeat)
        nan = {"time": float("nan"), "cpu": float("nan")}
        sk = _measure(f"{job}-sklearn", arg, a.repeat)[1] if job != "batched" else nan
        tgt = f"{target:g} s" if job != "batched" else "0 prog"
        print(f"{label:<38}{m['time']:>8.2f}{m['cpu']:>7.2f}{tgt:>8}{m['programs']:>9.0f}"
              f"{m['xla']:>7.2f}{sk['time']:>10.2f}{sk['cpu']:>7.2f}{m['load']:>6.1f}  "
              + " ".join(f"{t:.2f}" for t in m["all"]), flush=True)
        if job == "batched":
            print(f"{'  (its 1st wrapper call)':<38}"
                  f"{statistics.median(r['first'] for r in runs):>8.2f}{'':>15}"
                  f"{statistics.median(r['first_programs'] for r in runs):>9.0f}")
        if a.programs:
            for name in runs[0]["names"]:
                print(f"      {name}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
