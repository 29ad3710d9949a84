"""Mixtures of probabilistic principal component analysers (Tipping & Bishop 1999), fitted by EM."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from ._mixture_linear_gaussian import MixtureLinearGaussian


class MixturePPCAParams(NamedTuple):
    """weights (K,), means (K, D), loadings (K, D, q), noise_variance (K,) (the σ_k²)."""

    weights: jax.Array
    means: jax.Array
    loadings: jax.Array
    noise_variance: jax.Array


@dataclasses.dataclass(frozen=True)
class MixturePPCA(MixtureLinearGaussian):
    """Mixture of probabilistic PCA models: component k (prior π_k) generates x = W_k z + μ_k + ε,
    z ~ N(0, I_q), ε ~ N(0, σ_k² I), so x ~ Σ_k π_k N(μ_k, W_k W_kᵀ + σ_k² I).

    EM (Tipping & Bishop 1999, "Mixtures of probabilistic principal component analyzers", Neural
    Computation 11(2), §3 and Appendix C), with M_k = W_kᵀ W_k + σ_k² I (q x q, Cholesky-factored):
      E-step:  R_nk ∝ π_k N(x_n | μ_k, W_k W_kᵀ + σ_k² I),  E[z | x_n, k] = M_k⁻¹ W_kᵀ (x_n - μ_k),
               Cov[z | x_n, k] = σ_k² M_k⁻¹;
      M-step:  [W_k μ_k] = (Σ_n R_nk x_n E[z̃ᵀ]) (Σ_n R_nk E[z̃ z̃ᵀ])⁻¹,  z̃ = [z; 1],
               σ_k² = tr(Σ_n R_nk (x_n - [W_k μ_k] E[z̃]) x_nᵀ) / (D N_k),   π_k = N_k / N:
    the EM algorithm with both the component and z latent (μ_k jointly with W_k, as in Ghahramani &
    Hinton's factor-analyser M-step with Ψ_k = σ_k² I). Tipping & Bishop's Appendix C updates
    π_k, μ_k first and then W_k, σ_k² with the new μ_k (a two-stage scheme); both have the same
    fixed points. With one component this is `PPCA` (same iterates from the same start). log p(x)
    uses the determinant lemma and Woodbury's identity: O(N K D q) per iteration, no D x D matrix.
    See ``_mixture_linear_gaussian`` for the statistics (`MixtureFactorStatistics`), the floors on
    σ_k² and N_k and empty components.

    Args:
      n_components: K, the number of PPCA components.
      n_factors: q, the latent dimension of each (1 <= q < D).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (300, 6))
      >>> model = jaxem.MixturePPCA(n_components=2, n_factors=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
      >>> labels = model.predict(result.params, X)
    """

    n_components: int
    n_factors: int
    chunk_size: int | None = None
    isotropic = True

    def _make(self, weights, means, loadings, psi):
        return MixturePPCAParams(weights, means, loadings, psi)
