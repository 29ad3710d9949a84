"""The evidence lower bound L(q, θ) = E_q[log p(X, Z | θ)] + H[q] = Q + entropy."""

from __future__ import annotations


def elbo(model, params, posterior, X, weights=None):
    """ELBO of ``posterior`` at ``params``: Q(params; q) + Σ_n w_n H[q(z_n)].

    Equals ``model.log_likelihood(params, X, weights)`` when ``posterior`` is the exact E-step at
    ``params`` (the KL term vanishes), and is below it for any other q.

    Args:
      model: a jaxem model.
      params: parameters θ.
      posterior: q(Z), as returned by ``model.e_step``.
      X: ``(N, D)`` data.
      weights: ``(N,)`` sample weights or None.

    Returns:
      A scalar: the weighted sum over samples.

    Example:
      >>> import jax, jax.numpy as jnp, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (100, 2))
      >>> model = jaxem.GaussianMixture(2)
      >>> params = model.init(jax.random.key(1), X)
      >>> posterior, log_lik = model.e_step(params, X)   # the exact posterior at params
      >>> bool(jnp.isclose(jaxem.elbo(model, params, posterior, X), log_lik, rtol=1e-5))
      True
      >>> flat = jnp.full_like(posterior, 0.5)            # any other q: a lower bound
      >>> bool(jaxem.elbo(model, params, flat, X) < log_lik)
      True
    """
    return model.q_function(params, posterior, X, weights) + model.posterior_entropy(
        posterior, weights
    )
