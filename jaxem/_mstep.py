"""M-step strategies used by `jaxem.fit`: the family's closed form, or optax ascent on Q."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ClosedFormMStep:
    """The model's own closed-form maximiser of Q (its fused, streamed ``em_update``)."""

    def init(self, model, params, X, w):
        return ()

    def update(self, model, params, state, X, w):
        """Returns ``(new_params, new_state, log_likelihood_at_params, status)``."""
        new, ll, status = model.em_update(params, X, w)
        return new, state, ll, jnp.asarray(status, jnp.int32)
