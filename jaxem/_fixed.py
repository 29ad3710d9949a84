"""Fixed parameters: fields of ``params`` kept at their starting values during a fit.

EM with some fields held fixed is an ECM algorithm (Meng & Rubin 1993, "Maximum likelihood
estimation via the ECM algorithm", Biometrika 80): the M-step maximises Q over the free fields with
the fixed ones at their values, so the log-likelihood still never decreases. When the maximiser of
one free field depends on a fixed one, the family computes it at the fixed value (e.g. a Gaussian
mixture's covariances about the fixed means, not about the unconstrained new means); fields whose
maximisers do not depend on each other are simply restored (hmmlearn's ``params="stmc"``, by
field name).
"""

from __future__ import annotations

from collections.abc import Mapping


def field_names(params) -> tuple:
    """Names of the top-level fields of ``params`` (a NamedTuple or a dict), else ()."""
    if isinstance(params, tuple) and hasattr(params, "_fields"):
        return tuple(params._fields)
    if isinstance(params, Mapping):
        return tuple(params.keys())
    return ()


def check_fixed(params, fixed) -> tuple:
    """``fixed`` (a name or a sequence of names) as a sorted tuple of field names of ``params``;
    ValueError listing the valid names otherwise."""
    if fixed is None:
        return ()
    names = (fixed,) if isinstance(fixed, str) else tuple(fixed)
    if not names:
        return ()
    valid = field_names(params)
    if not valid:
        raise ValueError(f"fixed= names fields of params, which must be a NamedTuple or a dict; got "
                         f"{type(params).__name__}.")
    unknown = [n for n in names if n not in valid]
    if unknown or not all(isinstance(n, str) for n in names):
        raise ValueError(f"fixed= got unknown field name(s) {unknown or list(names)}; the fields of "
                         f"{type(params).__name__} are {list(valid)}.")
    return tuple(sorted(set(names)))


def restore(new, old, fixed: tuple):
    """``new`` with the ``fixed`` fields taken from ``old`` (unchanged when fixed is empty)."""
    if not fixed:
        return new
    if isinstance(new, Mapping):
        return type(new)({**new, **{f: old[f] for f in fixed}})
    return new._replace(**{f: getattr(old, f) for f in fixed})


def maximize_fixed(model, stats, params, fixed: tuple, reference=None):
    """``model._maximize(stats, params)`` with the ``fixed`` fields held at ``params``' values:
    the family's ``_maximize_fixed`` hook (conditional maximisers, ECM) when it has one, then the
    fixed fields restored bit for bit. Returns ``(params, status)``. ``reference``: the point the
    statistics are about, when not the default of ``params`` (`jaxem.fit_online`)."""
    ref = {} if reference is None else {"reference": reference}
    if not fixed:
        return model._maximize(stats, params, **ref)
    hook = getattr(model, "_maximize_fixed", None)
    new, status = (hook(stats, params, fixed, **ref) if hook is not None
                   else model._maximize(stats, params, **ref))
    return restore(new, params, fixed), status



def free_part(params, fixed: tuple) -> dict:
    """``{name: value}`` of the fields of ``params`` not in ``fixed``."""
    get = (lambda f: params[f]) if isinstance(params, Mapping) else (lambda f: getattr(params, f))
    return {f: get(f) for f in field_names(params) if f not in fixed}


def with_free(anchor, free: dict):
    """``anchor`` with the fields in ``free`` replaced (the inverse of `free_part`)."""
    if isinstance(anchor, Mapping):
        return type(anchor)({**anchor, **free})
    return anchor._replace(**free)
