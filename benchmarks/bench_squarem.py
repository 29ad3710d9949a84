"""SQUAREM vs plain EM to tol=1e-8 on slowly converging fits: EM steps and wall time.

Each problem is fitted from the same start by `jaxem.fit` (plain EM) and by
`jaxem.fit(..., accelerate="squarem")` (3 EM steps per cycle), jitted, compile excluded (each
program runs once before it is timed; the median of 5 runs is reported).

    python benchmarks/bench_squarem.py
"""

from __future__ import annotations

import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402

TOL, MAX_ITER = 1e-8, 20_000


def overlapping_gmm(rng, n=20_000, d=4):
    """Two heavily overlapping Gaussians."""
    return np.concatenate([rng.normal(0.0, 1.0, (n // 2, d)), rng.normal(0.8, 1.3, (n // 2, d))])


def three_overlapping(rng, n=20_000, d=2):
    means = np.array([[0.0, 0.0], [1.2, 0.4], [0.3, 1.3]])
    z = rng.integers(0, 3, n)
    return means[z] + rng.normal(size=(n, d))


def low_noise(rng, n=2_000, d=10, q=3, noise=0.1):
    W = rng.normal(size=(d, q)) * 2.0
    return rng.normal(size=(n, q)) @ W.T + noise * rng.normal(size=(n, d))


def fa_low_noise(rng, n=2_000, d=10, q=3):
    W = rng.normal(size=(d, q)) * 2.0
    return rng.normal(size=(n, q)) @ W.T + rng.uniform(0.05, 0.3, d) * rng.normal(size=(n, d))


PROBLEMS = [
    ("GMM full K=2, overlapping", jaxem.GaussianMixture(2, "full"), overlapping_gmm),
    ("GMM diag K=3, overlapping", jaxem.GaussianMixture(3, "diag"), three_overlapping),
    ("PPCA q=3, noise 0.1", jaxem.PPCA(3), low_noise),
    ("FA q=3, noise 0.05-0.3", jaxem.FactorAnalysis(3), fa_low_noise),
]


def timed(f, *args, repeats=3):
    out = f(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    print(f"tol={TOL}, float64, compile excluded, median of 3 runs; jax {jax.__version__}")
    header = ("problem", "EM steps", "EM time", "SQUAREM steps (cycles)", "SQUAREM time",
              "fewer steps", "faster", "Δ log-lik")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, model, make in PROBLEMS:
        X = jax.device_put(make(rng))
        p0 = model.init(jax.random.key(0), X)
        plain = jax.jit(lambda p, X: jaxem.fit(model, p, X, tol=TOL, max_iter=MAX_ITER),
                        compiler_options=dict(jaxem.COMPILER_OPTIONS))
        sq = jax.jit(lambda p, X: jaxem.fit(model, p, X, tol=TOL, max_iter=MAX_ITER // 3,
                                            accelerate="squarem"),
                     compiler_options=dict(jaxem.COMPILER_OPTIONS))
        r_em, t_em = timed(plain, p0, X)
        r_sq, t_sq = timed(sq, p0, X)
        n_em, n_sq = int(r_em.n_iter), 3 * int(r_sq.n_iter)
        em_steps = f"{n_em}" if int(r_em.status) == 0 else f"≥ {n_em} (not converged)"
        sq_steps = f"{n_sq} ({int(r_sq.n_iter)})" + ("" if int(r_sq.status) == 0 else " (not converged)")
        print(f"| {name} | {em_steps} | {t_em * 1e3:.0f} ms | {sq_steps} | "
              f"{t_sq * 1e3:.0f} ms | {n_em / n_sq:.1f}x | {t_em / t_sq:.1f}x | "
              f"{float(r_sq.log_likelihood) - float(r_em.log_likelihood):+.1e} |")


if __name__ == "__main__":
    main()
