"""Saving and loading fitted models without extra dependencies: an ``.npz`` of the parameters'
leaves plus their structure and the model's configuration as JSON.

Parameters and `jaxem.FitResult` are pytrees of arrays, so the JAX ecosystem's checkpointing
(orbax-checkpoint) handles them as they are; `save` / `load` are the dependency-free route for
jaxem's own families. A model built from a user function (`jaxem.MixtureModel`) cannot be written
to JSON: its parameters are saved, and `load` asks for the model (``model=``) to rebuild them.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

_FORMAT = "jaxem-1"


def _registry():
    from . import models
    from .models import hmm

    return {name: obj for mod in (models, hmm) for name, obj in vars(mod).items()
            if isinstance(obj, type) and name != "HMM"}  # jaxem.HMM holds a user function


def _config(model) -> dict | None:
    """The model's class and fields as JSON-able values, or None if it holds a user function."""
    cls = type(model)
    if _registry().get(cls.__name__) is not cls or not dataclasses.is_dataclass(model):
        return None
    fields = {}
    for f in dataclasses.fields(model):
        v = getattr(model, f.name)
        if v is None or isinstance(v, (bool, int, float, str)):
            fields[f.name] = v
        elif f.name == "accumulate_dtype":
            fields[f.name] = np.dtype(v).name
        elif f.name == "prior" and dataclasses.is_dataclass(v):
            from ._prior import to_json

            fields[f.name] = to_json(v)
        else:
            return None
    return {"class": cls.__name__, "fields": fields}


def save(path, model, params) -> None:
    """Write ``model`` and ``params`` to ``path`` (an ``.npz`` file; the suffix is added if
    missing).

    Args:
      path: file name.
      model: a jaxem model (its configuration is stored as JSON; a `jaxem.MixtureModel` is not,
        pass it again to `load`).
      params: the parameters (any pytree of arrays, e.g. ``result.params``).

    Example:
      >>> import jax, jaxem, tempfile, os
      >>> X = jax.random.normal(jax.random.key(0), (100, 2))
      >>> model = jaxem.GaussianMixture(2)
      >>> params = model.init(jax.random.key(1), X)
      >>> path = os.path.join(tempfile.mkdtemp(), "gmm.npz")
      >>> jaxem.save(path, model, params)
      >>> model2, params2 = jaxem.load(path)
      >>> model2 == model
      True
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    leaves, treedef = jax.tree_util.tree_flatten(params)
    ptype = type(params)
    meta = {
        "format": _FORMAT,
        "model": _config(model),
        "params_type": ptype.__name__ if hasattr(ptype, "_fields") else None,
        "treedef": str(treedef),
        "n_leaves": len(leaves),
    }
    arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def load(path, model=None, like=None):
    """Read what `save` wrote: returns ``(model, params)``.

    Args:
      path: the ``.npz`` file.
      model: the model; needed only when the saved one holds a user function
        (`jaxem.MixtureModel`), which cannot be stored.
      like: a pytree with the parameters' structure (any values), needed when the parameters are
        not one of jaxem's NamedTuples (e.g. a dict for a `jaxem.MixtureModel`); its structure
        must equal the saved one.

    Example:
      >>> import os, tempfile, jax.numpy as jnp, jaxem
      >>> model, params = jaxem.PoissonMixture(2), jaxem.PoissonMixtureParams(
      ...     jnp.array([0.3, 0.7]), jnp.array([[1.0], [5.0]]))
      >>> path = os.path.join(tempfile.mkdtemp(), "pm.npz")
      >>> jaxem.save(path, model, params)
      >>> model2, params2 = jaxem.load(path)
      >>> model2 == model, params2.rates.tolist()
      (True, [[1.0], [5.0]])

      A `jaxem.MixtureModel` (a user function, not stored) is read back with its model and a
      pytree of the parameters' structure: ``jaxem.load(path, model=my_model, like=params0)``.
    """
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if "__meta__" not in f:
            raise ValueError(f"{path} was not written by jaxem.save.")
        meta = json.loads(bytes(f["__meta__"]).decode())
        leaves = [jax.numpy.asarray(f[f"leaf_{i}"]) for i in range(meta["n_leaves"])]
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}; this jaxem reads {_FORMAT!r}.")
    if model is None:
        if meta["model"] is None:
            raise ValueError(
                f"{path} holds the parameters of a model built from a user function; rebuild the "
                "model (e.g. jaxem.MixtureModel(log_joint, n_components)) and pass it as "
                "jaxem.load(path, model=model, like=params_of_the_same_structure).")
        from ._prior import from_json

        fields = {k: from_json(v) for k, v in meta["model"]["fields"].items()}
        model = _registry()[meta["model"]["class"]](**fields)
    if like is not None:
        treedef = jax.tree_util.tree_structure(like)
        if str(treedef) != meta["treedef"]:
            raise ValueError(f"like has structure {treedef}, but {path} holds {meta['treedef']}.")
        return model, jax.tree_util.tree_unflatten(treedef, leaves)
    ptype = _params_type(model, meta["params_type"])
    if ptype is None:
        raise ValueError(
            f"{path} holds parameters of structure {meta['treedef']}; pass like= with a pytree of "
            "that structure to rebuild them.")
    return model, ptype(*leaves)


def _params_type(model, name):
    """The NamedTuple class of ``model``'s parameters called ``name`` (None if unknown)."""
    if name is None:
        return None
    import sys

    mod = sys.modules[type(model).__module__]
    ptype = getattr(mod, name, None)
    if ptype is None:
        from . import models

        ptype = getattr(models, name, None)
    return ptype
