"""Unconstrained coordinates of each family's parameters (for the observed information matrix).

Every family maps its params to a flat vector u of real coordinates and back (`coordinates`):

- probability vectors (mixture ``weights``, HMM ``initial_probs``, rows of ``transition_matrix``
  and of ``emission_probs``): log-probabilities v = log p, all K of them (back: p = softmax(v));
- ``means``, ``mean``, ``W``, the params of `MixtureModel` and of `HMM` emissions: themselves;
- full and tied ``covariances``: the lower triangle of the Cholesky factor L (Σ = L Lᵀ) with its
  diagonal as log L_dd, in row-major ``numpy.tril_indices`` order (back: Σ = L Lᵀ);
- diag and spherical ``covariances``, ``noise_variance``, Poisson ``rates``: logs (back: exp);
- Bernoulli ``probs``: logits (back: sigmoid).

The log-probability coordinates are one more than the free parameters: the likelihood is flat along
v -> v + c·1 (softmax is shift invariant). Such directions, where the likelihood is flat by
construction, form `null_space`: the shift of each probability vector, and for `PPCA` /
`FactorAnalysis` with q > 1 latent dimensions the rotations W -> W exp(A), A skew-symmetric (tangent
directions W A). A probability that is exactly 0 (a structural zero, e.g. an impossible transition
of a left-right HMM) gets the coordinate log 0 := -1e30 and is held fixed (`fixed`): it lies on the
boundary of the parameter space, where the likelihood has no curvature in it. So are the other
estimates that EM leaves on a boundary: Bernoulli probabilities clipped to ``min_prob`` or
``1 - min_prob`` (logit ∓1e30) and Poisson rates at ``min_rate`` (log rate -1e30), e.g. a feature
that is always 0 within a component.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._mixture import MixtureModel
from .models.bernoulli_mixture import BernoulliMixture
from .models.factor_analysis import FactorAnalysis
from .models.gaussian_mixture import GaussianMixture
from .models.hmm.categorical import CategoricalHMM
from .models.hmm.gaussian import GaussianHMM
from .models.hmm.generic import HMM
from .models.hmm.poisson import PoissonHMM
from .models.poisson_mixture import PoissonMixture
from .models.ppca import PPCA

# log 0 of a probability (finite: exp gives exactly 0 and zero gradients; see `jaxem.models.hmm`).
LOG_ZERO = -1e30


class Coordinates(NamedTuple):
    """``free``: a pytree of unconstrained arrays at params; ``to_params(free) -> params``;
    ``null(free) -> pytree like free`` of leaves ``(r_leaf, *leaf.shape)`` or None (directions
    in which the likelihood is flat by construction)."""

    free: Any
    to_params: Callable
    null: Callable


# --- building blocks ------------------------------------------------------------------------------
def _log_probs(p):
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), LOG_ZERO).astype(p.dtype)


def is_fixed(u):
    """Coordinates at ±1e30: held fixed (estimates on the boundary of the parameter space)."""
    return jnp.abs(u) >= -LOG_ZERO / 2


def _shift_directions(v):
    """``(r, *v.shape)``: one direction of ones per probability vector (the last axis of v)."""
    lead = v.shape[:-1]
    r = int(np.prod(lead, dtype=int))
    eye = jnp.eye(r, dtype=v.dtype).reshape((r,) + lead + (1,))
    return jnp.broadcast_to(eye, (r,) + v.shape)


def _tril(D):
    return np.tril_indices(D)


def _chol_free(S):
    """``(..., D, D)`` SPD -> ``(..., D(D+1)/2)`` lower triangle of L with log diagonal."""
    D = S.shape[-1]
    L = jnp.linalg.cholesky(S)
    eye = np.eye(D, dtype=bool)
    L = jnp.where(eye, jnp.log(jnp.where(eye, L, 1.0)), L)
    i, j = _tril(D)
    return L[..., i, j]


def _chol_to_cov(c, D):
    i, j = _tril(D)
    L = jnp.zeros(c.shape[:-1] + (D, D), c.dtype).at[..., i, j].set(c)
    eye = np.eye(D, dtype=bool)
    L = jnp.where(eye, jnp.exp(L), L)
    return L @ jnp.swapaxes(L, -1, -2)


def _cov_free(ct, cov):
    return _chol_free(cov) if ct in ("full", "tied") else jnp.log(cov)


def _cov_params(ct, c, D):
    return _chol_to_cov(c, D) if ct in ("full", "tied") else jnp.exp(c)


# --- families -------------------------------------------------------------------------------------
def _gaussian_mixture(model, params):
    ct, D = model.covariance_type, params.means.shape[-1]
    free = (_log_probs(params.weights), params.means, _cov_free(ct, params.covariances))

    def to_params(f):
        return type(params)(jax.nn.softmax(f[0]), f[1], _cov_params(ct, f[2], D))

    return Coordinates(free, to_params, lambda f: (_shift_directions(f[0]), None, None))


def _product_mixture(model, params, forward, inverse):
    theta = model._theta(params)
    free = (_log_probs(params.weights), inverse(theta))
    return Coordinates(free, lambda f: model._make(jax.nn.softmax(f[0]), forward(f[1])),
                       lambda f: (_shift_directions(f[0]), None))


def _latent_factor(model, params):
    free = (params.mean, params.W, jnp.log(params.noise_variance))

    def null(f):
        q = f[1].shape[-1]
        i, j = np.triu_indices(q, 1)
        A = np.zeros((len(i), q, q))
        A[np.arange(len(i)), i, j], A[np.arange(len(i)), j, i] = 1.0, -1.0
        return (None, jnp.einsum("dq,rqp->rdp", f[1], A.astype(f[1].dtype)), None)

    return Coordinates(free, lambda f: type(params)(f[0], f[1], jnp.exp(f[2])), null)


def _hmm(model, params):
    """Initial and transition probabilities as log-probabilities, then the emission's fields."""
    if isinstance(model, GaussianHMM):
        ct, D = model.covariance_type, params.means.shape[-1]
        emit = (params.means, _cov_free(ct, params.covariances))
        emit_back = lambda e: (e[0], _cov_params(ct, e[1], D))  # noqa: E731
        emit_null = lambda e: (None, None)  # noqa: E731
    elif isinstance(model, CategoricalHMM):
        emit = (_log_probs(params.emission_probs),)
        emit_back = lambda e: (jax.nn.softmax(e[0], -1),)  # noqa: E731
        emit_null = lambda e: (_shift_directions(e[0]),)  # noqa: E731
    elif isinstance(model, PoissonHMM):
        emit = (jnp.log(params.rates),)
        emit_back = lambda e: (jnp.exp(e[0]),)  # noqa: E731
        emit_null = lambda e: (None,)  # noqa: E731
    else:  # jaxem.HMM: the user's emission pytree, unconstrained as given
        emit = (params.emission,)
        emit_back = lambda e: (e[0],)  # noqa: E731
        emit_null = lambda e: (jax.tree_util.tree_map(lambda _: None, e[0]),)  # noqa: E731
    free = (_log_probs(params.initial_probs), _log_probs(params.transition_matrix)) + emit

    def to_params(f):
        return type(params)(jax.nn.softmax(f[0]), jax.nn.softmax(f[1], -1), *emit_back(f[2:]))

    def null(f):
        return (_shift_directions(f[0]), _shift_directions(f[1])) + emit_null(f[2:])

    return Coordinates(free, to_params, null)


