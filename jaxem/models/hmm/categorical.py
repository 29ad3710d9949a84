"""Categorical emissions: `CategoricalHMM` over integer symbols 0..C-1."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ... import _prior
from ..._precision import uniform
from ..._status import Status, flag
from ..._where import where
from ._base import HiddenMarkovModel
from ._inference import safe_log


class CategoricalHMMParams(NamedTuple):
    """initial_probs (K,), transition_matrix (K, K), emission_probs (K, C) (rows sum to 1)."""

    initial_probs: jax.Array
    transition_matrix: jax.Array
    emission_probs: jax.Array


@dataclasses.dataclass(frozen=True)
class CategoricalHMM(HiddenMarkovModel):
    """An HMM over symbols x_t ∈ {0..C-1}: p(x_t = c | z_t = k) = B_kc (Rabiner 1989's discrete
    HMM). Emission statistics n_kc = Σ w γ_t(k) [x_t = c]; M-step B_kc = n_kc / Σ_c' n_kc'.

    X is integer ``(T,)`` or ``(S, T)`` (floats holding integers are accepted); a non-integer or
    out-of-range symbol raises ValueError outside jit and gives ``Status.INVALID_INPUT`` under jit.

    Args:
      n_states: K.
      n_categories: C.
      inference: "sequential", "parallel" or "auto" (see `GaussianHMM`).
      prior: None (maximum likelihood), a `jaxem.HMMPrior` (MAP Baum-Welch: Dirichlet rows on π
        and A, and the emission prior (a number or (C,) α: Dirichlet rows on the emission probabilities); `jaxem.fit` then reports the log posterior), or
        "default" (resolved by `jaxem.fit` with `jaxem.default_prior`).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.randint(jax.random.key(0), (4, 60), 0, 3)
      >>> model = jaxem.CategoricalHMM(n_states=2, n_categories=3)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
    """

    n_states: int
    n_categories: int
    inference: str = "auto"
    prior: Any = None
    _frame_ndim = 1

    def __post_init__(self):
        self._check_config()
        if int(self.n_categories) < 1:
            raise ValueError(f"n_categories must be >= 1, got {self.n_categories}.")
        _prior.check_prior(self, _prior.HMMPrior)
        if isinstance(self.prior, _prior.HMMPrior) and not (
                self.prior.emission is None or isinstance(self.prior.emission, (float, tuple))):
            raise ValueError("CategoricalHMM's HMMPrior emission must be None or a number or "
                             "(C,) Dirichlet concentration >= 1.")

    @property
    def _support_message(self):
        return (f"CategoricalHMM needs integer symbols in [0, {self.n_categories}) "
                "(n_categories); recode X or raise n_categories")

    def n_features(self, params) -> int:
        return 1

    def _valid(self, X):
        x = X[..., 0]
        return (x % 1 == 0) & (x >= 0) & (x < self.n_categories)

    def _symbols(self, frames):
        return jnp.clip(frames[:, 0], 0, self.n_categories - 1).astype(jnp.int32)

    def _log_emission_fn(self, params):
        log_B = safe_log(params.emission_probs)  # (K, C)
        return lambda frames: log_B.T[self._symbols(frames)]

    def _emission_statistics(self, params, frames, rw):
        """``(K, C)`` expected symbol counts n_kc."""
        onehot = jax.nn.one_hot(self._symbols(frames), self.n_categories, dtype=rw.dtype)
        return rw.T @ onehot

    def _emission_maximize(self, est, params):
        p = _prior.active(self)
        if p is not None and p.emission is not None:  # Dirichlet rows: n_kc + α_c - 1
            est = est + (_prior._array(p.emission, est.dtype) - 1.0)
        row = jnp.sum(est, 1, keepdims=True)
        dtype = params.emission_probs.dtype
        empty = row[:, 0] <= 10 * jnp.finfo(dtype).eps * jnp.sum(row)
        B = where(empty[:, None], params.emission_probs, est / where(row > 0, row, 1.0))
        return params._replace(emission_probs=B.astype(dtype)), flag(jnp.any(empty),
                                                                     Status.EMPTY_COMPONENT)

    def _emission_log_prior(self, prior, params):
        return _prior.dirichlet_log_kernel(params.emission_probs, prior)

    def _emission_init(self, key, frames, w, pi, A):
        """Symbol frequencies times uniform(0.5, 1.5) noise per state, normalised."""
        counts = w @ jax.nn.one_hot(self._symbols(frames), self.n_categories, dtype=w.dtype)
        freq = (counts + 1.0) / jnp.sum(counts + 1.0)
        noise = 0.5 + uniform(key, (self.n_states, self.n_categories), w.dtype)
        B = freq[None] * noise
        return CategoricalHMMParams(pi, A, B / jnp.sum(B, 1, keepdims=True))

    def _draw(self, key, params, z):
        x = jax.random.categorical(key, safe_log(params.emission_probs)[z])
        return x.astype(jnp.int32)

    def _n_emission_parameters(self, params) -> int:
        return self.n_states * (self.n_categories - 1)
