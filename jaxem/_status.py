"""Status codes returned by `jaxem.fit` (a bit field: several may be set at once)."""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from ._where import where


class Status(enum.IntFlag):
    """Named outcomes of a fit. ``0`` means success; any other value is a sum of these flags.

    The flags are bits so that, for instance, an emptied component and a fit that ran out of
    iterations can both be reported. `describe_status` turns a code into the messages below.
    """

    OK = 0
    INVALID_INPUT = 1
    NONFINITE = 2
    EMPTY_COMPONENT = 4
    MAX_ITER_REACHED = 8
    Q_DECREASED = 16
    TOO_FEW_SAMPLES = 32
    STEP_REJECTED = 64


_MESSAGES = {
    Status.INVALID_INPUT: (
        "invalid input: X or weights contain NaN/inf, weights are negative, the starting "
        "parameters are not finite, or labels lie outside [-1, n_components); the parameters "
        "were returned unchanged. Clean the data (drop or impute non-finite rows, use weight 0 "
        "for padding, -1 for unknown labels), start from finite parameters, and fit again."
    ),
    Status.NONFINITE: (
        "non-finite values appeared during EM (usually a singular covariance, or values beyond "
        "the dtype's range); the fit stopped and returned the last parameters whose "
        "log-likelihood was finite, or the starting parameters unchanged if their log-likelihood "
        "already was not (check them: e.g. covariances must be positive definite). Remedies: "
        "rescale X (e.g. standardize it) or use float64; for Gaussian mixtures and HMMs increase "
        "reg_covar or use fewer components; for a GradientMStep lower the learning rate."
    ),
    Status.EMPTY_COMPONENT: (
        "a component lost (almost) all of its mass; its parameters were kept at their previous "
        "values and its weight is ~0. Use fewer components or a different initialisation."
    ),
    Status.MAX_ITER_REACHED: (
        "max_iter was reached before the change of the log-likelihood fell below tol; increase "
        "max_iter or tol. (Implicit gradients of an unconverged fit are only approximate.)"
    ),
    Status.Q_DECREASED: (
        "a generalized-EM M-step lowered the Q-function (the optimizer overshot); lower the "
        "learning rate, or use GradientMStep(..., safe=True) to reject such steps."
    ),
    Status.TOO_FEW_SAMPLES: (
        "fewer rows with positive weight than n_components; the parameters were returned "
        "unchanged. Use fewer components or more data."
    ),
    Status.STEP_REJECTED: (
        "no step accepted: every optimizer step of a generalized-EM M-step (GradientMStep, "
        "safe=True) was non-finite or lowered the Q-function, so the parameters stopped moving; "
        "the fit stopped there and is not converged (the last accepted parameters were returned). "
        "Lower the learning rate or use another optimizer."
    ),
}

# Flags that stop the EM loop at once.
FATAL = Status.INVALID_INPUT | Status.NONFINITE | Status.TOO_FEW_SAMPLES | Status.STEP_REJECTED


def describe_status(code) -> str:
    """Human-readable description of a `FitResult.status` code.

    Args:
      code: an int (or scalar array) returned as ``FitResult.status``.

    Returns:
      ``"ok"`` for 0, otherwise one sentence per flag that is set, joined by newlines.

    Example:
      >>> import jaxem
      >>> jaxem.describe_status(0)
      'ok'
    """
    code = int(code)
    if code == 0:
        return "ok"
    msgs = [msg for flag, msg in _MESSAGES.items() if code & flag]
    unknown = code & ~sum(_MESSAGES)
    if unknown:
        msgs.append(f"unknown status bits {unknown}")
    return "\n".join(msgs)


def flag(condition, status: Status) -> jax.Array:
    """``status`` as an int32 array where ``condition`` holds, else 0."""
    return where(condition, jnp.int32(int(status)), jnp.int32(0))
