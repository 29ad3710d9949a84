"""Memory and time of the backward pass through jaxem.fit: implicit vs unrolled, 10 vs 500 iterations.

Memory is XLA's compiled temporary-buffer size for the jitted gradient (deterministic), and the process
peak RSS growth around the call; time is the best of 3 warm runs.

    python benchmarks/bench_adjoint_memory.py
"""

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402


def main(N=2000, D=4, K=4):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)) + rng.integers(0, K, N)[:, None] * 3.0
    model = jaxem.GaussianMixture(K, "full")
    p0 = model.init(jax.random.key(0), X)
    print(f"grad of sum(means) w.r.t. X through jaxem.fit, N={N} D={D} K={K}, tol=0, float64")
    print(f"{'adjoint':<10}{'iters':>7}{'XLA temp MB':>13}{'time s':>9}")
    for adjoint in ("implicit", "unrolled"):
        for iters in (10, 500):
            loss = lambda X: jnp.sum(jaxem.fit(model, p0, X, tol=0, max_iter=iters,
                                               adjoint=adjoint).params.means)
            g = jax.jit(jax.grad(loss))
            compiled = g.lower(X).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
            jax.block_until_ready(g(X))
            best = min(_time(lambda: jax.block_until_ready(g(X))) for _ in range(3))
            print(f"{adjoint:<10}{iters:>7}{temp:>13.2f}{best:>9.3f}")
    print(f"(process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
