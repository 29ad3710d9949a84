"""Conjugate priors and MAP estimation by EM (Fraley & Raftery 2007; Ormoneit & Tresp 1998).

With a prior p(θ) on a model (``prior=``), EM maximises the log posterior
log p(θ | X) = log p(X | θ) + log p(θ) + const instead of the log-likelihood: the E-step is
unchanged and the M-step maximises Q(θ, θ_old) + log p(θ) (Dempster, Laird & Rubin 1977, §4.5).
For conjugate priors that maximiser is closed form — the posterior mode of the complete-data
model — and it is a function of the same expected sufficient statistics, so `fit`, `fit_stream`,
sharded data and ``jax.vmap`` all run MAP EM unchanged; EM's monotonicity now holds for the log
posterior.

Priors (all hyperparameters are Python floats or tuples: the prior objects are frozen, hashable
dataclasses, part of the static model):

- `GaussianPrior` (`GaussianMixture`, `GaussianHMM` emissions), Fraley & Raftery (2007), §3-4:
  μ_k | Σ_k ~ N(μ_P, Σ_k / κ_P) and Σ_k ~ inverse-Wishart(ν_P, Λ_P) (full; tied: one Σ, one
  Wishart, K normal mean priors), σ²_kd ~ inverse-gamma(ν_P/2, Λ_P,d/2) (diag) and
  σ²_k ~ inverse-gamma(ν_P/2, Λ_P/2) with μ_k | σ²_k ~ N(μ_P, σ²_k I / κ_P) (spherical); with
  n_k = Σ_n w_n r_nk, x̄_k the weighted mean, W_k = Σ_n w_n r_nk (x_n - x̄_k)(x_n - x̄_k)ᵀ and
  e_k = x̄_k - μ_P, the posterior modes are
      μ_k = (n_k x̄_k + κ_P μ_P) / (n_k + κ_P)
      full       Σ_k  = (Λ_P + W_k + κ_P n_k/(n_k + κ_P) e_k e_kᵀ) / (ν_P + n_k + D + 1 + b)
      tied       Σ    = (Λ_P + Σ_k [W_k + κ_P n_k/(n_k + κ_P) e_k e_kᵀ]) / (ν_P + N + D + 1 + K b)
      diag       σ²_kd = (Λ_P,d + W_k,dd + κ_P n_k/(n_k + κ_P) e_kd²) / (ν_P + n_k + 2 + b)
      spherical  σ²_k = (Λ_P + tr W_k + κ_P n_k/(n_k + κ_P) |e_k|²) / (ν_P + D n_k + 2 + D b)
  with b = 1 if κ_P > 0 else 0 (κ_P = 0: no prior on the means). These are the corrected Table 2
  of Fraley & Raftery's technical report 486 (rev. 2009) for VVV, EEE, VVI and VII, and what
  mclust's EM (``me*p``) computes for them. ``reg_covar`` is added after, as without a prior.
- Dirichlet(α, ..., α) on the mixture weights (``weights_concentration``; every prior has one):
  π_k = (n_k + α - 1) / (N + K(α - 1)); α = 1 (the default) is flat, as in mclust.
- `BetaPrior` (`BernoulliMixture`): p_kd ~ Beta(a_d, b_d), p_kd = (s_kd + a_d - 1)/(n_k + a_d + b_d - 2).
- `GammaPrior` (`PoissonMixture`, `PoissonHMM`): λ_kd ~ Gamma(shape_d, rate),
  λ_kd = (s_kd + shape_d - 1) / (n_k + rate).
- `HMMPrior` (HMMs): Dirichlet rows on the initial probabilities and the transition matrix,
  π_k ∝ n⁰_k + α⁰_k - 1, A_jk ∝ n_jk + α_jk - 1, and the emission family's prior (the generic
  `HMM`: the user's log prior of the emission params, ascended by its gradient M-step).

The log prior in the fit's ``trace`` and ``log_likelihood`` is the log prior density *without its
normalising constant* (the terms that depend on θ), divided by Σw like the log-likelihood:
trace[i] = (Σ_n w_n log p(x_n | θ_i) + log p̃(θ_i)) / Σ_n w_n. A flat prior (every hyperparameter
at its flat value: α = a = b = shape = 1, rate = κ_P = Λ_P = 0, ν_P = None) adds exactly 0, so it
reproduces the maximum-likelihood fit and trace; improper limits like it are allowed as long as
the modes above are defined. BIC and AIC (`bic`, `aic`) use the log-likelihood at the MAP
estimate, not the log posterior, as Fraley & Raftery (2007) propose and mclust reports.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._where import where


# --- hyperparameter normalisation (hashable Python values) ------------------------------------
def _hyper(name: str, value, *, ndim_max: int, minimum: float | None = None, strict=False):
    """A float, or (nested) tuple of floats, from a number / sequence / array; ValueError for
    non-finite values or values below ``minimum``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}.")
    if isinstance(value, numbers.Real):
        arr = np.asarray(float(value))
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array of numbers, got "
                             f"{value!r}.") from None
    if arr.ndim > ndim_max:
        raise ValueError(f"{name} must have at most {ndim_max} dimension(s), got shape "
                         f"{arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if minimum is not None and (np.any(arr <= minimum) if strict else np.any(arr < minimum)):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value!r}.")
    return float(arr) if arr.ndim == 0 else _totuple(arr)


