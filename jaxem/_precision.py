"""Precision: float64 data computed in float32 when x64 is off (`PrecisionWarning`), and draws of
starting values that do not depend on the precision.

JAX computes in float32 unless ``jax_enable_x64`` is on, and casts float64 input down silently.
jaxem says so once per process. To compute in float64 without changing the global configuration,
run the calls inside JAX's scoped (thread-local) context::

    with jax.enable_x64(True):
        params = model.init(jax.random.key(0), X)
        result = jaxem.fit(model, params, X)

Random starting values (k-means++ seeding, random responsibilities, random loadings) are drawn in
float32 whatever the data's dtype, so the same key gives the same start in float32 and float64
(float64 draws add finer bits below float32's resolution: a draw differs only if it falls within
2⁻²⁴ of a boundary).
"""

from __future__ import annotations

import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np


class PrecisionWarning(UserWarning):
    """float64 input computed in float32 (``jax_enable_x64`` is off). Issued once per process.

    Get float64: ``with jax.enable_x64(True): ...`` around the jaxem calls (scoped, thread-local),
    or ``jax.config.update("jax_enable_x64", True)`` at start-up. Keep float32 and silence it: pass
    ``X.astype(np.float32)``, or ``warnings.simplefilter("ignore", jaxem.PrecisionWarning)``.

    Example:
      >>> import warnings, jaxem
      >>> issubclass(jaxem.PrecisionWarning, UserWarning)
      True
    """


_lock = threading.Lock()
_warned = [False]


def warn_if_downcast(dtype, name: str = "X", stacklevel: int = 3) -> None:
    """`PrecisionWarning` (once per process) if ``dtype`` is float64 and JAX computes it in
    float32 here (x64 off in this thread)."""
    if np.dtype(dtype) != np.float64 or jax.dtypes.canonicalize_dtype(np.float64) == np.float64:
        return
    with _lock:
        if _warned[0]:
            return
        _warned[0] = True
    warnings.warn(
        f"{name} is float64 but jax_enable_x64 is off, so jaxem computes in float32 (about 7 "
        "significant digits). For float64, run the calls inside `with jax.enable_x64(True):` "
        "(scoped to the block) or set jax.config.update('jax_enable_x64', True) at start-up; "
        f"to keep float32 and silence this, pass {name}.astype(numpy.float32). "
        "(Shown once per process.)", PrecisionWarning, stacklevel=stacklevel)


def uniform(key, shape, dtype) -> jax.Array:
    """U[0, 1) draws of ``dtype`` that agree across precisions: the float32 draw of ``key``, and
    for wider dtypes that draw plus finer bits from ``fold_in(key, 1)`` (still uniform on [0, 1),
    with float64's resolution)."""
    u = jax.random.uniform(key, shape, jnp.float32)
    if jnp.dtype(dtype).itemsize <= 4:
        return u.astype(dtype)
    fine = jax.random.uniform(jax.random.fold_in(key, 1), shape, dtype)
    # float32 uniforms are multiples of 2⁻²³ in [0, 1): u + 2⁻²³ fine stays below 1.
    return u.astype(dtype) + fine * 2.0**-23


def normal(key, shape, dtype) -> jax.Array:
    """Standard normal draws of ``dtype``, drawn in float32 (for starting values only: the same
    key gives the same start in every precision)."""
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)
