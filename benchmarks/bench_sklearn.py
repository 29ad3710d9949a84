"""jaxem vs scikit-learn GaussianMixture: time per EM iteration and a full fit, same data, same run.

    python benchmarks/bench_sklearn.py
"""

import time
import warnings

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402


def timeit(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(N=20_000, D=8, K=8, iters=20):
    from sklearn.mixture import GaussianMixture as SK

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(N, D)) + rng.integers(0, K, N)[:, None] * 2.0).astype(np.float64)
    print(f"N={N} D={D} K={K}, {iters} EM iterations (tol=0), float64, {jax.devices()[0]}")
    print(f"{'covariance':<11}{'sklearn s':>11}{'jaxem s':>10}{'speed-up':>10}")
    for ct in ["full", "diag", "spherical", "tied"]:
        model = jaxem.GaussianMixture(K, ct)
        p0 = model.init(jax.random.key(0), X)
        cov = np.asarray(p0.covariances)
        prec = np.linalg.inv(cov) if ct in ("full", "tied") else 1 / cov
        sk = SK(K, covariance_type=ct, weights_init=np.asarray(p0.weights),
                means_init=np.asarray(p0.means), precisions_init=prec, max_iter=iters, tol=0)
        fit = jax.jit(lambda p, x: jaxem.fit(model, p, x, max_iter=iters, tol=0))
        jax.block_until_ready(fit(p0, X))  # compile
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_sk = timeit(lambda: sk.fit(X))
        t_jx = timeit(lambda: jax.block_until_ready(fit(p0, X)))
        print(f"{ct:<11}{t_sk:>11.3f}{t_jx:>10.3f}{t_sk / t_jx:>9.1f}x")


if __name__ == "__main__":
    main()
