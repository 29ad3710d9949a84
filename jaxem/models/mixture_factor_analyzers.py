"""Mixtures of factor analysers (Ghahramani & Hinton 1996), fitted by EM."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from ._mixture_linear_gaussian import MixtureLinearGaussian


class MixtureOfFactorAnalyzersParams(NamedTuple):
    """weights (K,), means (K, D), loadings (K, D, q), noise_variance (K, D) (the diagonals of
    the Ψ_k)."""

    weights: jax.Array
    means: jax.Array
    loadings: jax.Array
    noise_variance: jax.Array


@dataclasses.dataclass(frozen=True)
class MixtureOfFactorAnalyzers(MixtureLinearGaussian):
    """Mixture of factor analysers: component k (prior π_k) generates x = W_k z + μ_k + ε,
    z ~ N(0, I_q), ε ~ N(0, Ψ_k), Ψ_k = diag(ψ_k): x ~ Σ_k π_k N(μ_k, W_k W_kᵀ + Ψ_k), a Gaussian
    mixture whose D x D covariances have q(D - (q-1)/2) + D parameters instead of D(D+1)/2.

    EM (Ghahramani & Hinton 1996, "The EM algorithm for mixtures of factor analyzers", CRG-TR-96-1),
    with G_k = I + W_kᵀ Ψ_k⁻¹ W_k (q x q, Cholesky-factored):
      E-step:  h_nk ∝ π_k N(x_n | μ_k, W_k W_kᵀ + Ψ_k),
               E[z | x_n, k] = G_k⁻¹ W_kᵀ Ψ_k⁻¹ (x_n - μ_k),
               Cov[z | x_n, k] = G_k⁻¹;
      M-step:  [W_k μ_k] = (Σ_n h_nk x_n E[z̃ᵀ]) (Σ_n h_nk E[z̃ z̃ᵀ])⁻¹,  z̃ = [z; 1],
               Ψ_k = diag(Σ_n h_nk (x_n - [W_k μ_k] E[z̃]) x_nᵀ) / N_k,   π_k = N_k / N.
    Ghahramani & Hinton share one Ψ among the components; here each component has its own
    diagonal Ψ_k (the common modern choice: McLachlan & Peel 2000, §8.7), whose update is
    theirs with the sum over components dropped. With one component this is `FactorAnalysis`
    (same iterates from the same start). log p(x) uses the determinant lemma and Woodbury's
    identity: O(N K D q) per iteration, no D x D matrix. See ``_mixture_linear_gaussian`` for the statistics
    (`MixtureFactorStatistics`), the floors on ψ and N_k and empty components.

    The posterior is a `MixtureFactorPosterior` (responsibilities (N, K), means (N, K, q), shared
    covariances (K, q, q)); `transform` gives the per-component latent means E[z | x, k] (N, K, q).

    Args:
      n_components: K, the number of factor analysers.
      n_factors: q, the latent dimension of each (1 <= q <= D).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (300, 6))
      >>> model = jaxem.MixtureOfFactorAnalyzers(n_components=2, n_factors=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
      >>> Z = model.transform(result.params, X)  # (300, 2, 2): E[z | x, k]
    """

    n_components: int
    n_factors: int
    chunk_size: int | None = None
    isotropic = False

    def _make(self, weights, means, loadings, psi):
        return MixtureOfFactorAnalyzersParams(weights, means, loadings, psi)