def _totuple(arr):
    return tuple(_totuple(a) for a in arr) if arr.ndim > 1 else tuple(float(a) for a in arr)


def _array(value, dtype):
    return jnp.asarray(np.asarray(value, np.float64), dtype)


# --- prior objects ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GaussianPrior:
    """Fraley & Raftery's (2007) conjugate prior on a Gaussian mixture (see `jaxem._prior`).

    Args:
      shrinkage: κ_P >= 0, the prior precision of the means in units of Σ_k (a number of
        pseudo-observations); 0: no prior on the means (mclust's ``shrinkage = 0``).
      mean: μ_P, a number or ``(D,)`` (the data mean in `jaxem.default_prior`).
      dof: ν_P, degrees of freedom of the (inverse-)Wishart / inverse-gamma prior on the
        covariances; None: the flat value (-(D + 1) for full and tied, -2 for diag and spherical:
        no |Σ| penalty). mclust's default is D + 2.
      scale: Λ_P >= 0, added to the scatter matrices: full / tied a number (times I), ``(D,)``
        (a diagonal) or ``(D, D)`` (symmetric positive semi-definite); diag a number or ``(D,)``;
        spherical a number. 0: no scale (then dof alone does not prevent a singular covariance).
      weights_concentration: α >= 1 of the symmetric Dirichlet prior on the weights (1: flat).

    Example:
      >>> import jaxem
      >>> prior = jaxem.GaussianPrior(shrinkage=0.01, mean=(0.0, 0.0), dof=4.0, scale=0.5)
      >>> model = jaxem.GaussianMixture(3, prior=prior, reg_covar=0.0)
    """

    shrinkage: float = 0.0
    mean: Any = 0.0
    dof: float | None = None
    scale: Any = 0.0
    weights_concentration: float = 1.0

    def __post_init__(self):
        s = object.__setattr__
        s(self, "shrinkage", _hyper("shrinkage", self.shrinkage, ndim_max=0, minimum=0.0))
        s(self, "mean", _hyper("mean", self.mean, ndim_max=1))
        if self.dof is not None:
            s(self, "dof", _hyper("dof", self.dof, ndim_max=0))
        s(self, "scale", _hyper("scale", self.scale, ndim_max=2))
        lam = np.asarray(self.scale)
        if lam.ndim == 2 and (lam.shape[0] != lam.shape[1] or not np.allclose(lam, lam.T)):
            raise ValueError(f"scale must be a number, a vector or a symmetric matrix, got shape "
                             f"{lam.shape}.")
        low = np.linalg.eigvalsh(lam).min() if lam.ndim == 2 else np.min(lam)
        if low < -1e-12 * max(1.0, float(np.abs(lam).max())):
            raise ValueError(f"scale must be >= 0 (positive semi-definite), got {self.scale!r}.")
        s(self, "weights_concentration", _hyper("weights_concentration",
                                                self.weights_concentration, ndim_max=0,
                                                minimum=1.0))


@dataclasses.dataclass(frozen=True)
class BetaPrior:
    """Beta(a_d, b_d) prior on every ``BernoulliMixture`` probability p_kd, and a Dirichlet(α)
    prior on the weights: p_kd = (s_kd + a_d - 1) / (n_k + a_d + b_d - 2).

    Args:
      a, b: >= 1, numbers or ``(D,)`` (a = b = 1: flat; `jaxem.default_prior` gives
        a_d = 1 + p̄_d, b_d = 2 - p̄_d, one pseudo-observation at the data's frequencies p̄).
      weights_concentration: α >= 1 (1: flat).

    Example:
      >>> import jaxem
      >>> model = jaxem.BernoulliMixture(3, prior=jaxem.BetaPrior(a=2.0, b=2.0))
    """

    a: Any = 1.0
    b: Any = 1.0
    weights_concentration: float = 1.0

    def __post_init__(self):
        for name in ("a", "b"):
            object.__setattr__(self, name, _hyper(name, getattr(self, name), ndim_max=1,
                                                  minimum=1.0))
        object.__setattr__(self, "weights_concentration", _hyper(
            "weights_concentration", self.weights_concentration, ndim_max=0, minimum=1.0))


