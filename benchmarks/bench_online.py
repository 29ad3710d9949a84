"""Online (stepwise) EM vs batch EM on N = 10M samples of a Gaussian mixture (D=8, K=8, float32).

    python benchmarks/bench_online.py [--n 10000000] [--batch 20000]

The sample is drawn on the device from a random 8-component mixture (seeded). Both fits start from
the same parameters (k-means init on the first 100k rows). Batch EM is `jaxem.fit` (tol=1e-3,
scikit-learn's default) and its time is to its own convergence. Online EM is `jaxem.fit_online` over
mini-batches of ``--batch`` rows (default schedule γ_t = (t+2)^-0.6): its time is to the first
checkpoint whose mean log-likelihood on all N rows is within 1e-3 of batch EM's final value.
Checkpoints (a full pass of `model.log_likelihood`) are taken by the callback every 1/20 of a pass
and are NOT counted in online EM's time. Both times include compilation (once per program), and
both are run once (the machine is shared): read them as rough figures.
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxem


def make_data(n, D, K, seed=0, chunk=1_000_000):
    """A random K-component full-covariance mixture and n float32 samples of it (on the device)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, D)) * 1.5  # overlapping components
    A = rng.normal(size=(K, D, D)) * 0.4
    cov = A @ np.swapaxes(A, 1, 2) + 0.3 * np.eye(D)
    w = rng.dirichlet(np.full(K, 5.0))
    truth = jaxem.GaussianMixtureParams(*(jnp.asarray(a, jnp.float32) for a in (w, means, cov)))
    model = jaxem.GaussianMixture(K)
    sample = jax.jit(lambda k: model.sample(k, truth, chunk))
    parts = [sample(jax.random.key(seed * 1000 + i)) for i in range(-(-n // chunk))]
    return jnp.concatenate(parts)[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    D, K, N, Bsz = 8, 8, a.n, a.batch
    print(f"N={N:,} D={D} K={K} float32, full covariances; batch EM tol=1e-3; "
          f"online batch={Bsz:,}, default step size; {jax.devices()[0]}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}")
    X = jax.block_until_ready(make_data(N, D, K))
    model = jaxem.GaussianMixture(K)
    p0 = jax.block_until_ready(model.init(jax.random.key(1), X[:100_000]))
    ll_fn = jax.jit(lambda p: model.log_likelihood(p, X) / N)

    t = time.perf_counter()
    batch = jax.block_until_ready(jaxem.fit(model, p0, X, max_iter=300, tol=1e-3))
    t_batch = time.perf_counter() - t
    target = float(batch.log_likelihood)
    print(f"batch EM: {int(batch.n_iter)} iterations, {t_batch:.1f} s, mean log-likelihood "
          f"{target:.5f}, status {int(batch.status)}")

    T = N // Bsz
    every = max(1, T // 20)
    log = {"excluded": 0.0, "hit": None, "points": []}
    start = time.perf_counter()

    def callback(t, params):
        if (t + 1) % every or log["hit"] is not None:
            return
        jax.block_until_ready(params)
        t0 = time.perf_counter()
        ll = float(ll_fn(params))
        elapsed = t0 - start - log["excluded"]
        log["points"].append((t + 1, elapsed, ll))
        if ll >= target - 1e-3:
            log["hit"] = (t + 1, elapsed, ll)
        log["excluded"] += time.perf_counter() - t0

    batches = lambda: (X[i * Bsz:(i + 1) * Bsz] for i in range(T))
    r = jaxem.fit_online(model, p0, batches, n_epochs=a.epochs, callback=callback)
    jax.block_until_ready(r.params)
    t_online = time.perf_counter() - start - log["excluded"]
    final = float(ll_fn(r.params))

    # The stacked path: one lax.scan over one pass (compile included).
    t = time.perf_counter()
    s = jax.block_until_ready(jaxem.fit_online(model, p0, X[:T * Bsz].reshape(T, Bsz, D)))
    t_scan = time.perf_counter() - t
    ll_scan = float(ll_fn(s.params))

    print("\ncheckpoints (online, iterable path): steps, seconds, mean log-likelihood, gap")
    for st, el, ll in log["points"]:
        print(f"  {st:6d} {el:8.2f} s {ll:11.5f} {target - ll:+.2e}")
    print(f"\n{'method':<44}{'seconds':>9}{'rows seen':>14}{'ll gap':>11}")
    print(f"{'batch EM to tol=1e-3 (jaxem.fit)':<44}{t_batch:9.1f}"
          f"{int(batch.n_iter) * N:>14,}{0.0:>11.1e}")
    if log["hit"]:
        st, el, ll = log["hit"]
        print(f"{'online EM to within 1e-3 (iterable)':<44}{el:9.1f}{st * Bsz:>14,}"
              f"{target - ll:>11.1e}")
    else:
        print(f"{'online EM: 1e-3 not reached':<44}{t_online:9.1f}{'-':>14}{'-':>11}")
    print(f"{f'online EM, {a.epochs} passes (iterable)':<44}{t_online:9.1f}"
          f"{a.epochs * T * Bsz:>14,}{target - final:>11.1e}")
    print(f"{'online EM, 1 pass (stacked, one lax.scan)':<44}{t_scan:9.1f}{T * Bsz:>14,}"
          f"{target - ll_scan:>11.1e}")


if __name__ == "__main__":
    main()
