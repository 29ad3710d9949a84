"""Gaussian emissions: `GaussianHMM` (the M-step is `GaussianMixture`'s, on γ-weighted frames)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ... import _prior
from ..._init import init_from_responsibilities
from ..._where import cond, where
from ..gaussian_mixture import GaussianMixture, GaussianMixtureParams, GaussianMixtureStatistics
from ._base import HiddenMarkovModel


class GaussianHMMParams(NamedTuple):
    """initial_probs (K,), transition_matrix (K, K), means (K, D), covariances (GaussianMixture's
    layouts: full (K, D, D), diag (K, D), spherical (K,), tied (D, D))."""

    initial_probs: jax.Array
    transition_matrix: jax.Array
    means: jax.Array
    covariances: jax.Array


@dataclasses.dataclass(frozen=True)
class GaussianHMM(HiddenMarkovModel):
    """An HMM with Gaussian emissions p(x_t | z_t = k) = N(x_t | μ_k, Σ_k), fitted by Baum-Welch.

    The emission statistics are `GaussianMixture`'s (about the current means, so float32 stays
    accurate) with the smoothed marginals w_s γ_{s,t}(k) as responsibilities, and the emission
    M-step is `GaussianMixture`'s (``reg_covar`` added to every covariance's diagonal, an empty
    state keeps its mean and covariance with ``Status.EMPTY_COMPONENT``).

    Args:
      n_states: K.
      covariance_type: "full", "diag", "spherical" or "tied".
      reg_covar: added to the diagonal of the covariances at each M-step.
      inference: "sequential" (`lax.scan`), "parallel" (`lax.associative_scan`) or "auto"
        (sequential on CPU, parallel on GPU/TPU for T >= 256).
      prior: None (maximum likelihood), a `jaxem.HMMPrior` (MAP Baum-Welch: Dirichlet rows on π
        and A, and the emission prior (a `jaxem.GaussianPrior`, Fraley & Raftery 2007); `jaxem.fit` then reports the log posterior), or
        "default" (resolved by `jaxem.fit` with `jaxem.default_prior`).

    Example:
      >>> import jax, jaxem
      >>> model = jaxem.GaussianHMM(n_states=2, covariance_type="diag")
      >>> X = jax.random.normal(jax.random.key(0), (3, 50, 2))   # 3 sequences of 50 steps
      >>> params = model.init(jax.random.key(1), X)
      >>> result = jaxem.fit(model, params, X, lengths=jax.numpy.array([50, 40, 30]))
    """

    n_states: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    inference: str = "auto"
    prior: Any = None

    def __post_init__(self):
        self._check_config()
        _prior.check_prior(self, _prior.HMMPrior)
        if isinstance(self.prior, _prior.HMMPrior) and not isinstance(
                self.prior.emission, (type(None), _prior.GaussianPrior)):
            raise ValueError("GaussianHMM's HMMPrior emission must be None or a "
                             "jaxem.GaussianPrior.")
        self._gmm  # validates covariance_type and reg_covar

    @property
    def _gmm(self) -> GaussianMixture:
        p = self.prior
        emission = p.emission if isinstance(p, _prior.HMMPrior) else None
        if emission is not None:  # the states' weights are not a mixture's: no Dirichlet
            emission = dataclasses.replace(emission, weights_concentration=1.0)
        return GaussianMixture(self.n_states, self.covariance_type, self.reg_covar,
                               statistics="residuals", prior=emission)

    def _emission_log_prior(self, prior, params):
        return _prior.gaussian_log_kernel(prior, self.covariance_type, params.means,
                                          params.covariances)

    def n_features(self, params) -> int:
        return params.means.shape[-1]

    def _mixture_params(self, params):
        K = self.n_states
        return GaussianMixtureParams(jnp.ones(K, params.means.dtype), params.means,
                                     params.covariances)

    def _log_emission_fn(self, params):
        return self._gmm._log_joint_fn(self._mixture_params(params))  # log 1 + log N(x | μ_k, Σ_k)

    def _moments(self, frames):
        """float64 moment features of the frames, ``(P + D + 1, N)``: φ(x) = [u_i u_j (i <= j), u,
        1] with u = x - x_0 about the first frame x_0 (a point of the data, so they stay accurate
        far from the origin; diag/spherical: u_i² only). Stored transposed (each row a product of
        two contiguous rows; an ``(N, P)`` concatenation cost more than the GEMM that reads it).
        They depend on the frames only: inside `jaxem.fit`'s loop XLA computes them once for the
        whole fit, and the emission log-densities and statistics share them."""
        ref = frames[0]
        uT = (frames - ref).T  # (D, N)
        D = uT.shape[0]
        outer = self.covariance_type in ("full", "tied")
        iu, ju = np.triu_indices(D) if outer else (np.arange(D), np.arange(D))
        phi = jnp.stack([uT[i] * uT[j] for i, j in zip(iu, ju)] + list(uT)
                        + [jnp.ones_like(uT[0])])
        return phi, ref, iu, ju

    def _log_emission_time_major(self, params, frames):
        """``(N, K)`` log N(x_n | μ_k, Σ_k) for the statistics pass. float64, full covariances: one
        GEMM φ(x)ᵀ W of the shared moment features (`_moments`), from
        (u + δ_k)ᵀ Λ_k (u + δ_k) = Σ_{i<=j} (2 - [i=j]) Λ_k,ij u_i u_j + 2 δ_kᵀ Λ_k u
        + δ_kᵀ Λ_k δ_k, δ_k = x_0 - μ_k, Λ_k = Σ_k⁻¹ = P_k P_kᵀ (no whitened residuals
        ``(N, K, D)`` per iteration).
        Expanding costs rounding of order eps (|P_kᵀ u| + |P_kᵀ δ_k|)²; when a bound of that
        exceeds 1e-9 nats (frames or means thousands of standard deviations from x_0) the
        residual route runs instead (a `jax.lax.cond`). Other cases: `_log_emission_fn`."""
        fn = self._log_emission_fn(params)
        if self.covariance_type != "full" or jnp.dtype(frames.dtype).itemsize < 8:
            return fn(frames)
        gmm = self._gmm
        g = gmm._geometry(self._mixture_params(params))
        phi, ref, iu, ju = self._moments(frames)
        D = frames.shape[1]
        lam = jnp.einsum("kij,klj->kil", g.P, g.P)  # Σ_k⁻¹
        delta = ref[None] - params.means  # (K, D)
        ld = jnp.einsum("kij,kj->ki", lam, delta)  # Λ_k δ_k
        dld = jnp.sum(delta * ld, -1)
        coef = np.where(iu == ju, 1.0, 2.0)
        const = g.log_det + g.log_pi - 0.5 * (D * math.log(2 * math.pi) + dld)
        W = jnp.concatenate([-0.5 * coef[:, None] * lam[:, iu, ju].T, -ld.T, const[None]],
                            0)  # (P + D + 1, K)
        # Rounding bound: |P_kᵀ u_n|² <= |u_n|² tr Λ_k, |u_n|² = Σ_i u_i² (φ's rows).
        u2 = jnp.max(sum(phi[r] for r in np.flatnonzero(iu == ju)))
        bound = jnp.finfo(frames.dtype).eps * jnp.max(
            (jnp.sqrt(u2 * jnp.sum(lam * jnp.eye(lam.shape[-1], dtype=lam.dtype), (1, 2)))
             + jnp.sqrt(jnp.maximum(dld, 0))) ** 2)
        moments = lambda: jax.lax.dot_general(phi, W, (((0,), (0,)), ((), ())))
        return cond(bound < 1e-9, moments, lambda: fn(frames))  # eager: one route, in Python

    def _emission_statistics(self, params, frames, rw) -> GaussianMixtureStatistics:
        """`GaussianMixture`'s statistics about the means with responsibilities ``rw (N, K)``.

        float64: one GEMM rwᵀ φ(x) of the shared moment features (`_moments`, about the first
        frame x_0), then shifted to the means by `GaussianMixture._shift`. float32: residuals
        about each state's mean (exact to rounding far from the origin)."""
        z = jnp.zeros((), frames.dtype)
        if jnp.dtype(frames.dtype).itemsize < 8:
            y = frames[:, None, :] - params.means[None]
            st = self._gmm._stats(rw, y)
            return GaussianMixtureStatistics(st.nk, st.sy, st.syy, z, jnp.sum(st.nk))
        N, D = frames.shape
        K = params.means.shape[0]
        phi, ref, iu, ju = self._moments(frames)
        P = len(iu)
        M = jax.lax.dot_general(rw, phi, (((0,), (1,)), ((), ())))  # (K, P + D + 1)
        sxx = M[:, :P]
        if self.covariance_type in ("full", "tied"):  # the upper triangle, mirrored
            sxx = jnp.zeros((K, D, D), M.dtype).at[:, iu, ju].set(sxx).at[:, ju, iu].set(sxx)
        if self.covariance_type == "tied":
            sxx = jnp.sum(sxx, 0)
        st = GaussianMixtureStatistics(M[:, -1], M[:, P:P + D], sxx, z, jnp.sum(M[:, -1]))
        return self._gmm._shift(st, ref[None] - params.means)  # about x_0 -> about each mean

    def _fix_emission_statistics(self, est, params, fixed):
        """Means fixed: the covariances about them (the statistics are about the means; see
        `GaussianMixture._condition_on_means`, which also conditions the emission prior)."""
        if "means" in fixed:
            est = self._gmm._condition_on_means(est, self._mixture_params(params))
        return est

    def _emission_maximize(self, est, params):
        new, status = self._gmm._maximize(est, self._mixture_params(params))
        return params._replace(means=new.means, covariances=new.covariances), status

    def _emission_init(self, key, frames, w, pi, A):
        """k-means on the frames, then the Gaussian M-step of its labels (hmmlearn's start)."""
        gp = init_from_responsibilities(self._gmm, key, frames, w, "kmeans")
        return GaussianHMMParams(pi, A, gp.means, gp.covariances)

    def _draw(self, key, params, z):
        n, T = z.shape
        D = params.means.shape[-1]
        eps = jax.random.normal(key, (n, T, D), params.means.dtype)
        ct, cov = self.covariance_type, params.covariances
        mu = params.means[z]
        if ct == "full":
            return mu + jnp.einsum("ntde,nte->ntd", jnp.linalg.cholesky(cov)[z], eps)
        if ct == "tied":
            return mu + eps @ jnp.linalg.cholesky(cov).T
        if ct == "diag":
            return mu + eps * jnp.sqrt(cov[z])
        return mu + eps * jnp.sqrt(cov[z])[..., None]

    def _n_emission_parameters(self, params) -> int:
        return self._gmm.n_parameters(self._mixture_params(params)) - (self.n_states - 1)