@dataclasses.dataclass(frozen=True)
class GammaPrior:
    """Gamma(shape_d, rate) prior on every Poisson rate λ_kd (``PoissonMixture``, ``PoissonHMM``)
    and a Dirichlet(α) prior on the weights: λ_kd = (s_kd + shape_d - 1) / (n_k + rate).

    Args:
      shape: >= 1, a number or ``(D,)`` (1 with rate 0: flat; `jaxem.default_prior` gives
        shape_d = 1 + λ̄_d, rate = 1, one pseudo-observation at the data's means λ̄).
      rate: >= 0.
      weights_concentration: α >= 1 (1: flat).

    Example:
      >>> import jaxem
      >>> model = jaxem.PoissonMixture(2, prior=jaxem.GammaPrior(shape=2.0, rate=1.0))
    """

    shape: Any = 1.0
    rate: float = 0.0
    weights_concentration: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "shape", _hyper("shape", self.shape, ndim_max=1, minimum=1.0))
        object.__setattr__(self, "rate", _hyper("rate", self.rate, ndim_max=0, minimum=0.0))
        object.__setattr__(self, "weights_concentration", _hyper(
            "weights_concentration", self.weights_concentration, ndim_max=0, minimum=1.0))


@dataclasses.dataclass(frozen=True)
class HMMPrior:
    """Prior of an HMM: Dirichlet rows on the initial probabilities and the transition matrix,
    and the emission family's prior.

    Args:
      initial: α⁰ >= 1, a number or ``(K,)``: π ~ Dirichlet(α⁰).
      transition: α >= 1, a number or ``(K, K)``: row j of A ~ Dirichlet(α_j) (e.g. a larger
        diagonal for "sticky" states).
      emission: None, or the emission's prior: `GaussianPrior` (`GaussianHMM`; its
        ``weights_concentration`` is not used), `GammaPrior` (`PoissonHMM`), for
        `CategoricalHMM` a number or ``(C,)`` α_c >= 1: row k of B ~ Dirichlet(α), and for the
        generic `HMM` a function ``emission_params -> ()``, the emission's log prior.

    Example:
      >>> import jaxem
      >>> model = jaxem.CategoricalHMM(2, 3, prior=jaxem.HMMPrior(transition=2.0, emission=1.5))
    """

    initial: Any = 1.0
    transition: Any = 1.0
    emission: Any = None

    def __post_init__(self):
        object.__setattr__(self, "initial", _hyper("initial", self.initial, ndim_max=1,
                                                   minimum=1.0))
        object.__setattr__(self, "transition", _hyper("transition", self.transition,
                                                      ndim_max=2, minimum=1.0))
        e = self.emission
        if e is not None and not isinstance(e, (GaussianPrior, GammaPrior)) and not callable(e):
            object.__setattr__(self, "emission", _hyper("emission", e, ndim_max=1, minimum=1.0))


PRIORS = {c.__name__: c for c in (GaussianPrior, BetaPrior, GammaPrior, HMMPrior)}


def to_json(prior):
    """A prior as JSON-able values (for `jaxem.save`); `from_json` inverts it."""
    if not dataclasses.is_dataclass(prior):
        return prior
    return {"prior": type(prior).__name__,
            "fields": {f.name: to_json(getattr(prior, f.name)) for f in dataclasses.fields(prior)}}


def from_json(obj):
    if not (isinstance(obj, dict) and obj.get("prior") in PRIORS):
        return obj
    return PRIORS[obj["prior"]](**{k: from_json(v) for k, v in obj["fields"].items()})


def check_prior(model, *types) -> None:
    """ValueError unless ``model.prior`` is None, "default" or one of ``types``."""
    p = model.prior
    if p is None or (isinstance(p, str) and p == "default") or isinstance(p, types):
        return
    names = " or ".join(t.__name__ for t in types)
    raise ValueError(f"prior of {type(model).__name__} must be None, 'default' or a jaxem."
                     f"{names}, got {p!r}.")


