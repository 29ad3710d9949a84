"""`jaxem.hmmlearn.GaussianHMM` vs `hmmlearn.hmm.GaussianHMM`: the same estimator call (issue 19).

Problem: full covariances, K=8 states, D=4, S=100 sequences of T=1,000 steps (concatenated with
``lengths``), float64, both started from the same parameters (``init_params=""``), ``n_iter=10``
iterations forced (``tol=-inf``). Reports the time of ``fit`` (cold: first call, compile included;
warm: second call) and of ``score``, and the largest difference of the fitted parameters.

    PYTHONPATH=. python benchmarks/bench_hmmlearn.py [--cpu]
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np
from hmmlearn import hmm as hl

from jaxem import hmmlearn as jhl

K, D, S, T, N_ITER = 8, 4, 100, 1000, 10
CLOCK = time.process_time if "--cpu" in sys.argv else time.perf_counter


def problem():
    rng = np.random.default_rng(0)
    gen = hl.GaussianHMM(K, "full", init_params="")
    A = 0.9 * np.eye(K) + 0.1 * rng.dirichlet(np.ones(K), K)
    gen.startprob_, gen.transmat_ = np.full(K, 1 / K), A / A.sum(1, keepdims=True)
    gen.means_ = rng.normal(0, 3, (K, D))
    gen.covars_ = np.stack([np.eye(D) * rng.uniform(0.5, 1.5) for _ in range(K)])
    X = np.concatenate([gen.sample(T, random_state=s)[0] for s in range(S)])
    start = dict(startprob_=np.full(K, 1 / K), transmat_=np.full((K, K), 1 / K),
                 means_=gen.means_ + rng.normal(0, 1, (K, D)),
                 covars_=np.stack([np.eye(D)] * K))
    return X, [T] * S, start


def estimator(cls, start):
    m = cls(K, "full", n_iter=N_ITER, tol=-np.inf, init_params="")
    for k, v in start.items():
        setattr(m, k, v)
    return m


def timed(f):
    t0 = CLOCK()
    out = f()
    return CLOCK() - t0, out


def main():
    X, lengths, start = problem()
    rows = []
    fitted = {}
    for name, cls in (("jaxem.hmmlearn", jhl.GaussianHMM), ("hmmlearn", hl.GaussianHMM)):
        cold, m = timed(lambda: estimator(cls, start).fit(X, lengths))
        warm, m = timed(lambda: estimator(cls, start).fit(X, lengths))
        sc, _ = timed(lambda: m.score(X, lengths))
        sc2, _ = timed(lambda: m.score(X, lengths))
        fitted[name] = m
        rows.append((name, cold, warm, sc, sc2))
    a, b = fitted["hmmlearn"], fitted["jaxem.hmmlearn"]
    diff = max(np.abs(a.means_ - b.means_).max(), np.abs(a._covars_ - b._covars_).max(),
               np.abs(a.transmat_ - b.transmat_).max())
    clock = "process_time (all threads)" if CLOCK is time.process_time else "perf_counter"
    print(f"GaussianHMM full, K={K}, D={D}, S={S} x T={T}, n_iter={N_ITER}, float64; "
          f"{jax.default_backend()}, jax {jax.__version__}; clock: {clock}\n")
    print("| estimator | fit cold (s) | fit warm (s) | score cold (s) | score warm (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.3f} |")
    ratio = rows[1][2] / rows[0][2]
    print(f"\nwarm fit speed-up of jaxem.hmmlearn: {ratio:.1f}x; largest parameter difference "
          f"after {N_ITER} iterations: {diff:.1e}; total log-likelihood {a.score(X, lengths):.6f} "
          f"(hmmlearn) vs {b.score(X, lengths):.6f}")


if __name__ == "__main__":
    main()
