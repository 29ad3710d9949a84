"""Argument checks shared by the models and drivers: each raises a `ValueError` naming the argument.

One home for "n_components must be a positive int" and friends, so every model, `jaxem.fit`,
`jaxem.fit_restarts` and `jaxem.select_n_components` say the same thing the same way. The checks run
on Python values (configuration, static arguments) and on concrete arrays only: under a trace they
are skipped (a traced `tol` cannot be inspected; the status code reports what it can).
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (a Python or NumPy integer; not a bool, str or float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def optional_positive_int(name: str, value) -> int | None:
    """None, or `positive_int`."""
    return None if value is None else positive_int(name, value)


def _real(name: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return float(value)


def nonnegative_float(name: str, value) -> float:
    """``value`` as a finite float >= 0."""
    v = _real(name, value, "a finite float >= 0")
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}.")
    return v


def float_in_open_interval(name: str, value, lo: float, hi: float) -> float:
    """``value`` as a float in (lo, hi)."""
    v = _real(name, value, f"a float in ({lo}, {hi})")
    if not lo < v < hi:
        raise ValueError(f"{name} must be a float in ({lo}, {hi}), got {value!r}.")
    return v


def positive_float(name: str, value) -> float:
    """``value`` as a finite float > 0."""
    v = _real(name, value, "a finite float > 0")
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}.")
    return v


def one_of(name: str, value, options) -> None:
    """ValueError unless ``value`` is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(options)}.")


def tolerance(tol) -> None:
    """``tol`` finite and >= 0 (checked when concrete; a traced tol is the caller's business)."""
    if isinstance(tol, jax.core.Tracer):
        return
    t = np.asarray(tol)
    if t.ndim != 0 or not np.issubdtype(t.dtype, np.number) or np.iscomplexobj(t):
        raise ValueError(f"tol must be a real scalar, got {tol!r}.")
    if not (np.isfinite(t) and t >= 0):
        raise ValueError(
            f"tol must be finite and >= 0 (0 runs exactly max_iter iterations), got {tol!r}."
        )


def param_shapes(params, expected: dict, model_name: str) -> None:
    """ValueError if a field of ``params`` does not have its ``expected`` shape.

    ``expected`` maps a field name to a shape tuple; shapes are static, so this runs under jit too.
    """
    for field, shape in expected.items():
        got = tuple(np.shape(getattr(params, field)))
        if got != tuple(shape):
            raise ValueError(
                f"params.{field} has shape {got} but {model_name} expects {tuple(shape)}; pass "
                "parameters made for this model (same n_components and features), e.g. from "
                "model.init(key, X)."
            )
