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
    """
    return model.q_function(params, posterior, X, weights) + model.posterior_entropy(
        posterior, weights
    )
