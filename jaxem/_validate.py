"""Input checks: `ValueError` outside jit, a status code under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._precision import warn_if_downcast
from ._status import Status, flag
from ._where import all_finite, where


def is_concrete(*xs) -> bool:
    """True if no leaf of ``xs`` is a tracer (we are outside jit/vmap/grad)."""
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(xs))


def device_array(a, dtype=None):
    """``jnp.asarray(a, dtype)`` without compiling anything for host data.

    ``jnp.asarray`` of a NumPy array compiles (and runs) a copying program per shape, ~20 ms of a
    cold fit. Host data is copied here by NumPy instead, then handed to the device: the copy keeps
    the result independent of the caller's (writeable) array, which `jax.device_put` would alias on
    CPU (jax-ml/jax#37830). JAX arrays and tracers are cast by `jnp.asarray` as before.
    """
    if isinstance(a, (jax.Array, jax.core.Tracer)):
        return jnp.asarray(a, dtype)
    a = np.asarray(a)
    dtype = jax.dtypes.canonicalize_dtype(a.dtype if dtype is None else dtype)
    return jax.device_put(np.array(a, dtype=dtype, order="C", copy=True))


def as_data(X, weights=None, n_features: int | None = None, name: str = "X"):
    """Check shapes (always: they are static) and cast; returns ``(X, weights)``.

    ``X`` becomes a floating array (float32 unless it already is float64/float32 and x64 is on;
    float16 and bfloat16 are computed in float32);
    ``weights`` becomes an array of ``X``'s dtype, ones when None.
    """
    if not isinstance(X, (jax.Array, jax.core.Tracer)):
        X = np.asarray(X)
    if jnp.issubdtype(X.dtype, jnp.complexfloating):
        raise ValueError(
            f"{name} is complex ({X.dtype}); jaxem's models are for real data. Pass the real "
            f"and imaginary parts as separate columns, e.g. np.concatenate([{name}.real, "
            f"{name}.imag], axis=1)."
        )
    # Integers and half precision (float16, bfloat16: eps ~1e-3, max 6.5e4 for float16) are
    # computed in float32 (or the default float): second moments of half-precision data overflow.
    half = jnp.issubdtype(X.dtype, jnp.floating) and jnp.dtype(X.dtype).itemsize < 4
    warn_if_downcast(X.dtype, name, stacklevel=4)  # float64 computed in float32: say so, once
    X = device_array(X, None if jnp.issubdtype(X.dtype, jnp.floating) and not half
                     else jnp.float32 if half else jnp.result_type(float))
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {X.shape}; "
            "reshape a single feature with X.reshape(-1, 1) or a single sample with X.reshape(1, -1)."
        )
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {X.shape}); pass at least one column.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the parameters were made for {n_features}; "
            "pass data with the same columns as the data the model was initialised/fitted on."
        )
    if weights is None:  # (a NumPy constant would be baked into a caller's jit)
        weights = np.ones(X.shape[0], X.dtype) if is_concrete(X) else jnp.ones(X.shape[0], X.dtype)
    if np.shape(weights) != (X.shape[0],):
        raise ValueError(
            f"weights must have shape (n_samples,) = ({X.shape[0]},), got {np.shape(weights)}."
        )
    if not isinstance(weights, (jax.Array, jax.core.Tracer)):
        weights = np.asarray(weights, X.dtype)
    # X split by rows over devices (or processes): the weights split the same way.
    from ._shard import place_like_rows

    return X, device_array(place_like_rows(X, weights), X.dtype)


def _on_one_device(a) -> bool:
    return not isinstance(a, jax.Array) or len(a.sharding.device_set) == 1


# The message for NaN/inf in X (``missing="marginalize"`` lets the Gaussian families take NaN).
_NONFINITE_FIX = ("drop or impute them, or give them weight 0 and replace them with any finite "
                  "value; GaussianMixture, PPCA and FactorAnalysis integrate NaN entries out as "
                  "missing values with missing=\"marginalize\".")
_INF_FIX = ("missing values must be NaN (missing=\"marginalize\"); inf is never valid: replace it "
            "with NaN or a finite value.")


def _finite_x(X, allow_nan: bool = False):
    """Whether every entry of X is finite (``allow_nan``: not ±inf), as a fused float reduction."""
    # Σ 0·a is NaN exactly when some a is NaN or ±inf (a max reduction may drop NaNs, notably
    # when it is split over devices).
    if allow_nan:
        X = jnp.where(jnp.isnan(X), 0.0, X)
    return jnp.isfinite(jnp.sum(X * 0))


def _summary(X, w, allow_nan=False):
    """(X all finite, w all finite, min w, rows with w > 0) as one small reduction on the devices
    that hold X: nothing of X is copied to the host (nor needs to be addressable here)."""
    finite = lambda a: jnp.isfinite(jnp.sum(a * 0))
    return (_finite_x(X, allow_nan), finite(w),
            jnp.min(jnp.where(jnp.isnan(w), 0.0, w), initial=0.0),
            jnp.sum(jnp.where(w > 0, 1.0, 0.0)))


_summary_jit = jax.jit(_summary, static_argnums=2)


def _check_distributed(X, weights, n_components, allow_nan=False) -> None:
    """`check_values` for X split over several devices or processes (a jitted reduction)."""
    x_ok, w_ok, w_min, n_pos = (np.asarray(v) for v in _summary_jit(X, weights, allow_nan))
    if not x_ok:
        raise ValueError("X contains inf; " + _INF_FIX if allow_nan else
                         "X contains NaN or inf; " + _NONFINITE_FIX)
    if not w_ok:
        raise ValueError("weights contain NaN or inf; pass finite, non-negative weights.")
    if w_min < 0:
        raise ValueError(
            f"weights must be non-negative (0 marks padding rows); got a minimum of {w_min}.")
    if n_components is not None and n_components > int(n_pos):
        raise ValueError(
            f"n_components={n_components} is larger than the number of rows with positive "
            f"weight ({int(n_pos)}); use n_components <= {int(n_pos)} or pass more data.")


def check_values(X, weights, n_components: int | None = None, allow_nan: bool = False) -> None:
    """Raise `ValueError` for bad values. Only call on concrete (non-traced) arrays. Arrays split
    over several devices or processes are checked where they live (no host copy). ``allow_nan``:
    NaN entries of X are missing values (a model with ``missing="marginalize"``); inf still
    fails."""
    if not (_on_one_device(X) and _on_one_device(weights)):
        return _check_distributed(X, weights, n_components, allow_nan)
    Xn = np.asarray(X)
    wn = np.asarray(weights)
    ok = (lambda a: ~np.isinf(a)) if allow_nan else np.isfinite
    # Row blocks: no N x D boolean temporary for a large X.
    if not all(ok(Xn[i:i + 65536]).all() for i in range(0, Xn.shape[0], 65536)):
        bad = np.flatnonzero(~np.all(ok(Xn), axis=1))
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"X contains {what} in {bad.size} row(s) (first: {bad[:5].tolist()}); "
                         + (_INF_FIX if allow_nan else _NONFINITE_FIX))
    if not np.all(np.isfinite(wn)):
        raise ValueError("weights contain NaN or inf; pass finite, non-negative weights.")
    if np.any(wn < 0):
        raise ValueError(
            "weights must be non-negative (0 marks padding rows); got a minimum of "
            f"{wn.min()}."
        )
    if n_components is not None:
        n_pos = int(np.sum(wn > 0))
        if n_components > n_pos:
            raise ValueError(
                f"n_components={n_components} is larger than the number of rows with positive "
                f"weight ({n_pos}); use n_components <= {n_pos} or pass more data."
            )


def validate(X, weights, n_components: int | None = None, allow_nan: bool = False) -> None:
    """`check_values` when concrete; a no-op under tracing (see `status_of_data`)."""
    if is_concrete(X, weights):
        check_values(X, weights, n_components, allow_nan)


def status_of_data(X, weights, n_components: int | None = None,
                   allow_nan: bool = False) -> jax.Array:
    """The traced counterpart of `check_values`: an int32 status code."""
    # Σ 0·a is NaN exactly when some entry is NaN or ±inf; unlike all(isfinite(.)) it is a float
    # reduction that XLA fuses (no N x D boolean temporary), and unlike max |a| < inf it keeps a
    # NaN when the reduction is split over devices (a max may drop NaNs).
    finite = lambda a: jnp.isfinite(jnp.sum(a * 0))
    bad = ~_finite_x(X, allow_nan) | ~finite(weights) | (jnp.min(weights, initial=0.0) < 0)
    code = flag(bad, Status.INVALID_INPUT)
    if n_components is not None:
        n_pos = jnp.sum(where(weights > 0, 1.0, 0.0), dtype=X.dtype)
        code = code | flag(n_pos < n_components, Status.TOO_FEW_SAMPLES)
    return code


def _inexact_leaves(tree):
    return [l for l in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.result_type(l), jnp.inexact)]


def check_params_finite(params, name: str = "params") -> None:
    """Raise `ValueError` if a floating-point leaf of concrete ``params`` is NaN or ±inf (no-op under
    tracing: `jaxem.fit` then reports ``Status.INVALID_INPUT``)."""
    leaves = _inexact_leaves(params)
    if not leaves or not is_concrete(leaves):
        return
    fields = getattr(params, "_fields", None)
    bad = [i for i, l in enumerate(leaves) if not _all_finite_concrete([l])]
    if bad:
        where_ = (f" (field {fields[bad[0]]!r})" if fields and len(fields) == len(leaves) else "")
        raise ValueError(
            f"{name} contain NaN or inf{where_}; start from finite parameters, e.g. those of "
            "model.init(key, X).")


_finite_leaves = jax.jit(all_finite)
_max_abs = jax.jit(lambda x: jnp.max(jnp.abs(x)))


def _all_finite_concrete(leaves) -> bool:
    """Whether every entry of the concrete arrays ``leaves`` is finite: on the host for arrays it
    can read, by a jitted reduction for arrays spread over processes (never fetched whole)."""
    if all(getattr(l, "is_fully_addressable", True) for l in leaves):
        return all(bool(np.all(np.isfinite(np.asarray(l)))) for l in leaves)
    return bool(_finite_leaves(leaves))


def check_init_result(params, X) -> None:
    """Raise `ValueError` if ``model.init`` on concrete data produced non-finite parameters: X is
    finite (checked before), so its scale overflowed (or underflowed) the dtype."""
    leaves = _inexact_leaves(params)
    if not leaves or not is_concrete(leaves):
        return
    if _all_finite_concrete(leaves):
        return
    dtype = jnp.result_type(X)
    big = float(_max_abs(X)) if np.size(X) else 0.0
    raise ValueError(
        f"model.init gave non-finite parameters: X's scale (max |x| = {big:.3g}) is beyond what "
        f"{dtype.name} holds in second moments (x² up to {float(jnp.finfo(dtype).max):.3g}); "
        "rescale X (e.g. standardize it), or pass float64 data with jax_enable_x64.")


def finite_rows(X, what: str, name: str = "X", allow_nan: bool = False) -> None:
    """ValueError naming the rows of a concrete ``X`` that hold NaN or inf (for ``what``;
    ``allow_nan``: inf only)."""
    Xn = np.asarray(X)
    bad = np.flatnonzero(~np.all(~np.isinf(Xn) if allow_nan else np.isfinite(Xn), axis=1))
    if bad.size:
        raise ValueError(
            f"{name} contains NaN or inf in {bad.size} row(s) (first: {bad[:5].tolist()}); {what} "
            "needs finite rows: drop or impute them first."
        )


def check_sample_params(weights, *arrays, names=()) -> None:
    """ValueError (concrete params only) if mixture ``weights`` are not a distribution or another
    parameter array is not finite: sampling from them would give garbage without an error."""
    if not is_concrete(weights, arrays):
        return
    w = np.asarray(weights)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.sum(w) > 0):
        raise ValueError(
            f"params.weights must be finite, non-negative and not all 0 to sample, got {w}; "
            "fit or initialise the model again (check the fit's status)."
        )
    for a, n in zip(arrays, names):
        if not np.all(np.isfinite(np.asarray(a))):
            raise ValueError(f"params.{n} contains NaN or inf; cannot sample from it (check the "
                             "fit's status).")
