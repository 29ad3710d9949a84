"""Observed information and standard errors: the Hessian of log p(X | θ) (+ log p(θ) with a prior),
or the E-step identities of Louis (1982) and Oakes (1999)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._chunk import chunked_sum_rows
from ._compile import compiled
from ._coordinates import coordinates, flatten, is_fixed, null_matrix
from ._validate import as_data, is_concrete, validate
from ._where import where
from .models._base import Mixture
from .models.factor_analysis import FactorAnalysis
from .models.hmm._base import HiddenMarkovModel
from .models.hmm._inference import safe_log
from .models.ppca import PPCA
from . import _prior

METHODS = ("hessian", "louis", "oakes")


class ObservedInformation(NamedTuple):
    """The observed information matrix in the unconstrained coordinates of `jaxem._coordinates`.

    Attributes:
      matrix: ``(P, P)`` I(u) = -∇²_u Σ_n w_n log p(x_n | θ(u)) (with a prior on the model,
        - ∇²_u log p̃(θ(u)) added: the log posterior's; see `observed_information`).
      coordinates: ``(P,)`` u at the params (the leaves of the family's coordinate pytree,
        flattened in order; see `information_coordinates`).
      null_space: ``(P, r)`` directions in which the likelihood is flat by construction (the
        shift v -> v + c·1 of each vector of log-probabilities; rotations of W for PPCA / factor
        analysis with q > 1). The matrix is singular along them; inverses are taken on their
        orthogonal complement.
      fixed: ``(P,)`` bool, coordinates held fixed, estimates on the boundary: log-probabilities of
        probabilities exactly 0, Bernoulli probabilities at the clip bounds, Poisson rates at
        ``min_rate`` (coordinates ±1e30; their rows and columns of ``matrix`` are 0).
    """

    matrix: jax.Array
    coordinates: jax.Array
    null_space: jax.Array
    fixed: jax.Array

    def covariance(self) -> jax.Array:
        """``(P, P)`` asymptotic covariance of u: the inverse of ``matrix`` on the complement of
        ``null_space`` and of the ``fixed`` coordinates (zero there); NaN if that restriction of
        the matrix is not positive definite."""
        V, C = _reduced_factor(self)
        Z = jax.scipy.linalg.solve_triangular(C, V.T, lower=True)
        return Z.T @ Z


def information_coordinates(model, params):
    """``(u, to_params)``: the unconstrained coordinates u ``(P,)`` of ``params`` in which
    `observed_information` is taken, and the map back ``to_params(u) -> params``.

    Probability vectors (mixture weights, HMM initial/transition/emission probabilities) are
    log-probabilities (back: softmax); full and tied covariances the lower triangle of their
    Cholesky factor with log diagonal (row-major ``numpy.tril_indices`` order); diagonal and
    spherical covariances, noise variances and Poisson rates their logs; Bernoulli probabilities
    their logits; means, PPCA / factor-analysis loadings W and the params of `jaxem.MixtureModel`
    (and `jaxem.HMM` emissions) themselves. Leaves are flattened in the order of the params'
    fields (C order), so u = concat(log weights, means, Cholesky coordinates) for a Gaussian
    mixture.

    Example:
      >>> import jax, jaxem
      >>> model = jaxem.GaussianMixture(2)
      >>> params = model.init(jax.random.key(1), jax.random.normal(jax.random.key(0), (100, 2)))
      >>> u, to_params = jaxem.information_coordinates(model, params)  # u.shape == (12,)
    """
    c = coordinates(model, params)
    u, unflatten = flatten(c.free)
    return u, lambda v: c.to_params(unflatten(v))


def observed_information(model, params, X, weights=None, *, method: str = "hessian",
                         lengths=None, include_prior: bool = True) -> ObservedInformation:
    """The observed information I = -∇² log p(X | θ) at ``params``, in unconstrained coordinates;
    with a prior on the model (``prior=``, a MAP fit) that of the log posterior,
    -∇²[log p(X | θ) + log p(θ)] (``include_prior=True``, the default).

    Three routes to the same matrix (exact at any θ, so they agree to rounding):

    ``method="hessian"``: `jax.hessian` of the weighted log-likelihood Σ_n w_n log p(x_n | θ(u)),
    summed over row blocks (HMMs: of the forward recursion).

    ``method="louis"``: Louis' identity (Louis 1982, JRSS-B 44, "Finding the observed information
    matrix when using the EM algorithm", eq. 3.2), from the E-step only: with
    ℓ_n(u; z) = log p(x_n, z | θ(u)) and expectations over z ~ p(z | x_n, θ),

        I(u) = Σ_n w_n E[-∇²_u ℓ_n]  -  Σ_n w_n Cov[∇_u ℓ_n],

    the complete-data information minus the missing information (the conditional covariance of
    the complete-data score given x_n, summed over independent rows). Finite mixtures: with r_nk
    the responsibilities, g_nk = ∇_u ℓ_n(u; k) and ḡ_n = Σ_k r_nk g_nk, the missing information is
    Σ_n w_n Σ_k r_nk (g_nk - ḡ_n)(g_nk - ḡ_n)ᵀ. `PPCA` / `FactorAnalysis`: z | x_n ~ N(m_n, S)
    and ℓ_n is quadratic in z, so E[ℓ_n(u'; z)] is closed form (the complete part is its Hessian)
    and the score is a quadratic polynomial in z, g(z) = g(m_n) + B_n δ + ½ δᵀC δ (δ = z - m_n,
    B_n = ∂g/∂z at m_n, C = ∂²g/∂z² constant): by Isserlis' theorem Cov[g] = B_n S B_nᵀ +
    ½ [tr(C_p S C_q S)]_pq, exact. HMMs: the complete-data score is a sum over time, and its
    covariance needs every pair of time steps; "louis" computes the same matrix by Oakes' identity
    (below), also from the E-step.

    ``method="oakes"`` (every family): Oakes' identity (Oakes 1999, JRSS-B 61, "Direct
    calculation of the information matrix via the EM algorithm", eq. 4): with
    Q(u' | u) = E_{z|X,u}[log p(X, z | u')] the E-step's expected complete log-likelihood,

        I(u) = -[∂²Q(u' | u)/∂u'² + ∂²Q(u' | u)/∂u' ∂u] at u' = u,

    computed as minus the Jacobian (`jax.jacfwd`, through the E-step: responsibilities, the latent
    factors' posterior, the HMM smoother's γ and ξ — taken as derivatives of the forward recursion,
    Eisner 2016) of u ↦ ∇_{u'} Q(u' | u) at u' = u, the observed score by Fisher's identity.

    With a prior, -∇²_u log p̃(θ(u)) (`jaxem.log_prior`, no latent variables) is added to every
    route, in the same coordinates (no Jacobian of u ↦ θ: the posterior mode is taken in θ, and at
    it Iᵤ = Jᵀ I_θ J, so the delta method's errors do not depend on the coordinates).
    ``include_prior=False`` gives the information of the likelihood alone.

    Args:
      model: a jaxem model (GaussianMixture, BernoulliMixture, PoissonMixture, MixtureModel, PPCA,
        FactorAnalysis, GaussianHMM, CategoricalHMM, PoissonHMM, HMM).
      params: the parameters, usually the maximum-likelihood (or MAP) estimate from `jaxem.fit`.
      X: ``(N, D)`` data (HMMs: sequences as in `jaxem.fit`).
      weights: ``(N,)`` non-negative frequency weights (w_n = 2 counts row n twice), or None.
      method: "hessian", "louis" or "oakes".
      lengths: HMMs only: ``(S,)`` lengths of sequences padded at the end.
      include_prior: with ``model.prior`` set, add the prior's information (the log posterior's
        Hessian); no effect without a prior.

    Returns:
      An `ObservedInformation`: ``matrix (P, P)`` in the coordinates of
      `information_coordinates`, with the flat directions ``null_space`` and ``fixed``.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 1))
      >>> model = jaxem.GaussianMixture(1)
      >>> params = jaxem.fit(model, model.init(jax.random.key(1), X), X).params
      >>> info = jaxem.observed_information(model, params, X)  # (3, 3): log π, μ, log σ
    """
    X, w = _prepare(model, params, X, weights, lengths, method)
    return _information(*_with_prior(model, include_prior), params, X, w, _route(model, method))


def standard_errors(model, params, X, weights=None, *, method: str = "hessian", lengths=None,
                    include_prior: bool = True):
    """Standard errors of the maximum-likelihood (or MAP) estimate, a pytree shaped like ``params``.

    The Wald covariance I(û)⁻¹ of the unconstrained coordinates (`observed_information`, inverted
    by Cholesky on the complement of its flat directions) is mapped to every parameter in its own
    units by the delta method: with J = ∂θ/∂u, Var(θ̂_i) ≈ (J I⁻¹ Jᵀ)_ii. So the standard error of a
    mean is in the units of X, of a covariance entry Σ_ij (both Σ_ij and Σ_ji) in units of X², of a
    mixture weight or a probability on the probability scale (the weights' errors are correlated:
    they sum to one). Valid at a local maximum of the likelihood (fit to convergence: `jaxem.fit`
    with a small ``tol``), where the Hessian does not depend on the coordinates. Label switching
    does not matter: errors follow the components' order in ``params``.

    With a prior on the model (a MAP fit) I is the information of the log posterior
    (``include_prior=True``, the default): the errors are the posterior standard deviations of the
    Laplace approximation at the posterior mode (e.g. a Gaussian mean with κ_P pseudo-observations
    gets sqrt(σ²/(N + κ_P))). ``include_prior=False`` uses the likelihood's information alone
    (the sampling error of the MAP estimator to first order).

    Not identifiable, reported as NaN: the loadings W of `PPCA` / `FactorAnalysis` with q > 1
    latent dimensions (W is determined only up to a rotation; the mean and noise variances, which
    are rotation invariant, are reported). Estimates on the boundary of the parameter space are held
    fixed, error 0: probabilities exactly 0 (structural zeros), Bernoulli probabilities clipped to
    ``min_prob`` / ``1 - min_prob``, Poisson rates at ``min_rate``; so is the weight of a
    one-component mixture. `MixtureModel` / `HMM` emission params are taken
    as unconstrained coordinates as given: parametrise them identifiably (e.g. K-1 free logits).

    Outside jit, a ValueError if the information is not positive definite (not a local maximum, or
    not identifiable) or not finite (e.g. a mixture weight exactly 0); under jit and vmap every
    standard error is NaN then.

    Args: as `observed_information`.

    Returns:
      A pytree like ``params`` of standard errors (same dtype).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (400, 1)) * 2.0
      >>> model = jaxem.GaussianMixture(1)
      >>> params = jaxem.fit(model, model.init(jax.random.key(1), X), X, tol=1e-8).params
      >>> se = jaxem.standard_errors(model, params, X)  # se.means ≈ σ/√N = 0.1
    """
    X, w = _prepare(model, params, X, weights, lengths, method)
    model, use_prior = _with_prior(model, include_prior)
    info = _information(model, use_prior, params, X, w, _route(model, method))
    if is_concrete(info):
        _check(info)
    return _standard_errors(model, params, info)


# --- checks ---------------------------------------------------------------------------------------
def _with_prior(model, include_prior):
    """``(model, whether to add the prior's Hessian)``: without it the prior is dropped from the
    (static) model, so the likelihood's information compiles once with or without a prior."""
    if not isinstance(include_prior, bool):
        raise ValueError(f"include_prior must be True or False, got {include_prior!r}.")
    if getattr(model, "prior", None) is None:
        return model, False
    if not include_prior:
        return dataclasses.replace(model, prior=None), False
    return model, _prior.active(model) is not None


def _route(model, method: str) -> str:
    """HMMs compute "louis" by Oakes' identity: one compiled program for both names."""
    return "oakes" if method == "louis" and isinstance(model, HiddenMarkovModel) else method


def _prepare(model, params, X, weights, lengths, method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if isinstance(model, HiddenMarkovModel):
        return model.prepare_data(X, weights, lengths, params)
    if lengths is not None:
        raise ValueError("lengths is for hidden Markov models; drop it for "
                         f"{type(model).__name__}.")
    if method != "hessian" and not isinstance(model, (Mixture, PPCA, FactorAnalysis)):
        raise ValueError(f"method={method!r} is implemented for finite mixtures, PPCA, "
                         f"FactorAnalysis and HMMs, not {type(model).__name__}; use "
                         "method='hessian'.")
    X, w = as_data(X, weights, model.n_features(params))
    validate(X, w)
    model.check_data(X)
    model.check_params(params)
    return X, w


def _check(info: ObservedInformation) -> None:
    I = np.asarray(info.matrix)
    if not np.all(np.isfinite(I)):
        raise ValueError(
            "the observed information is not finite at params: the log-likelihood or its "
            "derivatives are not finite there (a mixture weight exactly 0, a singular "
            "covariance?). Drop empty components or refit.")
    N, fixed = np.asarray(info.null_space), np.asarray(info.fixed)
    I = np.where(fixed[:, None] | fixed[None, :], 0.0, I) + np.diag(fixed.astype(I.dtype))
    N = np.where(fixed[:, None], 0.0, N)
    V = np.linalg.qr(N, mode="complete")[0][:, N.shape[1]:] if N.shape[1] else np.eye(len(I))
    try:
        np.linalg.cholesky(V.T @ I @ V)
        pd = True
    except np.linalg.LinAlgError:
        pd = False
    if not pd:
        raise ValueError(
            "observed information is not positive definite: params may not be a local maximum "
            "(fit to convergence, e.g. jaxem.fit(..., tol=1e-8)) or the model is not identifiable "
            "at params (e.g. two identical components, or redundant parameters of a MixtureModel).")


# --- computation ----------------------------------------------------------------------------------
def _reduced_factor(info: ObservedInformation):
    """``(V, C)``: V ``(P, m)`` orthonormal basis of the complement of the null space and of the
    fixed coordinates, C the Cholesky factor of Vᵀ I V (NaN if not positive definite)."""
    I, N, fixed = info.matrix, info.null_space, info.fixed
    keep = ~fixed
    I = where(keep[:, None] & keep[None, :], I, 0.0) + jnp.diag(fixed.astype(I.dtype))
    N = where(keep[:, None], N, 0.0)
    P, r = N.shape
    if r:
        Q, _ = jnp.linalg.qr(N, mode="complete")
        V = Q[:, r:]
    else:
        V = jnp.eye(P, dtype=I.dtype)
    Ir = V.T @ I @ V
    return V, jnp.linalg.cholesky(0.5 * (Ir + Ir.T))


def _hessian(model, to_params, u, X, w):
    """∇²_u Σ_n w_n log p(x_n | θ(u)), summed over row blocks (sequences for an HMM)."""
    hess = lambda f: jax.hessian(f)(u)  # noqa: E731
    if isinstance(model, HiddenMarkovModel):
        return hess(lambda v: _hmm_log_likelihood(model, to_params(v), X, w))

    def block(x, wb):
        return hess(lambda v: model.log_likelihood(to_params(v), x, wb))

    return chunked_sum_rows(block, (X, w), None, _width(model, u, X))


def _hmm_log_likelihood(model, params, X, w):
    """Σ_s w_s log p(x_s) by the forward algorithm in log space (`_hmm_forward`)."""
    return _hmm_forward(safe_log(params.initial_probs), safe_log(params.transition_matrix),
                        model._log_b(params, X), w)


def _hmm_forward(log_pi, log_A, log_b, w):
    """Σ_s w_s log p(x_s) by the forward algorithm in log space (Rabiner 1989, eq. 19-21):
    log α_1 = log π + log b_1, log α_t = logsumexp_j(log α_{t-1,j} + log A_jk) + log b_t (padding
    frames, w = 0, leave α unchanged), log p(x_s) = logsumexp_k log α_T. Forward only: its Hessian
    compiles several times faster than one through forward-backward."""

    def sequence(lb, on):
        def step(a, inp):
            l, o = inp
            return where(o, jax.scipy.special.logsumexp(a[:, None] + log_A, axis=0) + l, a), None

        a, _ = jax.lax.scan(step, log_pi + lb[0], (lb[1:], on[1:]))
        return jax.scipy.special.logsumexp(a)

    ll = jax.vmap(sequence)(log_b, w > 0)
    ws = w[:, 0]
    return jnp.sum(where(ws > 0, ws * ll, 0.0))


def _louis(model, to_params, u, X, w):
    """Louis' identity per row block: complete minus missing information (finite mixtures;
    `PPCA` / `FactorAnalysis` by `_louis_latent_factor`; HMMs go to `_oakes`, see `_route`)."""
    if isinstance(model, (PPCA, FactorAnalysis)):
        return _louis_latent_factor(model, to_params, u, X, w)

    def block(x, wb):
        lj = lambda v: model.log_joint_matrix(to_params(v), x)  # noqa: E731  (c, K)
        on = (wb > 0)[:, None]
        r = jax.nn.softmax(where(on, lj(u), 0.0), axis=1)
        rw = where(on, r * wb[:, None], 0.0)
        complete = -jax.hessian(lambda v: jnp.sum(where(rw > 0, rw * lj(v), 0.0)))(u)
        g = where((rw > 0)[..., None], jax.jacfwd(lj)(u), 0.0)  # (c, K, P)
        gc = g - jnp.einsum("nk,nkp->np", r, g)[:, None]
        return complete - jnp.einsum("nk,nkp,nkq->pq", rw, gc, gc)

    return chunked_sum_rows(block, (X, w), None, _width(model, u, X))


# --- PPCA / factor analysis: z | x ~ N(m, S) -----------------------------------------------------
def _factor_posterior(params, x):
    """z | x_n ~ N(m_n, S) (Tipping & Bishop 1999, eq. 6; Ghahramani & Hinton 1996):
    M = I + Wᵀ Ψ⁻¹ W, S = M⁻¹, m_n = S Wᵀ Ψ⁻¹ (x_n - μ), by Cholesky. ``(m (c, q), S (q, q))``."""
    D, q = params.W.shape
    psi = jnp.broadcast_to(params.noise_variance, (D,))
    Wp = params.W / psi[:, None]  # Ψ⁻¹ W
    M = jnp.eye(q, dtype=Wp.dtype) + params.W.T @ Wp
    c = jax.scipy.linalg.cho_factor(M, lower=True)
    S = jax.scipy.linalg.cho_solve(c, jnp.eye(q, dtype=Wp.dtype))
    m = jax.scipy.linalg.cho_solve(c, ((x - params.mean) @ Wp).T).T
    return m, 0.5 * (S + S.T)


def _factor_log_joint(params, x, z):
    """log p(x, z | θ) + const for one row: -½|z|² - ½ Σ_d [(x - μ - Wz)_d² / ψ_d + log ψ_d]."""
    D = x.shape[0]
    psi = jnp.broadcast_to(params.noise_variance, (D,))
    r = x - params.mean - params.W @ z
    return -0.5 * jnp.sum(z * z) - 0.5 * jnp.sum(r * r / psi + jnp.log(psi))


def _factor_q(params, m, S, x, wb):
    """Σ_n w_n E[log p(x_n, z | θ)] over z ~ N(m_n, S), closed form (+ const):
    E|z|² = |m|² + tr S, E(r_d - w_dᵀz)² = (r_d - w_dᵀm)² + w_dᵀ S w_d."""
    D = x.shape[1]
    psi = jnp.broadcast_to(params.noise_variance, (D,))
    r = x - params.mean - m @ params.W.T  # (c, D)
    wsw = jnp.einsum("dq,qp,dp->d", params.W, S, params.W)
    per = (-0.5 * (jnp.sum(m * m, 1) + jnp.trace(S))
           - 0.5 * jnp.sum((r * r + wsw) / psi + jnp.log(psi), 1))
    return jnp.sum(where(wb > 0, wb * per, 0.0))


def _louis_latent_factor(model, to_params, u, X, w):
    """Louis' identity for PPCA / factor analysis, exact: the complete information is -∇² of the
    closed-form E[ℓ_n], the missing information Σ_n w_n (B_n S B_nᵀ + ½ [tr(C_p S C_q S)]_pq) with
    B_n = ∂²ℓ_n/∂u∂z at m_n and C = ∂³ℓ/∂u∂z² (constant: ℓ is quadratic in z)."""
    params = to_params(u)
    q = params.W.shape[1]
    score = jax.grad(lambda v, x, z: _factor_log_joint(to_params(v), x, z))  # ∇_u ℓ
    _, S = _factor_posterior(params, X[:1])
    C = jax.jacfwd(jax.jacfwd(score, 2), 2)(u, X[0], jnp.zeros(q, X.dtype))  # (P, q, q)
    CS = C @ S
    quad = 0.5 * jnp.einsum("pij,qji->pq", CS, CS)

    def block(x, wb):
        m, S = _factor_posterior(params, x)
        complete = -jax.hessian(lambda v: _factor_q(to_params(v), m, S, x, wb))(u)
        B = jax.vmap(jax.jacfwd(score, 2), (None, 0, 0))(u, x, m)  # (c, P, q)
        wz = where(wb > 0, wb, 0.0)
        missing = jnp.einsum("n,npi,ij,nqj->pq", wz, B, S, B) + jnp.sum(wz) * quad
        return complete - missing

    return chunked_sum_rows(block, (X, w), None, _width(model, u, X))


# --- Oakes' identity: -d/du ∇_{u'} Q(u' | u) at u' = u -------------------------------------------
def _oakes(model, to_params, u, X, w):
    """I(u) = -[∂²Q/∂u'² + ∂²Q/∂u'∂u] at u' = u (Oakes 1999, eq. 4): `jax.jacfwd` of the score
    ∇_{u'} Q(u' | u) at u' = u, the E-step differentiated in u. Q per family: `_q_mixture`,
    `_q_latent_factor`, `_q_hmm` (``Q(v_new, v_old, x, w)``)."""
    if isinstance(model, HiddenMarkovModel):
        q = _q_hmm
    elif isinstance(model, (PPCA, FactorAnalysis)):
        q = _q_latent_factor
    else:
        q = _q_mixture

    def info(x, wb):
        f = lambda new, old: q(model, to_params, new, old, x, wb)  # noqa: E731
        return -jax.jacfwd(lambda v: jax.grad(f)(v, v))(u)

    if isinstance(model, HiddenMarkovModel):
        return info(X, w)
    return chunked_sum_rows(info, (X, w), None, _width(model, u, X))


def _q_mixture(model, to_params, new, old, x, wb):
    """Σ_n w_n Σ_k r_nk(old) log p(x_n, z_n = k | new)."""
    on = (wb > 0)[:, None]
    r = jax.nn.softmax(where(on, model.log_joint_matrix(to_params(old), x), 0.0), axis=1)
    rw = where(on, r * wb[:, None], 0.0)
    lj = model.log_joint_matrix(to_params(new), x)
    return jnp.sum(where(rw > 0, rw * lj, 0.0))


def _q_latent_factor(model, to_params, new, old, x, wb):
    """Σ_n w_n E_{z ~ p(z | x_n, old)}[log p(x_n, z | new)] (closed form, `_factor_q`)."""
    m, S = _factor_posterior(to_params(old), x)
    return _factor_q(to_params(new), m, S, x, wb)


def _q_hmm(model, to_params, new, old, X, w):
    """Σ_s w_s [Σ_k γ_1k log π_k + Σ_jk ξ_jk log A_jk + Σ_t Σ_k γ_tk log b_k(x_t)] with the
    posteriors at ``old`` as derivatives of the forward recursion (`_hmm_forward`): for
    F = Σ_s w_s log p(x_s), w_s γ_{s,t}(k) = ∂F/∂log b_{s,t,k}, Σ_s w_s γ_{s,1} = ∂F/∂log π and
    Σ_s w_s Σ_t ξ_{s,t} = ∂F/∂log A (Eisner 2016, "Inside-outside and forward-backward algorithms
    are just backprop") — the forward-backward smoother, exact; one scan is cheaper to compile
    under `jax.jacfwd` than forward-backward."""
    p_old, p = to_params(old), to_params(new)
    log_pi, log_A = safe_log(p_old.initial_probs), safe_log(p_old.transition_matrix)
    g_pi, g_A, g_b = jax.grad(_hmm_forward, (0, 1, 2))(log_pi, log_A, model._log_b(p_old, X), w)
    log_b = model._log_b(p, X)
    return (g_pi @ safe_log(p.initial_probs) + jnp.sum(g_A * safe_log(p.transition_matrix))
            + jnp.sum(where(g_b != 0, g_b * log_b, 0.0)))


def _width(model, u, X) -> int:
    return int(u.shape[0]) * int(model.n_components) * int(X.shape[1])


@compiled(static_argnames=("model", "include_prior", "method"))
def _information(model, include_prior, params, X, w, method):
    c = coordinates(model, params)
    u, unflatten = flatten(c.free)
    to_params = lambda v: c.to_params(unflatten(v))  # noqa: E731
    if method == "hessian":
        I = -_hessian(model, to_params, u, X, w)
    elif method == "louis":
        I = _louis(model, to_params, u, X, w)
    else:
        I = _oakes(model, to_params, u, X, w)
    if include_prior:  # the log posterior: + the prior's information -∇²_u log p̃(θ(u))
        I = I - jax.hessian(lambda v: jnp.asarray(_prior.log_prior(model, to_params(v)),
                                                  u.dtype))(u)
    I = 0.5 * (I + I.T)
    return ObservedInformation(I, u, null_matrix(c.free, c.null(c.free)), is_fixed(u))


@compiled(static_argnames=("model",))
def _standard_errors(model, params, info):
    """Delta method: SE(θ_i) = sqrt((J V (VᵀIV)⁻¹ VᵀJᵀ)_ii), J = ∂θ/∂u (fixed coordinates: 0)."""
    c = coordinates(model, params)
    u, unflatten = flatten(c.free)
    _, unflatten_params = flatten(params)
    J = jax.jacfwd(lambda v: flatten(c.to_params(unflatten(v)))[0])(u)  # (M, P)
    J = where(info.fixed[None, :], 0.0, J)
    V, C = _reduced_factor(info)
    Z = jax.scipy.linalg.solve_triangular(C, (J @ V).T, lower=True)  # (m, M)
    se = unflatten_params(jnp.sqrt(jnp.sum(Z * Z, 0)))
    if isinstance(model, (PPCA, FactorAnalysis)) and params.W.shape[-1] > 1:
        se = se._replace(W=jnp.full_like(se.W, jnp.nan))  # rotation: W not identifiable
    return se
