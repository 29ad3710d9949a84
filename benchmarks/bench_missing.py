"""The cost of missing values: EM iterations with missing="marginalize" vs the complete-data fast
path (no peer: scikit-learn's mixtures and decompositions refuse NaN).

Per family: the time of 20 EM iterations (jitted `jaxem.fit`, tol=0, compile excluded, median of 5)
on complete data with missing="error" (the fast path), on the same data with missing="marginalize"
(the mask-based route, nothing missing), and on the data with 20% of the entries missing at random.

    python benchmarks/bench_missing.py
"""

from __future__ import annotations

import time

import jax
import numpy as np

import jaxem

N, D, K, Q, ITERS = 20_000, 8, 4, 3, 20


def _time(model, params, X):
    run = lambda: jaxem.fit(model, params, X, max_iter=ITERS, tol=0)
    jax.block_until_ready(run())  # compile
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(run())
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(N, Q)) @ rng.normal(size=(Q, D)) + rng.normal(size=(N, D))).astype(
        np.float32)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.2] = np.nan
    print(f"N={N}, D={D}, float32, {ITERS} EM iterations; seconds (median of 5), jax "
          f"{jax.__version__}, {jax.devices()[0].platform}")
    print(f"{'model':32s} {'complete, error':>16s} {'complete, marg.':>16s} {'20% NaN, marg.':>16s}")
    models = [(f"GaussianMixture({K}, {ct!r})", lambda m, ct=ct: jaxem.GaussianMixture(
        K, ct, missing=m)) for ct in ("full", "tied", "diag", "spherical")]
    models += [(f"PPCA({Q})", lambda m: jaxem.PPCA(Q, missing=m)),
               (f"FactorAnalysis({Q})", lambda m: jaxem.FactorAnalysis(Q, missing=m))]
    for name, make in models:
        plain, marg = make("error"), make("marginalize")
        p = plain.init(jax.random.key(0), X)
        t = [_time(plain, p, X), _time(marg, p, X), _time(marg, p, Xm)]
        print(f"{name:32s} {t[0]:16.3f} {t[1]:16.3f} {t[2]:16.3f}")


if __name__ == "__main__":
    main()
