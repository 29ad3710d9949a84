"""n_init=10 restarts: one vmapped batch (jaxem.fit_restarts) vs 10 sequential jitted fits.

    python benchmarks/bench_restarts.py

Same data, same 10 starts, same compiled single fit for the sequential loop; both timed after a
warm-up call (compilation excluded) with block_until_ready, best of 5. scikit-learn's n_init=10
(sequential, its own k-means starts) is printed for reference.
"""

import os
import platform
import time
import warnings

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402


def best_of(fn, repeat=5):
    jax.block_until_ready(fn())  # warm-up / compile
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def main(D=3, K=4, n_init=10, max_iter=100, tol=1e-3):
    print(f"D={D} K={K} n_init={n_init} max_iter={max_iter} tol={tol}, float64, "
          f"{jax.devices()[0]}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print("iters: sum of the members' n_iter (sequential work) / n_init x max n_iter (batched work)")
    print(f"{'N':>6} {'covariance':<11}{'batched s':>11}{'sequential s':>14}{'seq/batch':>10}"
          f"{'sklearn s':>11}{'iters':>12}")
    for N in (100, 500, 2000):
        for ct in ["full", "diag"]:
            run(N, D, K, ct, n_init, max_iter, tol)


def run(N, D, K, ct, n_init, max_iter, tol):
    from sklearn.mixture import GaussianMixture as SK

    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)) + rng.integers(0, K, N)[:, None] * 2.5
    if True:
        model = jaxem.GaussianMixture(K, ct)
        key = jax.random.key(0)
        keys = jax.random.split(key, n_init)
        starts = jax.jit(jax.vmap(lambda k: model.init(k, X)))(keys)
        batched = jax.jit(lambda P: jax.vmap(
            lambda p: jaxem.fit(model, p, X, max_iter=max_iter, tol=tol))(P))
        single = jax.jit(lambda p: jaxem.fit(model, p, X, max_iter=max_iter, tol=tol))
        starts_list = [jax.tree_util.tree_map(lambda a: a[j], starts) for j in range(n_init)]

        def sequential():
            return [single(p) for p in starts_list]

        t_b = best_of(lambda: jaxem._restarts.best_restart(batched(starts)))
        t_s = best_of(sequential)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            SK(K, covariance_type=ct, n_init=n_init, max_iter=max_iter, tol=tol,
               random_state=0).fit(X)
            t_sk = time.perf_counter() - t0
        n = np.asarray(batched(starts).n_iter)
        print(f"{N:>6} {ct:<11}{t_b:>11.4f}{t_s:>14.4f}{t_s / t_b:>9.2f}x{t_sk:>11.4f}"
              f"{n.sum():>6}/{n_init * n.max():<5}")


def estimator_level(D=3, K=4, n_init=10):
    """What a user runs: the estimator's n_init=10 (one batch) vs 10 sequential n_init=1 fits."""
    from jaxem.sklearn import GaussianMixture as JG

    print(f"\nEstimator level (jaxem.sklearn, k-means starts included, compile excluded), K={K} D={D}")
    print(f"{'N':>6}{'n_init=10 batch s':>19}{'10 x n_init=1 s':>17}{'ratio':>8}{'same best':>11}")
    rng = np.random.default_rng(0)
    for N in (100, 500, 2000):
        X = rng.normal(size=(N, D)) + rng.integers(0, K, N)[:, None] * 2.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            JG(K, n_init=n_init, random_state=0).fit(X)  # compile both programs
            JG(K, n_init=1, random_state=0).fit(X)
            batch = min(_timed(lambda: JG(K, n_init=n_init, random_state=0).fit(X)) for _ in range(3))
            seq = min(_timed(lambda: [JG(K, n_init=1, random_state=i).fit(X) for i in range(n_init)])
                      for _ in range(3))
            best_b = JG(K, n_init=n_init, random_state=0).fit(X).score(X)
            best_s = max(JG(K, n_init=1, random_state=i).fit(X).score(X) for i in range(n_init))
        print(f"{N:>6}{batch:>19.4f}{seq:>17.4f}{seq / batch:>7.1f}x{str(bool(best_b >= best_s - 1e-9)):>11}")


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
    estimator_level()
