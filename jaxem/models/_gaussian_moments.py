"""The moment route of full-covariance Gaussian mixtures' statistics (`GaussianMixture` with
``statistics="moments"`` or ``"auto"``).

Full covariances in float64 take a faster route ("moments"): with the data centred at
c = Σ_k π_k μ_k and the features φ(x) = [vech(x xᵀ), x, 1] (T = D(D+1)/2 + D + 1 of them), the
Mahalanobis term is linear in φ,
  ||y_nk||² = xᵀΛ_k x - 2 xᵀΛ_k μ_k + μ_kᵀΛ_k μ_k = φ(x_n) · a_k,   Λ_k = P_k P_kᵀ = Σ_k⁻¹,
and so are the M-step statistics, Σ_n w_n r_nk φ(x_n) = [vech S_xx,k, s_k, N_k]. One EM iteration
is two well-shaped GEMMs, (n, T) @ (T, K) and (K, n) @ (n, T), with half the flops of the residual
route. Raw moments lose about log10(spread of the data / spread of a component)² digits, harmless
in float64 (eps·|x - c|² ≪ reg_covar) but not always in float32.

float32 full covariances take the moment route only where it is measured to be safe ("guarded"):
each iteration computes from the current parameters the bound
  β = max_k eps·(|μ_k - c|² + tr Σ_k)·||Σ_k⁻¹||_∞
(|x - c|² of a row of component k is about |μ_k - c|² + tr Σ_k; ℓ_nk and the M-step's Σ_k are
differences of such terms, and ||Σ_k⁻¹||_∞ ≥ 1/λ_min(Σ_k) puts their error in the component's own
units). With β ≤ `MOMENT_TOLERANCE` (3e-4) the moment route runs, else the residual route: one
`jax.lax.cond` on a scalar, so a fit never recompiles (under `jax.vmap` with batched parameters the
cond is a select and both routes run). Measured, the moment route's error in the means and
covariances, in units of the component (|L⁻¹ δμ|, |L⁻¹ δΣ L⁻ᵀ|), is 0.01β to 2β: at most ~6e-4
where the residual route's is ~1e-5 (tests/test_moments_float32.py); the same order as what float32
data lose to their own rounding a few hundred widths from the origin. Well-separated components
(|μ_k - c| above ~50 widths for D = 16) or nearly singular ones fall back to the residuals; pass
statistics="residuals" for the residual route's accuracy everywhere.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .._labels import clamp, labelled_sum
from .._where import where
from ._base import weighted_posterior

# Largest `error_bound` β at which float32 takes the moment route (module docstring): the
# measured error is at most ~2β in the components' units. The benchmark's 16 unit-width components
# 3·N(0, I) apart in D = 16 have β ≈ 7e-5 once fitted.
MOMENT_TOLERANCE = 3e-4


def features(xc):
    """φ(x) = vech(x̃ x̃ᵀ) of x̃ = [x, 1] for the rows of ``xc (n, D)``: the upper triangle row by
    row (`np.triu_indices(D + 1)` order), so [x_i x_j (i <= j), ..., x_i, ..., 1]. One
    concatenation of D + 1 row-slices: XLA's CPU backend gathers the triangle's columns, or
    concatenates more pieces, measurably more slowly."""
    xa = jnp.concatenate([xc, jnp.ones_like(xc[:, :1])], 1)
    return jnp.concatenate([xa[:, i:i + 1] * xa[:, i:] for i in range(xa.shape[1])], 1)


def route(model, dtype) -> str | None:
    """Which moment route a fused iteration of ``model`` takes: "moments" (float64: always),
    "guarded" (float32: the moment route when `error_bound` allows it, else the residuals) or
    None (the residual route)."""
    if model.statistics == "residuals" or model.covariance_type != "full":
        return None
    return "moments" if jnp.dtype(dtype).itemsize >= 8 else "guarded"  # data: >= float32


def error_bound(model, params, g=None):
    """β = max_k eps·(|μ_k - c|² + tr Σ_k)·||Σ_k⁻¹||_∞ over the components that are on (weight
    > 0): the moment route's cancellation in units of each component's smallest variance
    (module docstring; ``g``: the parameters' `_Geometry`, if already computed). The raw moments
    about c of a row near μ_k are of size |x - c|² ≈ |μ_k - c|² + tr Σ_k; the E-step's ℓ_nk and
    the M-step's Σ_k are their differences, so each carries an error of about eps times that, and
    1/λ_min(Σ_k) = λ_max(Σ_k⁻¹) ≤ ||Σ_k⁻¹||_∞. Measured errors: 0.01β to 2β
    (tests/test_moments_float32.py)."""
    g = model._geometry(params) if g is None else g
    eps = jnp.finfo(params.means.dtype).eps
    c = params.weights @ params.means
    m2 = jnp.sum(jnp.square(params.means - c), 1)
    # tr Σ_k as a masked sum (jnp.trace / jnp.diagonal would gather with the closed-over
    # params' sharding, which a shard_map's manual axes refuse)
    D = params.means.shape[-1]
    tr_cov = jnp.sum(params.covariances * jnp.eye(D, dtype=params.covariances.dtype), (1, 2))
    Lam = g.P @ jnp.swapaxes(g.P, -1, -2)
    lam_max = jnp.max(jnp.sum(jnp.abs(Lam), 2), 1)  # ||Λ_k||_∞ >= λ_max(Λ_k)
    beta = eps * (m2 + tr_cov) * lam_max
    # NaN (a broken Cholesky) fails the test below: the residual route then reports it.
    return jnp.max(where(params.weights > 0, beta, 0.0))


def statistics(model, params, X, weights, acc, total, labels=None, g=None):
    """``model._statistics`` (a `GaussianMixtureStatistics` about the means, in dtype ``acc``)
    by raw moments about c = Σ π_k μ_k: ℓ_nk = const_k - ½ φ(x_n)·a_k and Σ_n w_n r_nk φ(x_n) in
    one GEMM each, then shifted to the means (``model._shift``). In float32 only behind the guard
    of ``model._statistics`` (`error_bound`). ``total``: Σ_n w_n; ``labels`` as in
    `jaxem._labels.labelled_sum`."""
    from .gaussian_mixture import GaussianMixtureStatistics

    g = model._geometry(params) if g is None else g
    K, D = params.means.shape
    iu, ju = np.triu_indices(D + 1)  # φ(x) = vech(x̃ x̃ᵀ), x̃ = [x - c, 1]: T of them
    c = params.weights @ params.means
    m = params.means - c
    Lam = g.P @ jnp.swapaxes(g.P, -1, -2)  # Λ_k = P_k P_kᵀ = Σ_k⁻¹
    b = jnp.einsum("kde,ke->kd", Lam, m)
    # ||y_nk||² = x̃ᵀ A_k x̃ with A_k = [[Λ_k, -b_k], [-b_kᵀ, m_kᵀ b_k]] = φ(x)·a_k
    A = jnp.concatenate([jnp.concatenate([Lam, -b[:, :, None]], 2),
                         jnp.concatenate([-b, jnp.sum(m * b, 1, keepdims=True)], 1)[:, None]],
                        1)
    a = (A[:, iu, ju] * where(iu == ju, 1.0, 2.0).astype(X.dtype)).T  # (T, K)
    const = g.log_pi + g.log_det - 0.5 * D * math.log(2 * math.pi)

    def block(x, lb, wb):
        phi = features(x - c)
        rw, ll = weighted_posterior(clamp(const - 0.5 * (phi @ a), lb), wb)
        return (rw.T @ phi).astype(acc), ll.astype(acc)

    # Blocks of GEMMs only: twice the default working set per block measured fastest here,
    # in bytes: float32 blocks hold twice the rows (N = 100k, D = K = 16: 6,656 rows instead
    # of 3,328, 21.2 -> 15.8 ms per pass; D = 8: 57 -> 53 ms at N = 1M), at most 2^15 rows
    # (D = 4: 74,752 rows were 10% slower than 37,376).
    width = len(iu) // 2 if X.dtype.itemsize >= 8 else max(len(iu) // 4, 8)
    M, ll = labelled_sum(block, X, weights, labels, model.chunk_size, width)
    sym = np.zeros((D + 1, D + 1), int)  # column of M holding x̃_i x̃_j
    sym[iu, ju] = sym[ju, iu] = np.arange(len(iu))
    st = GaussianMixtureStatistics(M[:, sym[D, D]], M[:, sym[:D, D]], M[:, sym[:D, :D]], ll,
                                   total)
    return model._shift(st, (c - params.means).astype(acc))  # about c -> about the means
