"""Quick start: fit a 3-component Gaussian mixture and print what came out."""

import jax
import jax.numpy as jnp

import jaxem

key = jax.random.key(0)
centers = jnp.array([[-4.0, 0.0], [0.0, 3.0], [4.0, 0.0]])
X = jnp.concatenate([c + jax.random.normal(k, (300, 2)) for c, k in
                     zip(centers, jax.random.split(key, 3))])

model = jaxem.GaussianMixture(n_components=3, covariance_type="full")
params = model.init(jax.random.key(1), X)           # k-means++ / k-means start
result = jax.jit(lambda p, X: jaxem.fit(model, p, X, tol=1e-4))(params, X)

print(f"converged={bool(result.converged)} after {int(result.n_iter)} iterations, "
      f"status: {jaxem.describe_status(result.status)}")
print(f"mean log-likelihood: {float(result.log_likelihood):.4f}")
print("weights:", jnp.round(result.params.weights, 3))
print("means:\n", jnp.round(result.params.means[jnp.argsort(result.params.means[:, 0])], 2))
print("BIC:", float(model.bic(result.params, X)))