def active(model):
    """The model's concrete prior, or None; ValueError for an unresolved "default"."""
    p = getattr(model, "prior", None)
    if isinstance(p, str):
        raise ValueError(
            f"{type(model).__name__}(prior='default') is resolved from the data by jaxem.fit; "
            "elsewhere pass prior=jaxem.default_prior(model, X) (a concrete prior).")
    return p


# --- the Dirichlet on weights / probability vectors ------------------------------------------
def dirichlet_mode(counts, alpha, axis=-1, on=None):
    """Posterior mode of probabilities with counts n and Dirichlet(α): (n + α - 1) / Σ (n + α - 1);
    ``on`` masks switched-off entries (kept at 0)."""
    c = counts + (_array(alpha, counts.dtype) - 1.0)
    if on is not None:
        c = where(on, c, 0.0)
    return c / jnp.sum(c, axis, keepdims=True)


def dirichlet_log_kernel(probs, alpha):
    """Σ (α - 1) log p (0 where α = 1, also at p = 0)."""
    a1 = _array(alpha, probs.dtype) - 1.0
    use = (a1 != 0) & (probs > 0)  # (a switched-off component, weight 0, adds nothing)
    return jnp.sum(where(use, a1 * jnp.log(where(use, probs, 1.0)), 0.0))


# --- Gaussian -----------------------------------------------------------------------------------
def _bump(prior) -> float:
    return 1.0 if prior.shrinkage > 0 else 0.0


def _dof(prior, ct: str, D: int) -> float:
    flat = -(D + 1.0) if ct in ("full", "tied") else -2.0
    nu = flat if prior.dof is None else prior.dof
    if nu < flat:
        raise ValueError(f"GaussianPrior dof must be >= {flat} (the flat value) for "
                         f"covariance_type={ct!r} and D={D}, got {prior.dof}.")
    return nu


def _scale(prior, ct: str, D: int, dtype):
    """Λ_P as (D, D) (full/tied), (D,) (diag) or () (spherical)."""
    lam = np.asarray(prior.scale, np.float64)
    if ct in ("full", "tied"):
        if lam.ndim == 0 or lam.shape == (D,):
            lam = np.eye(D) * lam
        if lam.shape != (D, D) or not np.allclose(lam, lam.T):
            raise ValueError(f"GaussianPrior scale must be a number, (D,) or a symmetric (D, D) "
                             f"= ({D}, {D}) for covariance_type={ct!r}, got shape {lam.shape}.")
    elif ct == "diag":
        if lam.ndim == 2 or (lam.ndim == 1 and lam.shape != (D,)):
            raise ValueError(f"GaussianPrior scale must be a number or (D,) = ({D},) for "
                             f"covariance_type='diag', got shape {lam.shape}.")
        lam = np.broadcast_to(lam, (D,))
    elif lam.ndim:
        raise ValueError("GaussianPrior scale must be a number for covariance_type='spherical', "
                         f"got shape {lam.shape}.")
    return _array(lam, dtype)


def _mean(prior, D: int, dtype):
    mu = np.asarray(prior.mean, np.float64)
    if mu.ndim and mu.shape != (D,):
        raise ValueError(f"GaussianPrior mean must be a number or (D,) = ({D},), got shape "
                         f"{mu.shape}.")
    return _array(np.broadcast_to(mu, (D,)), dtype)


def gaussian_mode(prior, ct: str, nk, means, scatter, on):
    """MAP means and covariances (without reg_covar) from the ML pieces: ``nk (K,)``, the
    weighted means x̄_k ``(K, D)`` and the scatter W (full ``(K, D, D)``, tied ``(D, D)`` = Σ_k
    W_k, diag and spherical the diagonals ``(K, D)``); ``on (K,)`` the components in use."""
    K, D = means.shape
    dtype = means.dtype
    kappa, b = prior.shrinkage, _bump(prior)
    nu, lam = _dof(prior, ct, D), _scale(prior, ct, D, dtype)
    e = means - _mean(prior, D, dtype)
    c = where(on, kappa * nk / (nk + kappa), 0.0) if kappa > 0 else jnp.zeros_like(nk)
    mu = means - (kappa / (nk + kappa))[:, None] * e if kappa > 0 else means
    if ct == "full":
        num = lam + scatter + c[:, None, None] * e[:, :, None] * e[:, None, :]
        cov = num / (nu + nk + D + 1.0 + b)[:, None, None]
    elif ct == "tied":
        n_on = jnp.sum(where(on, 1.0, 0.0))
        num = lam + scatter + jnp.einsum("k,kd,ke->de", c, e, e)
        cov = num / (nu + jnp.sum(where(on, nk, 0.0)) + D + 1.0 + n_on * b)
    elif ct == "diag":
        cov = (lam + scatter + c[:, None] * e * e) / (nu + nk + 2.0 + b)[:, None]
    else:
        num = lam + jnp.sum(scatter, 1) + c * jnp.sum(e * e, 1)
        cov = num / (nu + D * nk + 2.0 + D * b)
    return mu, cov


