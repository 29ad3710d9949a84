"""Gaussian HMM Baum-Welch per EM iteration: jaxem vs hmmlearn vs dynamax (issue 16).

Problem: full covariances, K=8 states, D=4, S=100 sequences of T=1,000 steps, float64, every library
started from the same parameters. Per-iteration time of warm (compiled) runs; one run each.
Also: the parallel-in-time E-step against the sequential one, and a single sequence of T=10^5 and
10^6 (time and XLA temporary memory of one statistics pass: linear in T).

    PYTHONPATH=. python benchmarks/bench_hmm.py [--quick]
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402

K, D, S, T = 8, 4, 100, 1000
QUICK = "--quick" in sys.argv


def problem():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (K, D))
    A = 0.9 * np.eye(K) + 0.1 * rng.dirichlet(np.ones(K), K)
    A /= A.sum(1, keepdims=True)
    covs = np.stack([np.eye(D) * rng.uniform(0.5, 1.5) for _ in range(K)])
    truth = jaxem.GaussianHMMParams(jnp.full(K, 1 / K), jnp.asarray(A), jnp.asarray(means),
                                    jnp.asarray(covs))
    model = jaxem.GaussianHMM(K, "full", reg_covar=0.0, inference="sequential")
    X = np.asarray(model.sample(jax.random.key(0), truth, T, S))
    start = model.init(jax.random.key(1), X)
    return model, X, jax.tree.map(np.asarray, start)


CLOCK = time.perf_counter  # wall clock; --cpu: process CPU time (all threads; steadier on a
if "--cpu" in sys.argv:     # machine shared with other jobs)
    CLOCK = time.process_time


def best_of(f, n=3):
    ts = []
    for _ in range(n):
        t0 = CLOCK()
        f()
        ts.append(CLOCK() - t0)
    return min(ts)


def bench_jaxem(model, X, start, iters):
    Xd = jnp.asarray(X)
    run = lambda m: jax.block_until_ready(jaxem.fit(model, start, Xd, max_iter=m, tol=0.0))
    run(1), run(iters + 1)  # compile both
    t1 = best_of(lambda: run(1))
    tn = best_of(lambda: run(iters + 1))
    return (tn - t1) / iters


def bench_hmmlearn(X, start, iters, implementation="log"):
    """hmmlearn's GaussianHMM: implementation="log" is its default, "scaling" its faster option."""
    try:
        from hmmlearn import hmm
    except ImportError:
        return None
    m = hmm.GaussianHMM(K, "full", n_iter=iters, tol=-np.inf, init_params="", params="stmc",
                        covars_prior=0.0, covars_weight=1.0, implementation=implementation)
    m.startprob_, m.transmat_ = start.initial_probs, start.transition_matrix
    m.means_, m.covars_ = start.means, start.covariances
    Xc, lengths = X.reshape(S * T, D), [T] * S
    return best_of(lambda: m.fit(Xc, lengths), 1) / iters


def bench_dynamax(X, start, iters):
    try:
        from dynamax.hidden_markov_model import GaussianHMM
    except Exception as err:  # noqa: BLE001
        print(f"dynamax unavailable: {type(err).__name__}: {err}")
        return None
    hmm = GaussianHMM(K, D)
    params, props = hmm.initialize(initial_probs=jnp.asarray(start.initial_probs),
                                   transition_matrix=jnp.asarray(start.transition_matrix),
                                   emission_means=jnp.asarray(start.means),
                                   emission_covariances=jnp.asarray(start.covariances))
    em = jnp.asarray(X)
    run = lambda n: jax.block_until_ready(hmm.fit_em(params, props, em, num_iters=n, verbose=False))
    run(1)
    t1 = best_of(lambda: run(1), 2)
    tn = best_of(lambda: run(iters + 1), 1)
    return (tn - t1) / iters


def bench_parallel(model, X, start):
    seq = jaxem.GaussianHMM(K, "full", inference="sequential")
    par = jaxem.GaussianHMM(K, "full", inference="parallel")
    out = {}
    for name, m in (("sequential", seq), ("parallel", par)):
        f = jax.jit(lambda p, x, m=m: m.sufficient_statistics(p, x))
        x = jnp.asarray(X[:10])
        jax.block_until_ready(f(start, x))
        out[name] = best_of(lambda: jax.block_until_ready(f(start, x)))
    return out


def bench_long(model, start):
    rows = []
    for T_long in (100_000, 1_000_000):
        truth = jax.tree.map(jnp.asarray, start)
        x = model.sample(jax.random.key(2), truth, T_long, 1)[0]
        f = jax.jit(lambda p, x: model.sufficient_statistics(p, x))
        compiled = f.lower(truth, x).compile()
        mem = compiled.memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20
        jax.block_until_ready(compiled(truth, x))
        t = best_of(lambda: jax.block_until_ready(compiled(truth, x)), 1)
        rows.append((T_long, t, temp))
        del x
    return rows


def main():
    model, X, start = problem()
    iters = 5 if QUICK else 10
    print(f"Gaussian HMM, full covariances, K={K}, D={D}, S={S} x T={T}, float64; "
          f"{jax.devices()[0].platform}, jax {jax.__version__}; clock: {CLOCK.__name__}")
    rows = [("jaxem", bench_jaxem(model, X, start, iters))]
    rows.append(("dynamax", bench_dynamax(X, start, iters)))
    rows.append(("hmmlearn (default, implementation=\"log\")",
                 bench_hmmlearn(X, start, max(2, iters // 3), "log")))
    rows.append(("hmmlearn (implementation=\"scaling\")",
                 bench_hmmlearn(X, start, max(2, iters // 3), "scaling")))
    jx = rows[0][1]
    print("\n| library | ms / EM iteration | jaxem speed-up |\n|---|---|---|")
    for name, t in rows:
        if t is None:
            print(f"| {name} | n/a | |")
        else:
            print(f"| {name} | {1e3 * t:.1f} | {t / jx:.1f}x |")
    par = bench_parallel(model, X, start)
    print(f"\nE-step + statistics, S=10 x T={T}: sequential {1e3 * par['sequential']:.1f} ms, "
          f"parallel (associative_scan) {1e3 * par['parallel']:.1f} ms "
          f"(speed-up {par['sequential'] / par['parallel']:.2f}x on this CPU)")
    print("\n| single sequence T | one statistics pass (s) | XLA temp memory (MB) |\n|---|---|---|")
    for T_long, t, mem in bench_long(model, start):
        print(f"| {T_long:,} | {t:.2f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
