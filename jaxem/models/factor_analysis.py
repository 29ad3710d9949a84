"""Factor analysis (Rubin & Thayer 1982) fitted by EM: PPCA with a diagonal noise covariance."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from ._linear_gaussian import LinearGaussian


class FactorAnalysisParams(NamedTuple):
    """mean (D,), W (D, q), noise_variance (D,) (the diagonal of Ψ)."""

    mean: jax.Array
    W: jax.Array
    noise_variance: jax.Array


@dataclasses.dataclass(frozen=True)
class FactorAnalysis(LinearGaussian):
    """Factor analysis: x = W z + μ + ε, z ~ N(0, I_q), ε ~ N(0, Ψ), Ψ = diag(ψ).

    With G = I_q + Wᵀ Ψ⁻¹ W (q x q, Cholesky-factored; Rubin & Thayer 1982; Bishop 2006, §12.2.4):
      E-step:  Cov[z_n | x_n] = G⁻¹,  E[z_n] = G⁻¹ Wᵀ Ψ⁻¹ (x_n - μ);
      M-step:  W = [Σ_n w_n (x_n - μ) E[z_n]ᵀ] [Σ_n w_n E[z_n z_nᵀ]]⁻¹,
               ψ = diag(S - W (1/Σw) Σ_n w_n E[z_n] (x_n - μ)ᵀ)   (S the weighted sample covariance),
    (μ estimated jointly with W, see ``_linear_gaussian``). log p(x) uses
    |C| = |Ψ| |G| and C⁻¹ = Ψ⁻¹ - Ψ⁻¹ W G⁻¹ Wᵀ Ψ⁻¹ for C = WWᵀ + Ψ: O(N D q), no D x D matrix.
    Each ψ_d is floored at 10·eps times the mean feature variance (Heywood cases stay finite).
    The posterior is a `LatentFactorPosterior` (means (N, q), shared covariance (q, q)).
    `jaxem.fit` requires at least ``n_components`` rows with positive weight and `init` at least 2.

    Args:
      n_components: q, the number of factors (1 <= q <= D).
      chunk_size: rows per block of the streamed E/M pass (None: automatic).
      missing: "error" (NaN in X is invalid input) or "marginalize": NaN entries are missing
        values integrated out exactly (Ghahramani & Jordan 1994; ``_latent_missing``): rows are
        scored by their observed entries' marginal and E[x_m | x_o], E[x_m zᵀ | x_o] fill the
        statistics; a row with nothing observed has weight 0. `impute` fills NaN with
        E[x_m | x_o]; `transform` gives E[z | x_o]. `e_step`, `q_function` and `m_step` need
        complete data.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 5))
      >>> model = jaxem.FactorAnalysis(n_components=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X, tol=1e-6)
    """

    n_components: int
    chunk_size: int | None = None
    missing: str = "error"
    isotropic = False

    def _param_shapes(self, params) -> dict:
        D = params.mean.shape[-1]
        return {"mean": (D,), "W": (D, self.n_components), "noise_variance": (D,)}

    def _make(self, mean, W, psi):
        return FactorAnalysisParams(mean, W, psi)

    def _check_rank(self, D):
        if self.n_components > D:
            raise ValueError(
                f"FactorAnalysis needs n_components <= n_features, got n_components="
                f"{self.n_components} for {D} features; use n_components <= {D}."
            )