def gaussian_log_kernel(prior, ct: str, means, covariances):
    """θ-dependent part of log p(μ, Σ) (the normal-inverse-Wishart / -gamma kernel)."""
    from ._linalg import cholesky_factors

    K, D = means.shape
    dtype = means.dtype
    kappa, b = prior.shrinkage, _bump(prior)
    nu, lam = _dof(prior, ct, D), _scale(prior, ct, D, dtype)
    e = means - _mean(prior, D, dtype)
    if ct in ("full", "tied"):
        L, P = cholesky_factors(covariances)  # P = L⁻ᵀ, Σ⁻¹ = P Pᵀ
        eye = np.eye(D, dtype=dtype)
        log_det = -2.0 * jnp.sum(jnp.log(jnp.sum(P * eye, -1)), -1)  # log|Σ|
        # tr(Σ⁻¹ Λ) = tr(Pᵀ Λ P)
        tr = jnp.einsum("...de,df,...fe->...", P, lam, P)
        if ct == "full":
            quad = jnp.sum(jnp.einsum("kd,kde->ke", e, P) ** 2, -1)
            return jnp.sum(-0.5 * (nu + D + 1.0 + b) * log_det - 0.5 * tr - 0.5 * kappa * quad)
        quad = jnp.sum((e @ P) ** 2)
        return -0.5 * (nu + D + 1.0 + K * b) * log_det - 0.5 * tr - 0.5 * kappa * quad
    if ct == "diag":
        v = covariances
        return jnp.sum(-(0.5 * nu + 1.0 + 0.5 * b) * jnp.log(v) - 0.5 * (lam + kappa * e * e) / v)
    v = covariances
    return jnp.sum(-(0.5 * nu + 1.0 + 0.5 * D * b) * jnp.log(v)
                   - 0.5 * (lam + kappa * jnp.sum(e * e, 1)) / v)


# --- the log prior of a model's parameters --------------------------------------------------
def log_prior(model, params):
    """θ-dependent part of log p(θ) under ``model.prior`` (0 without a prior): the term `jaxem.fit`
    adds to the log-likelihood in ``trace`` and ``log_likelihood`` (then divided by Σw).

    Example:
      Gamma(2, 1) on two Poisson rates: Σ_k (2 - 1) log λ_k - λ_k = log 3 - 4.

      >>> import jax.numpy as jnp, jaxem
      >>> model = jaxem.PoissonMixture(2, prior=jaxem.GammaPrior(shape=2.0, rate=1.0))
      >>> params = jaxem.PoissonMixtureParams(jnp.array([0.5, 0.5]), jnp.array([[1.0], [3.0]]))
      >>> print(round(float(jaxem.log_prior(model, params)), 4))
      -2.9014
    """
    p = active(model)
    if p is None:
        return 0.0
    return model._log_prior(params)


def log_posterior_sum(model, params, log_likelihood):
    """Σ w log p(x | θ) + log p̃(θ), in the log-likelihood's dtype."""
    if getattr(model, "prior", None) is None:
        return log_likelihood
    return log_likelihood + jnp.asarray(log_prior(model, params), log_likelihood.dtype)


