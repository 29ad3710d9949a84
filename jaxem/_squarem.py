"""SQUAREM: squared extrapolation of the EM map (Varadhan & Roland 2008, Scand. J. Statist. 35).

With T the EM map (E-step then M-step), one SQUAREM cycle from θ₀ is
  θ₁ = T(θ₀),  θ₂ = T(θ₁),  r = θ₁ - θ₀,  v = θ₂ - 2θ₁ + θ₀,
  α = clip(‖r‖ / ‖v‖, 1, α_max)                          (their step length S3),
  θ' = θ₀ + 2α r + α² v,                                  (α = 1 gives θ₂)
  θ₃ = T(θ')                                              (the stabilising EM step),
and the next cycle starts from θ₃ if log p(X | θ') ≥ log p(X | θ₀), else from θ₂ (the safeguard
that keeps the log-likelihood monotone: both are EM steps from a point at least as good as θ₀).
α_max starts at 1 and is multiplied by 4 each time the step length reaches it and the step is
accepted, and divided by 4 (not below 1) when such a step is rejected (the SQUAREM package's
defaults ``step.max0 = 1``, ``mstep = 4``). Every returned point is an M-step output, so it
satisfies the family's constraints even when θ' does not (a θ' outside them has a non-finite or
lower log-likelihood and is rejected).

Each cycle costs three EM-map evaluations; the log-likelihood at θ₀, θ₁ and θ' comes with them.
The fixed points are EM's own, so the implicit adjoint is unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._fixed import restore
from ._status import Status
from ._where import all_finite, select, where

_MSTEP = 4.0  # α_max's growth (and shrink) factor


class SquaremState(NamedTuple):
    inner: Any  # the wrapped M-step's state
    step_max: jax.Array  # α_max


def _vdot(a, b):
    return sum(jnp.vdot(x, y).real for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _combine(t0, r, v, alpha):
    """θ₀ + 2α r + α² v leaf by leaf (in each leaf's dtype)."""
    return jax.tree_util.tree_map(
        lambda a, b, c: (a + 2 * alpha * b + alpha**2 * c).astype(a.dtype), t0, r, v)


@dataclasses.dataclass(frozen=True)
class Squarem:
    """An M-step strategy that runs SQUAREM cycles of another one (``inner``): the same interface
    as `jaxem.ClosedFormMStep` / `jaxem.GradientMStep`, one cycle per `update`."""

    inner: Any

    def init(self, model, params, X, w):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        return SquaremState(self.inner.init(model, params, X, w), jnp.ones((), dtype))

    @property
    def fixed(self) -> tuple:
        """The inner step's fixed fields (their r = v = 0: extrapolation never moves them)."""
        return getattr(self.inner, "fixed", ())

    def update(self, model, params, state: SquaremState, X, w, labels=None):
        """One cycle: returns ``(next θ₀, state, log-likelihood at θ₀, status)``."""
        kw = {} if labels is None else {"labels": labels}
        T = lambda p, s: self.inner.update(model, p, s, X, w, **kw)
        t1, s1, ll0, st0 = T(params, state.inner)
        t2, s2, ll1, st1 = T(t1, s1)
        sub = lambda a, b: jax.tree_util.tree_map(jnp.subtract, a, b)
        r = sub(t1, params)
        v = sub(sub(t2, t1), r)
        dtype = ll0.dtype
        sr2, sv2 = _vdot(r, r), _vdot(v, v)
        alpha = jnp.sqrt(sr2 / where(sv2 > 0, sv2, 1.0)).astype(dtype)
        alpha = jnp.clip(where((sv2 > 0) & jnp.isfinite(alpha), alpha, 1.0), 1.0, state.step_max)
        t_ext = restore(_combine(params, r, v, alpha), params, self.fixed)  # fixed: bit for bit
        t3, s3, ll_ext, st3 = T(t_ext, s2)
        # Accept the extrapolation when it is at least as good as θ₀ and its EM step is finite.
        ok = jnp.isfinite(ll_ext) & (ll_ext >= ll0) & all_finite(t3)
        fatal = (st3 & int(Status.NONFINITE | Status.INVALID_INPUT)) != 0
        ok = ok & ~fatal
        new = select(ok, t3, t2)
        at_max = alpha >= state.step_max
        step_max = where(ok & at_max, state.step_max * _MSTEP,
                         where(~ok & at_max, jnp.maximum(state.step_max / _MSTEP, 1.0),
                               state.step_max))
        status = st0 | st1 | where(ok, st3, 0)
        inner_state = select(ok, s3, s2) if jax.tree_util.tree_leaves(s2) else s2
        return new, SquaremState(inner_state, step_max), ll0, status
