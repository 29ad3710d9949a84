"""Partial labels (semi-supervised EM): a known component clamps a row's posterior to it.

With labels y_n ∈ {-1, 0..K-1} (-1: unknown), EM maximises the likelihood of the observed data
*and* the known labels (McLachlan & Peel 2000, §2.19; Nigam et al. 2000, "Text classification from
labeled and unlabeled documents using EM", Machine Learning 39):
  log L(θ) = Σ_{n: y_n = -1} w_n log p(x_n | θ) + Σ_{n: y_n ≥ 0} w_n log p(x_n, z_n = y_n | θ).
Its E-step is the usual one with the log joint ℓ_nk = log p(x_n, z_n = k | θ) masked to -inf for
k ≠ y_n on labelled rows: the responsibilities of a labelled row are one-hot on y_n, and
logsumexp_k of the masked row is log p(x_n, z_n = y_n | θ). The M-step is unchanged. For hidden
Markov models a known state at step t masks the emission log-densities of the other states at t
(the standard clamping of forward-backward): the likelihood is then p(x, z_t = y_t for the known t).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._chunk import chunked_sum_rows
from ._status import Status, flag
from ._validate import is_concrete
from ._where import where


def clamp(lj, labels, masked=-jnp.inf):
    """``lj (..., K)`` with ℓ_k set to ``masked`` for k ≠ labels wherever labels ≥ 0 (None:
    unchanged)."""
    if labels is None:
        return lj
    K = lj.shape[-1]
    keep = (labels[..., None] < 0) | (labels[..., None] == jnp.arange(K))
    return where(keep, lj, masked)


def supports_labels(model) -> bool:
    """Whether ``model`` has discrete components (mixtures, HMMs) that labels can name."""
    return bool(getattr(model, "_supports_labels", False))


def check_labels(model, labels, w):
    """``labels`` as an int32 array shaped like the internal weights ``w`` ((N,) for mixtures,
    (S, T) for HMMs; an HMM's single sequence may take ``(T,)``). ValueError (naming ``labels``
    and the fix) for a model without components, a non-integer dtype, a wrong shape, and, outside
    jit, values outside [-1, K)."""
    require_components(model)
    if not isinstance(labels, (jax.Array, jax.core.Tracer)):
        labels = np.asarray(labels)
    check_dtype(labels.dtype)
    shape = tuple(w.shape)
    if labels.ndim == 1 and len(shape) == 2 and shape[0] == 1:  # one sequence (T,)
        labels = labels[None]
    check_shape(labels.shape, shape)
    if is_concrete(labels):
        check_range(np.asarray(labels), model.n_components)
    return jnp.asarray(labels, jnp.int32)


def host_labels(model, labels, n: int) -> np.ndarray:
    """The labels of one block of ``n`` rows (a streamed pass, on the host), checked as
    `check_labels` checks them (same messages), as int32 NumPy."""
    require_components(model)
    labels = np.asarray(labels)
    check_dtype(labels.dtype)
    check_shape(labels.shape, (n,))
    check_range(labels, model.n_components)
    return labels.astype(np.int32, copy=False)


def require_components(model) -> None:
    if not supports_labels(model):
        raise ValueError(
            f"labels= needs a model with discrete components (a mixture or an HMM); "
            f"{type(model).__name__} has continuous latent factors, so there is no component to "
            "clamp: drop labels=.")


def check_dtype(dtype) -> None:
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"labels must be an integer array (-1 = unknown, else the known component), got dtype "
            f"{dtype}; pass e.g. labels.astype(int) with -1 for the unlabelled rows.")


def check_shape(got, shape) -> None:
    shape = tuple(shape)
    if tuple(got) != shape:
        want = f"({shape[0]},) (one per row of X)" if len(shape) == 1 else (
            f"(n_sequences, T) = {shape} (one per time step; (T,) for one sequence)")
        raise ValueError(f"labels must have shape {want}, got {tuple(got)}; use -1 for "
                         "the unknown ones.")


def check_range(labels: np.ndarray, n_components) -> None:
    K = int(n_components)
    bad = (labels < -1) | (labels >= K)
    if np.any(bad):
        raise ValueError(
            f"labels must lie in [-1, {K - 1}] (-1 = unknown, else a component of the "
            f"{K}-component model); got {int(bad.sum())} value(s) outside, e.g. "
            f"{labels[bad][:3].tolist()}. Recode them (unknown: -1).")


def labels_status(labels, n_components: int):
    """Under jit: ``Status.INVALID_INPUT`` if some label lies outside [-1, K)."""
    if labels is None:
        return jnp.int32(0)
    return flag(jnp.any((labels < -1) | (labels >= n_components)), Status.INVALID_INPUT)


def with_labels(labels) -> dict:
    """``{"labels": labels}`` when given, else ``{}`` (methods of models without labels keep
    their signature)."""
    return {} if labels is None else {"labels": labels}


def labelled_sum(block, X, w, labels, chunk_size, width):
    """Σ over row blocks of ``block(x, labels_block or None, w_block)``: `chunked_sum_rows` over
    ``(X, labels, w)``, or over ``(X, w)`` with ``None`` for the labels when there are none
    (weights last: see `chunked_sum_rows`)."""
    if labels is None:
        return chunked_sum_rows(lambda x, wb: block(x, None, wb), (X, w), chunk_size, width)
    return chunked_sum_rows(block, (X, jnp.asarray(labels), w), chunk_size, width)