# --- data-dependent defaults (mclust's defaultPrior) ---------------------------------------------
def default_prior(model, X, weights=None, lengths=None):
    """A concrete data-dependent prior for ``model`` and data ``X``, to pass as ``prior=``.

    Gaussian mixtures and `GaussianHMM` (mclust's ``defaultPrior``, Fraley & Raftery 2007, §4.2):
    κ_P = 0.01, μ_P = the data mean, ν_P = D + 2, and Λ_P = var(X) / K^(2/D) — the sample
    covariance (full, tied; its diagonal if N <= D) or, for diag and spherical, the mean of the
    per-feature variances (a number) — so that the prior holds a hundredth of an observation's
    information about the means and the covariances are shrunk towards the volume each of K
    components would get by splitting the data's. Weights, initial and transition probabilities:
    flat (α = 1), as in mclust. `BernoulliMixture`: Beta(1 + p̄_d, 2 - p̄_d); `PoissonMixture`
    and `PoissonHMM`: Gamma(1 + λ̄_d, 1); `CategoricalHMM`: Dirichlet(1 + f_c) rows — one
    pseudo-observation at the data's mean p̄, λ̄ or symbol frequencies f, so that no probability
    reaches 0 or 1 and no rate 0.

    Computed on the host (NumPy, float64) from concrete data: call it outside `jax.jit`. With
    ``weights`` the moments are weighted (frequency weights: var = Σw(x - x̄)² / (Σw - 1)).
    ``jaxem.fit`` resolves ``prior="default"`` with this function; the resolved prior is part of
    the static model, so each dataset compiles its own fit. HMMs take X, ``weights`` (per
    sequence) and ``lengths`` as ``fit`` does; the moments are over all frames.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 2))
      >>> model = jaxem.GaussianMixture(3)
      >>> model = jaxem.GaussianMixture(3, prior=jaxem.default_prior(model, X))
    """
    from .models import BernoulliMixture, GaussianMixture, PoissonMixture
    from .models.hmm import CategoricalHMM, GaussianHMM, PoissonHMM

    K = model.n_components
    if isinstance(model, (GaussianHMM, PoissonHMM, CategoricalHMM)):
        Xs, ws, _ = model._as_sequences(X, weights, lengths)  # frames (S, T, D), weights (S, T)
        Xs, ws = np.asarray(Xs, np.float64), np.asarray(ws, np.float64)
        frames, w = Xs.reshape(-1, Xs.shape[-1]), ws.reshape(-1)
        if isinstance(model, CategoricalHMM):
            counts = np.bincount(frames[:, 0].astype(int), weights=w,
                                 minlength=model.n_categories)
            emission = tuple(1.0 + counts / counts.sum())
        else:
            mixture = GaussianMixture(K, model.covariance_type) if isinstance(
                model, GaussianHMM) else PoissonMixture(K)
            emission = default_prior(mixture, frames[w > 0], w[w > 0])
        return HMMPrior(emission=emission)
    Xn = np.asarray(X, np.float64)
    if Xn.ndim != 2 or not np.all(np.isfinite(Xn)):
        raise ValueError("default_prior needs concrete, finite X of shape (N, D) (call it "
                         "outside jax.jit).")
    w = np.ones(len(Xn)) if weights is None else np.asarray(weights, np.float64)
    sw = w.sum()
    mean = w @ Xn / sw
    if isinstance(model, BernoulliMixture):
        p = np.clip(mean, 0.0, 1.0)
        return BetaPrior(a=tuple(1.0 + p), b=tuple(2.0 - p))
    if isinstance(model, PoissonMixture):
        return GammaPrior(shape=tuple(1.0 + np.maximum(mean, 0.0)), rate=1.0)
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"default_prior has no default for {type(model).__name__}.")
    N, D = Xn.shape
    R = Xn - mean
    cov = (R * w[:, None]).T @ R / max(sw - 1.0, 1e-300)
    fac = (1.0 / K) ** (2.0 / D)
    if model.covariance_type in ("full", "tied"):
        scale = fac * (cov if N > D else np.diag(np.diag(cov)))
    else:
        scale = fac * float(np.trace(cov)) / D
    return GaussianPrior(shrinkage=0.01, mean=tuple(mean), dof=D + 2.0, scale=scale)


def for_init(model, X, w):
    """The model `init` runs its M-step with: ``prior="default"`` resolved from concrete data, or
    dropped (an ML start) under a trace."""
    from ._validate import is_concrete

    if not isinstance(getattr(model, "prior", None), str):
        return model
    return resolve(model, X, w) if is_concrete(X, w) else dataclasses.replace(model, prior=None)


def resolve(model, X, w):
    """``model`` with ``prior="default"`` replaced by `default_prior` of concrete data."""
    if not isinstance(getattr(model, "prior", None), str):
        return model
    from ._validate import is_concrete

    if not is_concrete(X, w):
        raise ValueError("prior='default' is computed from the data, which must be concrete: "
                         "outside jax.jit call jaxem.default_prior(model, X) and pass the result "
                         "as prior=.")
    base = dataclasses.replace(model, prior=None)
    return dataclasses.replace(model, prior=default_prior(base, X, w))
