"""Time per EM iteration of a mixture of factor analysers against Gaussian mixtures with the same K.

MFA's iteration is O(N K D q) (q x q factorisations, no D x D matrix); a full-covariance Gaussian
mixture's is O(N K D²) plus K D x D Cholesky factors. Compile time is excluded (one warm-up call of
the same jitted fit), median of 3 runs of a fixed number of iterations (tol=0), float32 and
float64. Usage: ``python benchmarks/bench_mfa.py [N] [D] [K] [q]`` (default 20000 64 10 4).
"""

import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402

N, D, K, Q = (int(a) for a in (sys.argv[1:] + ["20000", "64", "10", "4"][len(sys.argv) - 1:]))
ITERS = 20
rng = np.random.default_rng(0)
z = rng.integers(0, K, N)
W = rng.normal(size=(K, D, Q))
X64 = (rng.normal(size=(K, D))[z] * 4 + np.einsum("ndq,nq->nd", W[z], rng.normal(size=(N, Q)))
       + rng.normal(size=(N, D)) * 0.5)

models = [("MixtureOfFactorAnalyzers", jaxem.MixtureOfFactorAnalyzers(K, Q)),
          ("MixturePPCA", jaxem.MixturePPCA(K, Q)),
          ("GaussianMixture diag", jaxem.GaussianMixture(K, "diag")),
          ("GaussianMixture full", jaxem.GaussianMixture(K, "full"))]
print(f"N={N} D={D} K={K} q={Q}, {ITERS} EM iterations, compile excluded, median of 3")
print(f"| model | dtype | ms / iteration | parameters |")
print("|---|---|---|---|")
for dtype in (np.float32, np.float64):
    X = X64.astype(dtype)
    for name, model in models:
        p = model.init(jax.random.key(0), X)
        f = jax.jit(lambda p, x, m=model: jaxem.fit(m, p, x, max_iter=ITERS, tol=0.0),
                    compiler_options=dict(jaxem.COMPILER_OPTIONS))
        jax.block_until_ready(f(p, X))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(f(p, X))
            times.append(time.perf_counter() - t)
        ms = 1e3 * float(np.median(times)) / ITERS
        print(f"| {name} | {np.dtype(dtype).name} | {ms:.2f} | {model.n_parameters(p)} |",
              flush=True)
