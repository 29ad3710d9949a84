"""The score ∇_θ log p(X | θ) through the E-step: Fisher's identity."""

from __future__ import annotations

import jax

from ._validate import as_data


def fisher_score(model, params, X, weights=None):
    """Gradient of the weighted log-likelihood, computed through Q with the posterior held fixed.

    Fisher's identity (Fisher 1925; Louis 1982, eq. 3.1; McLachlan & Krishnan 2008, §3.8):

        ∇_θ log p(X | θ) |_{θ=θ_old} = ∇_θ Q(θ, θ_old) |_{θ=θ_old}
                                     = Σ_n w_n E_{p(z_n | x_n, θ_old)}[∇_θ log p(x_n, z_n | θ)],

    because log p(X|θ) = Q(θ, θ_old) + H(θ, θ_old) and the entropy-like term H is stationary at θ_old
    (Gibbs' inequality). The posterior from ``model.e_step`` is wrapped in `jax.lax.stop_gradient`, and
    `jax.grad` of ``model.q_function`` gives the exact score for any model that has an E-step — the
    gradient a gradient-based fit or a Fisher-scoring step needs, at the cost of one E-step and one
    backward pass through the complete-data log density.

    Args:
      model: a jaxem model (e.g. `jaxem.GaussianMixture`, `jaxem.MixtureModel`).
      params: θ_old, a pytree.
      X: ``(N, D)`` data.
      weights: ``(N,)`` non-negative sample weights, or None for ones.

    Returns:
      A pytree like ``params``: ∇_θ Σ_n w_n log p(x_n | θ) at ``params``.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (100, 2))
      >>> model = jaxem.GaussianMixture(2)
      >>> params = model.init(jax.random.key(1), X)
      >>> score = jaxem.fisher_score(model, params, X)  # == jax.grad(model.log_likelihood)(params, X)
    """
    X, w = as_data(X, weights, model.n_features(params))
    posterior, _ = model.e_step(params, X, w)
    posterior = jax.lax.stop_gradient(posterior)
    return jax.grad(lambda p: model.q_function(p, posterior, X, w))(params)
