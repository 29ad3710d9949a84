"""Probabilistic principal component analysis (Tipping & Bishop 1999), fitted by EM."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from ._linear_gaussian import LatentFactorPosterior as LatentFactorPosterior
from ._linear_gaussian import LinearGaussian


class PPCAParams(NamedTuple):
    """mean (D,), W (D, q), noise_variance () (σ²)."""

    mean: jax.Array
    W: jax.Array
    noise_variance: jax.Array


@dataclasses.dataclass(frozen=True)
class PPCA(LinearGaussian):
    """Probabilistic PCA: x = W z + μ + ε, z ~ N(0, I_q), ε ~ N(0, σ² I_D).

    With M = WᵀW + σ² I_q (q x q, Cholesky-factored; Tipping & Bishop 1999, eqs. (25)-(29)):
      E-step:  E[z_n] = M⁻¹ Wᵀ (x_n - μ),  Cov[z_n | x_n] = σ² M⁻¹,
               E[z_n z_nᵀ] = σ² M⁻¹ + E[z_n] E[z_n]ᵀ;
      M-step:  W = [Σ_n w_n (x_n - μ) E[z_n]ᵀ] [Σ_n w_n E[z_n z_nᵀ]]⁻¹,
               σ² = 1/(D Σ_n w_n) Σ_n w_n (||x_n - μ||² - 2 E[z_n]ᵀ Wᵀ (x_n - μ) + tr(E[z_n z_nᵀ] WᵀW)),
    (μ is estimated jointly with W; it stays at the weighted mean once it is there, see
    ``_linear_gaussian``). log p(x) uses |C| = σ^{2(D-q)} |M| and C⁻¹ = (I - W M⁻¹ Wᵀ)/σ²
    for C = WWᵀ + σ² I: the cost is O(N D q) and no D x D matrix is formed. The fixed points are the
    ML solution W = U_q (Λ_q - σ² I)^{1/2} R, σ² = mean of the D - q discarded eigenvalues of the
    (weighted, ddof=0) sample covariance.

    The posterior is a `LatentFactorPosterior` (means (N, q), shared covariance (q, q)).
    The noise variance is floored at 10·eps times the mean feature variance. `jaxem.fit` requires at
    least ``n_components`` rows with positive weight and `init` at least 2; with fewer than q + 2
    rows the ML σ² is 0 and the floor is what keeps the fit finite.

    Args:
      n_components: q, the latent dimension (1 <= q < D).
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
      >>> model = jaxem.PPCA(n_components=2)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X, tol=1e-6)
      >>> Z = model.transform(result.params, X)  # (200, 2) posterior means
    """

    n_components: int
    chunk_size: int | None = None
    missing: str = "error"
    isotropic = True

    def _param_shapes(self, params) -> dict:
        D = params.mean.shape[-1]
        return {"mean": (D,), "W": (D, self.n_components), "noise_variance": ()}

    def _make(self, mean, W, psi):
        return PPCAParams(mean, W, psi)

    def _check_rank(self, D):
        if self.n_components >= D:
            raise ValueError(
                f"PPCA needs n_components < n_features, got n_components={self.n_components} for "
                f"{D} features (the ML noise variance would be 0); use n_components <= {D - 1}."
            )