def coordinates(model, params) -> Coordinates:
    """The unconstrained coordinates of ``params`` for ``model`` (see the module docstring)."""
    if isinstance(model, GaussianMixture):
        return _gaussian_mixture(model, params)
    if isinstance(model, BernoulliMixture):  # estimates clipped to the bounds: fixed (boundary)
        lo, hi = model.min_prob, 1.0 - model.min_prob
        return _product_mixture(model, params, jax.nn.sigmoid, lambda p: jnp.where(
            p <= lo, LOG_ZERO, jnp.where(p >= hi, -LOG_ZERO, jnp.log(p) - jnp.log1p(-p))))
    if isinstance(model, PoissonMixture):
        return _product_mixture(model, params, jnp.exp, lambda r: jnp.where(
            r <= model.min_rate, LOG_ZERO, jnp.log(r)))
    if isinstance(model, (PPCA, FactorAnalysis)):
        return _latent_factor(model, params)
    if isinstance(model, (GaussianHMM, CategoricalHMM, PoissonHMM, HMM)):
        return _hmm(model, params)
    if isinstance(model, MixtureModel):
        return Coordinates(params, lambda f: f, lambda f: jax.tree_util.tree_map(lambda _: None, f))
    raise ValueError(
        f"standard errors are not implemented for {type(model).__name__}; supported: "
        "GaussianMixture, BernoulliMixture, PoissonMixture, PPCA, FactorAnalysis, MixtureModel, "
        "GaussianHMM, CategoricalHMM, PoissonHMM, HMM.")


# --- flat vectors ---------------------------------------------------------------------------------
def flatten(tree):
    """``(u (P,), unflatten)`` for a pytree of arrays (all of one dtype)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    shapes = [jnp.shape(l) for l in leaves]
    sizes = [int(np.prod(s, dtype=int)) for s in shapes]
    u = jnp.concatenate([jnp.ravel(l) for l in leaves]) if leaves else jnp.zeros(0)
    splits = np.cumsum(sizes)[:-1]

    def unflatten(v):
        parts = jnp.split(v, splits) if len(sizes) > 1 else [v]
        return jax.tree_util.tree_unflatten(treedef, [p.reshape(s) for p, s in zip(parts, shapes)])

    return u, unflatten


def null_matrix(free, null_tree) -> jax.Array:
    """``(P, r)`` the null directions of ``null_tree`` (leaves ``(r_i, *shape_i)`` or None) as
    columns in the flat coordinates of ``free``."""
    leaves = jax.tree_util.tree_leaves(free)
    nulls = jax.tree_util.tree_flatten(null_tree, is_leaf=lambda x: x is None)[0]
    dtype = leaves[0].dtype if leaves else jnp.float32
    cols, offset = [], 0
    P = sum(int(np.size(l)) for l in leaves)
    for leaf, nl in zip(leaves, nulls):
        n = int(np.size(leaf))
        if nl is not None and nl.shape[0]:
            block = jnp.zeros((P, nl.shape[0]), dtype)
            cols.append(block.at[offset:offset + n].set(nl.reshape(nl.shape[0], n).T))
        offset += n
    return jnp.concatenate(cols, 1) if cols else jnp.zeros((P, 0), dtype)
