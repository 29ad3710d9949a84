"""`HMM`: any emission density ``log_emission(emission_params, x) -> (K,)``, fitted by generalized EM."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ... import _prior
from ..._where import where
from ._base import HiddenMarkovModel, HMMPosterior
from ._inference import safe_log


class HMMParams(NamedTuple):
    """initial_probs (K,), transition_matrix (K, K), emission: the user's pytree."""

    initial_probs: jax.Array
    transition_matrix: jax.Array
    emission: Any


@dataclasses.dataclass(frozen=True)
class HMM(HiddenMarkovModel):
    """A K-state HMM with a user-written emission density, fitted by generalized Baum-Welch.

    ``log_emission(emission_params, x) -> (K,)`` gives log p(x | z = k, emission_params) for one
    frame ``x (D,)``. The E-step is exact forward-backward; the M-step (with
    ``m_step=jaxem.GradientMStep(optimizer)``) sets π and A in closed form from the expected counts
    (π_k ∝ Σ_s w_s γ_{s,1}(k), A_jk ∝ Σ_s w_s Σ_t ξ_{s,t}(j, k)) and moves ``emission`` by optax
    steps ascending the emission part of Q, Σ_s w_s Σ_t Σ_k γ_{s,t}(k) log p(x_{s,t} | k)
    (Dempster, Laird & Rubin 1977, §3 "GEM"). Write the emission in unconstrained coordinates
    (log-scales, logits; see `jaxem.MixtureModel`). The implicit adjoint differentiates the fixed
    point as the root of π - T_π(θ), A - T_A(θ) (the closed-form updates) and ∇_emission log p(X)
    (the emission's stationarity), so `jax.grad` through such a fit is exact at convergence.

    With ``prior=jaxem.HMMPrior(initial=α⁰, transition=α)`` the fit is MAP generalized EM
    (Dempster, Laird & Rubin 1977, §4.5): π and A get the closed-form posterior modes of their
    Dirichlet rows, π_k ∝ Σ_s w_s γ_{s,1}(k) + α⁰_k - 1 and A_jk ∝ Σ_s w_s Σ_t ξ_{s,t}(j, k) +
    α_jk - 1 (as `jaxem.GaussianHMM`'s), and `jaxem.fit` traces the log posterior
    (Σ_s w_s log p(x_s) + log p̃(θ)) / Σw. A prior on the emission params is a function
    ``emission=log_prior(emission_params) -> ()`` (its θ-dependent part, e.g.
    ``lambda e: -0.5 * jnp.sum(e["loc"] ** 2) / 100``): the optimizer ascends Q + log p̃ and the
    trace includes it. (A prior cannot go into ``log_emission``: that is per frame.)

    Args:
      log_emission: ``(emission_params, x (D,)) -> (K,)``, pure and jax-traceable.
      n_states: K.
      inference: "sequential", "parallel" or "auto" (see `jaxem.GaussianHMM`).
      prior: None (maximum likelihood) or a `jaxem.HMMPrior` whose ``emission`` is None or a
        function ``emission_params -> ()`` (the emission's log prior, up to a constant).

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxem
      >>> def log_emission(e, x):  # Laplace emissions, log-scales unconstrained
      ...     return jnp.sum(-jnp.abs(x - e["loc"]) / jnp.exp(e["log_b"]) - e["log_b"] - jnp.log(2.), -1)
      >>> model = jaxem.HMM(log_emission, n_states=2)
      >>> params = jaxem.HMMParams(jnp.full(2, .5), jnp.full((2, 2), .5),
      ...                          {"loc": jnp.array([[-1.], [1.]]), "log_b": jnp.zeros((2, 1))})
      >>> X = jax.random.laplace(jax.random.key(0), (2, 100, 1))
      >>> r = jaxem.fit(model, params, X, m_step=jaxem.GradientMStep(optax.adam(0.05), 10))
      >>> sticky = jaxem.HMM(log_emission, 2, prior=jaxem.HMMPrior(transition=((5., 1.), (1., 5.))))
      >>> r = jaxem.fit(sticky, params, X, m_step=jaxem.GradientMStep(optax.adam(0.05), 10))
    """

    log_emission: Callable
    n_states: int
    inference: str = "auto"
    prior: Any = None
    # set in closed form by `finish_m_step`: the implicit adjoint's root equations for them are
    # the closed-form update's residual, not the likelihood's gradient (`jaxem._adjoint`)
    closed_form_fields: ClassVar[tuple] = ("initial_probs", "transition_matrix")

    def __post_init__(self):
        self._check_config()
        if not callable(self.log_emission):
            raise ValueError("log_emission must be a function (emission_params, x) -> (K,).")
        if isinstance(self.prior, str):
            raise ValueError("jaxem.HMM has no default prior (prior='default'); pass "
                             "prior=jaxem.HMMPrior(initial=..., transition=...).")
        _prior.check_prior(self, _prior.HMMPrior)
        if isinstance(self.prior, _prior.HMMPrior) and not (
                self.prior.emission is None or callable(self.prior.emission)):
            raise ValueError("jaxem.HMM's HMMPrior emission must be None or a function "
                             "emission_params -> () (the emission's log prior).")

    def _emission_log_prior(self, prior, params):
        return prior(params.emission)

    def _m_step_log_prior(self, params):
        """The log prior the optimizer ascends: π and A held (`jax.lax.stop_gradient`), as in
        `q_function`; they get their closed-form posterior modes in `finish_m_step`."""
        sg = jax.lax.stop_gradient
        return _prior.log_prior(self, params._replace(
            initial_probs=sg(params.initial_probs),
            transition_matrix=sg(params.transition_matrix)))

    def n_features(self, params) -> int:
        return None

    def _log_emission_fn(self, params):
        return jax.vmap(lambda x: self.log_emission(params.emission, x))

    def q_function(self, params, posterior: HMMPosterior, X, weights=None, lengths=None):
        """Q with π and A held fixed (`jax.lax.stop_gradient`): the optimizer moves only the
        emission; π and A get their closed form in `finish_m_step`."""
        sg = jax.lax.stop_gradient
        held = params._replace(initial_probs=sg(params.initial_probs),
                               transition_matrix=sg(params.transition_matrix))
        return super().q_function(held, posterior, X, weights, lengths)

    def finish_m_step(self, new, posterior: HMMPosterior, X, w):
        """Closed-form π and A from the E-step's expected counts (called by `GradientMStep`);
        with a prior the Dirichlet posterior modes (counts + α - 1, normalised)."""
        ws = w[:, 0]
        n0 = ws @ posterior.state_probs[:, 0]
        nA = jnp.einsum("s,sjk->jk", ws, posterior.transition_counts)
        prior = _prior.active(self)
        if prior is not None:
            n0 = n0 + (_prior._array(prior.initial, n0.dtype) - 1.0)
            nA = nA + (_prior._array(prior.transition, nA.dtype) - 1.0)
        row = jnp.sum(nA, 1, keepdims=True)
        dtype = new.transition_matrix.dtype
        A = where(row > 0, nA / where(row > 0, row, 1.0), new.transition_matrix)
        return new._replace(initial_probs=(n0 / jnp.sum(n0)).astype(dtype),
                            transition_matrix=A.astype(dtype))

    def em_update(self, params, X, w, labels=None):
        raise NotImplementedError("jaxem.HMM has no closed-form emission M-step; fit it with "
                                  "m_step=jaxem.GradientMStep(optimizer).")

    def _statistics(self, params, X, w, labels=None):
        self.em_update(params, X, w)

    def init(self, key, X, lengths=None):
        raise NotImplementedError("jaxem.HMM takes the user's starting jaxem.HMMParams (no init).")

    def _draw(self, key, params, z):
        raise NotImplementedError("jaxem.HMM cannot sample: it has only the emission density.")

    def _n_emission_parameters(self, params) -> int:
        return int(sum(np.size(l) for l in jax.tree_util.tree_leaves(params.emission)))
