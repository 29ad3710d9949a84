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
    missing = [f for f in expected if not hasattr(params, f)]
    if missing:
        raise ValueError(
            f"params is {_describe(params)} without the field(s) {missing} that {model_name} "
            f"reads (it expects the fields {tuple(expected)}); pass parameters made for this "
            "model, e.g. from model.init(key, X), in the order (model, params, X).")
    for field, shape in expected.items():
        got = tuple(np.shape(getattr(params, field)))
        if got != tuple(shape):
            raise ValueError(
                f"params.{field} has shape {got} but {model_name} expects {tuple(shape)}; pass "
                "parameters made for this model (same n_components and features), e.g. from "
                "model.init(key, X)."
            )


def as_key(key, name: str = "key"):
    """A `jax.random` key from ``key``: keys (typed, or legacy raw ``uint32[2]``) pass through; an
    int seed (as scikit-learn's ``random_state``) becomes ``jax.random.key(seed)``. Anything else
    is a ValueError (e.g. data passed where the key goes)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    shape = tuple(np.shape(key)) if dtype is not None else None
    if dtype is not None and np.issubdtype(dtype, np.integer) and shape == ():
        return jax.random.key(key)  # an integer array scalar (also traced): a seed
    if dtype == np.uint32 and shape == (2,):
        return key  # a legacy jax.random.PRNGKey
    got = (f"an array of shape {shape} and dtype {dtype}" if dtype is not None
           else f"{type(key).__name__} {key!r}"[:80])
    raise ValueError(
        f"{name} must be a jax.random key (e.g. jax.random.key(0)) or an int seed, got {got}. "
        "The key comes first: model.init(key, X).")


def _is_model(x) -> bool:
    return hasattr(x, "e_step") and hasattr(x, "log_likelihood") and not isinstance(x, type)


def _describe(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)}"
    if hasattr(x, "_fields"):
        return f"a {type(x).__name__} (parameters?)"
    return f"a {type(x).__name__}"


def fit_arguments(model, params, X, fn: str = "jaxem.fit", signature: str = "model, params, X"
                  ) -> None:
    """ValueError naming the order ``fn(model, params, X)`` when the arguments are swapped: the
    model not first, or parameters where the data go."""
    order = f"{fn} takes ({signature}) in that order"
    if not _is_model(model):
        moved = [n for n, v in (("params", params), ("X", X)) if _is_model(v)]
        extra = f"; the model was passed as {moved[0]}" if moved else ""
        hint = (" (a jaxem.sklearn estimator has its own .fit(X))"
                if hasattr(model, "get_params") else "")
        raise ValueError(
            f"{order}: the first argument must be a jaxem model such as jaxem.GaussianMixture(3), "
            f"got {_describe(model)}{extra}{hint}.")
    if isinstance(X, dict) or hasattr(X, "_fields"):
        raise ValueError(
            f"{order}: X must be the data array (N, D), got {_describe(X)}; params and X look "
            f"swapped. Call {fn}(model, params, X).")
    params_match(model, params, X, fn)


def tree_summary(tree) -> str:
    """``Type(field: shape, ...)`` of a pytree of arrays, for error messages."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    parts = [f"{jax.tree_util.keystr(p)}: {tuple(np.shape(l))}" for p, l in leaves[:8]]
    more = ", ..." if len(leaves) > 8 else ""
    return f"{type(tree).__name__}({', '.join(parts)}{more})"


def _expected_params(model, X) -> str:
    """What ``model.init(key, X)`` returns (abstractly: nothing is computed), or ''."""
    try:
        return " " + tree_summary(jax.eval_shape(lambda: model.init(jax.random.key(0), X)))
    except Exception:  # noqa: BLE001 -- only a hint in an error message
        return ""


def params_match(model, params, X, fn: str = "jaxem.fit") -> None:
    """ValueError if ``params`` lack what ``model`` reads (a dict or another family's params):
    names the structure given and the one ``model.init`` makes."""
    try:
        model.n_features(params)
        shapes = getattr(model, "_param_shapes", None)
        if shapes is not None:
            shapes(params)
    except (AttributeError, KeyError, TypeError, IndexError) as err:
        init = getattr(model, "init", None)
        expected = _expected_params(model, X) if init is not None else ""
        raise ValueError(
            f"params do not match {type(model).__name__}: got {tree_summary(params)}, but it "
            f"expects{expected or ' its own parameter NamedTuple'} as made by model.init(key, X) "
            f"({type(err).__name__}: {err}). {fn} takes (model, params, X).") from err
