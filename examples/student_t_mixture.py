"""Generalized EM: a Student-t mixture (location, scale, degrees of freedom learned) on data with outliers.

A Student-t mixture has no closed-form M-step for its degrees of freedom, so we write its complete-data log
density once, in an unconstrained parametrisation, and let `jaxem.GradientMStep` ascend the Q-function with
optax. The heavy tails absorb the outliers; the best Gaussian mixture (highest likelihood over 5
k-means starts) spends one of its three components on them instead and misses a centre. Both fits
use `jaxem.fit_restarts` from the same starts. Saves ``student_t_mixture.png`` (or the path given as
the first argument).

Keeping parameters valid: the optimizer moves every leaf of the params freely, so each constrained
quantity is stored through a bijection onto the real line and mapped back inside ``log_joint``:
  mixing weights π (simplex)  ->  logits,  log π = log_softmax(logits)
  scales s > 0                ->  log_scale, s = exp(log_scale)
  degrees of freedom ν > 0    ->  log_df,    ν = exp(log_df)
  (a full covariance would be Σ = L Lᵀ, with L lower triangular with exp(·) on its diagonal; see the
  `jaxem.MixtureModel` docstring.)
"""

import itertools
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import gammaln

import jaxem


class TParams(NamedTuple):
    logits: jax.Array  # (K,)    π = softmax(logits)
    loc: jax.Array  # (K, D)
    log_scale: jax.Array  # (K, D) per-axis scales s = exp(log_scale)
    log_df: jax.Array  # (K,)    ν = exp(log_df)


def t_log_joint(p: TParams, x: jax.Array) -> jax.Array:
    """[log π_k + log t_ν_k(x | μ_k, diag(s_k²))]_k for one sample x (D,) -> (K,)."""
    D = x.shape[0]
    df = jnp.exp(p.log_df)
    delta = jnp.sum(((x - p.loc) * jnp.exp(-p.log_scale)) ** 2, -1)  # Mahalanobis², (K,)
    log_t = (gammaln((df + D) / 2) - gammaln(df / 2) - 0.5 * D * jnp.log(df * jnp.pi)
             - jnp.sum(p.log_scale, -1) - 0.5 * (df + D) * jnp.log1p(delta / df))
    return jax.nn.log_softmax(p.logits) + log_t


def make_data(seed=0, n=300, n_outliers=30):
    """Three heavy-tailed clusters (t with 3 dof) plus uniform outliers on [-15, 15]²."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    labels = rng.integers(0, 3, n)
    X = centers[labels] + 0.8 * rng.standard_t(3, size=(n, 2))
    X = np.concatenate([X, rng.uniform(-15, 15, size=(n_outliers, 2))])
    return X.astype(np.float32), centers  # float32: what JAX computes in by default


def location_error(est, true):
    """Largest distance between true and estimated locations, over the best matching."""
    return min(np.max(np.linalg.norm(est[list(p)] - true, axis=1))
               for p in itertools.permutations(range(len(true))))


def main(path="student_t_mixture.png", n_init=5):
    X, centers = make_data()
    gmm = jaxem.GaussianMixture(3, covariance_type="diag")
    model = jaxem.MixtureModel(t_log_joint, n_components=3)
    m_step = jaxem.GradientMStep(optax.adam(0.05), num_steps=20, safe=True)

    def t_start(key):  # the Student-t fit starts where the Gaussian one does: k-means, ν = 5
        p0 = gmm.init(key, X)
        return TParams(jnp.log(p0.weights), p0.means, 0.5 * jnp.log(p0.covariances),
                       jnp.full(3, jnp.log(5.0)))

    # Both mixtures from the same n_init k-means starts (one batched call each); the restart
    # with the highest log-likelihood is kept, as scikit-learn's n_init does. A single start can
    # be pulled onto the outliers by k-means itself, whatever the component density.
    key = jax.random.key(1)
    gauss = jaxem.fit_restarts(gmm, key, X, n_init, tol=1e-8, max_iter=500)
    student = jaxem.fit_restarts(model, key, X, n_init, init_fn=t_start, m_step=m_step, tol=1e-8,
                                 max_iter=300)

    errors = {}
    for name, r, loc in [("Gaussian", gauss, gauss.params.means), ("Student-t", student, student.params.loc)]:
        errors[name] = location_error(np.asarray(loc), centers)
        print(f"{name:9s} mean log-lik {float(r.log_likelihood):.4f}  iterations {int(r.n_iter):3d}  "
              f"location error {errors[name]:.3f}  status: {jaxem.describe_status(r.status)}")
    print("Student-t degrees of freedom:", np.round(np.exp(np.asarray(student.params.log_df)), 2))
    # The claim: the best Gaussian fit spends a component on the outliers (its maximum likelihood
    # solution, not a bad start); the heavy tails absorb them and all three centres are found.
    print(f"Student-t locates the three centres {errors['Gaussian'] / errors['Student-t']:.1f}x "
          f"more accurately than the Gaussian mixture (best of {n_init} starts each)")

    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax.scatter(X[:, 0], X[:, 1], s=6, c="0.6", label="data (10% outliers)")
    ax.scatter(*centers.T, marker="*", s=250, c="k", label="true centres")
    ax.scatter(*np.asarray(gauss.params.means).T, marker="x", s=120, c="tab:red", label="Gaussian mixture")
    ax.scatter(*np.asarray(student.params.loc).T, marker="+", s=200, c="tab:blue", label="Student-t mixture")
    ax.set(xlim=(-16, 16), ylim=(-16, 16), title="component locations")
    ax.legend(loc="lower left", fontsize=8)
    for name, r in [("Gaussian (closed-form EM)", gauss), ("Student-t (GradientMStep)", student)]:
        ax2.plot(np.asarray(r.trace), label=name)
    ax2.set(xlabel="EM iteration", ylabel="mean log-likelihood", title="log-likelihood trace (best start)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("saved", path)


if __name__ == "__main__":
    main(*sys.argv[1:])
