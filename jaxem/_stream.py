"""EM larger than memory: `fit_stream`, exact EM with one streamed pass over the data per iteration."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._blocks import (Source, StreamError, check_block_size, default_block_size, neumaier_add,
                      progress_bar, stream_pass, zeros_like_shapes, block_flags)
from ._compile import compiled
from ._fit import FitResult, _all_finite
from ._fixed import check_fixed, maximize_fixed
from ._labels import host_labels, require_components, with_labels
from ._prior import log_posterior_sum
from ._status import FATAL, Status
from .models._base import Model


@compiled(static_argnames=("model",))
def _block_step(model, params, acc, comp, X, w, y=None):
    """One block: its statistics at ``params`` (``y``: the block's labels, -1 unknown) added
    (compensated) to the pass's running sum, and the block's check flags. The only program a pass
    runs (two with both labelled and unlabelled blocks)."""
    acc, comp = neumaier_add(acc, comp, model._statistics(params, X, w, **with_labels(y)))
    return acc, comp, block_flags(model, X, w)


@compiled(static_argnames=("model", "fixed"))
def _finish(model, params, acc, comp, fixed=()):
    """The M-step of a pass's statistics (the ``fixed`` fields held, `jaxem._fixed`), with the mean
    log-likelihood and the finiteness tests of `jaxem.fit`'s non-finite guard: ``(new, status, ll,
    ll finite, ll and new finite)``."""
    st = jax.tree_util.tree_map(jnp.add, acc, comp)
    new, status = maximize_fixed(model, st, params, fixed)
    dtype = jnp.result_type(*[x for x in jax.tree_util.tree_leaves(params)
                              if jnp.issubdtype(x.dtype, jnp.inexact)])
    ll = log_posterior_sum(model, params, st.log_likelihood.astype(dtype)) / st.total_weight.astype(
        dtype)
    return new, jnp.asarray(status, jnp.int32), ll, jnp.isfinite(ll), _all_finite((ll, new))


def check_model(model, what: str = "fit_stream"):
    if getattr(type(model), "_statistics", Model._statistics) is Model._statistics:
        raise ValueError(f"{what} needs a family with sufficient statistics and a closed-form "
                         f"M-step; {type(model).__name__} has none (fit it with jaxem.fit and "
                         "m_step=jaxem.GradientMStep).")
    try:
        hash(model)
    except TypeError:
        raise ValueError(f"{what} needs a hashable model (a frozen dataclass).") from None


def _check_iteration_args(max_iter, tol):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}.")
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}.") from None
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite, non-negative number (0 runs max_iter "
                         f"iterations), got {tol!r}.")
    return int(max_iter), tol


def _float_dtype(params):
    leaves = [x for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return np.dtype(jnp.result_type(*leaves))


class _Streamer:
    """The statistics pass at given params over a source, with its compiled pieces."""

    def __init__(self, model, params, src: Source, block_size, progress):
        self.model, self.src, self.progress = model, src, progress
        self.D = model.n_features(params)
        self.dtype = _float_dtype(params)
        self.B = block_size or default_block_size(self.D)
        if src.n_rows is not None and block_size is None:
            self.B = min(self.B, src.n_rows)
        xs = jax.ShapeDtypeStruct((self.B, self.D), self.dtype)
        ws = jax.ShapeDtypeStruct((self.B,), self.dtype)
        self.shapes = jax.eval_shape(model._statistics, params, xs, ws)

    def statistics(self, params, desc: str):
        """``(acc, comp, rows with positive weight)``: the compensated sum of the statistics."""
        zero = zeros_like_shapes(self.shapes)
        bar = progress_bar(self.progress, self.src.n_rows, desc)

        def step(carry, X, w, y=None):
            acc, comp, flags = _block_step(self.model, params, *carry, X, w, y)
            return (acc, comp), flags

        try:
            (acc, comp), n_pos = stream_pass(self.src, self.B, self.dtype, self.D, step,
                                             (zero, zero), model=self.model, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        return acc, comp, n_pos


def fit_stream(model, params, source, *, weights=None, labels=None, fixed=(), max_iter: int = 100,
               tol=1e-3, block_size: int | None = None, progress: bool = False) -> FitResult:
    """Fit ``model`` by exact EM over data read in row blocks (larger than memory).

    The EM map T(θ) = maximize(Σ_b S(θ, X_b, w_b), θ) of `jaxem.fit`, with the sum of the expected
    sufficient statistics S over the blocks taken on the host side of the loop: each iteration is
    one full pass over ``source``, in which ONE compiled block program adds each block's statistics
    (`model.sufficient_statistics`'s fused route) to a running sum, compensated (Neumaier 1974) so
    that float32 sums over many blocks lose no more than a single sum. Then one compiled M-step.
    Blocks are padded to ``block_size`` rows with zero rows of weight 0 (no recompilation for a
    ragged block), read by a background thread and handed to the device while the previous block
    computes. Peak memory depends on ``block_size``, not on N.

    Same rules as `jaxem.fit`: ``trace[i]`` is the mean log-likelihood at the parameters entering
    iteration i; the loop stops after the first iteration with |trace[i] - trace[i-1]| < tol (tol=0
    runs ``max_iter``), on ``Status.NONFINITE`` (the last finite parameters are kept) or on a fatal
    status; ``log_likelihood`` is at the returned parameters (one more pass); ``status`` and
    ``n_iter`` as in `jaxem.fit`. On the same data the result equals `jaxem.fit`'s (same ``n_iter``;
    trace and parameters to rounding), also with partial ``labels``, ``fixed`` fields and a prior
    on the model (MAP EM: ``trace`` is the log posterior, as in `jaxem.fit`).

    Args:
      model: a family with a closed-form M-step (GaussianMixture, PPCA, FactorAnalysis,
        BernoulliMixture, PoissonMixture).
      params: the starting parameters (e.g. from `jaxem.init_stream`); their floating dtype is the
        dtype the blocks are computed in.
      source: an ``(N, D)`` array-like with ``shape`` and row slicing, read block by block without
        being copied whole (``np.load(path, mmap_mode="r")``, an h5py/zarr dataset, a NumPy array),
        or a callable returning a fresh iterable of blocks ``X_b``, ``(X_b, w_b)`` or ``(X_b, w_b,
        y_b)`` (``y_b`` the block's labels as ``labels`` below, a block without them unlabelled;
        ``w_b`` may be None) of any sizes (called once per pass, and once more to read the first
        block's length when ``block_size`` is None). Each block is copied before the next is
        asked for, so a generator may reuse one buffer.
      weights: ``(N,)`` non-negative weights for an array source (array-like, sliced like it).
      labels: ``(N,)`` integer partial labels for an array source (array-like, sliced like it;
        a callable source yields them in its blocks): -1 = unknown, k = the row's component is
        known to be k, as in `jaxem.fit` (mixtures only; `jaxem._labels`).
      fixed: names of fields of ``params`` kept at their starting values (ECM), as in `jaxem.fit`.
      max_iter: maximum number of EM iterations (passes).
      tol: tolerance on the change of the mean log-likelihood; 0 runs ``max_iter`` iterations.
      block_size: rows per block; None: about 2**20 elements for an array source (capped at N),
        the first block's length for a callable source. Larger blocks are split, smaller ones padded
        (a padded block costs a full one: yield blocks of about ``block_size`` rows).
      progress: show a tqdm bar per pass (rows read; the previous pass's log-likelihood).

    Returns:
      A `jaxem.FitResult` (NumPy-valued scalars, JAX-array params).

    Raises:
      StreamError: (a ValueError) a bad block: NaN/inf in X or weights, a wrong number of
        features, negative weights, values outside the family's support (Bernoulli: [0, 1],
        Poisson: >= 0), labels outside [-1, K) or of the wrong length or dtype. The message names
        the block's index; ``err.block`` is it, and
        ``err.result`` is a `jaxem.FitResult` of the iterations completed before the failing pass
        (its ``params`` are the last complete pass's).
      ValueError: bad arguments (max_iter, tol, block_size, weights, labels, fixed, source), fewer
        rows with positive weight than ``n_components``.

    Example:
      >>> import os, tempfile, numpy as np, jax, jaxem
      >>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
      >>> np.save(path, np.random.default_rng(0).normal(size=(5000, 3)).astype(np.float32))
      >>> X = np.load(path, mmap_mode="r")
      >>> model = jaxem.GaussianMixture(2)
      >>> params = jaxem.init_stream(model, jax.random.key(0), X)
      >>> result = jaxem.fit_stream(model, params, X, block_size=2048)
      >>> int(result.status) & ~int(jaxem.Status.MAX_ITER_REACHED)
      0

      Partial labels (-1 = unknown) and fixed fields, as in `jaxem.fit`:

      >>> y = np.full(len(X), -1)
      >>> y[:10] = 0
      >>> result = jaxem.fit_stream(model, params, X, labels=y, fixed=("weights",), max_iter=5,
      ...                           block_size=2048)
      >>> bool((result.params.weights == params.weights).all())
      True
    """
    check_model(model)
    max_iter, tol = _check_iteration_args(max_iter, tol)
    block_size = check_block_size(block_size)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    fixed = check_fixed(params, fixed)
    if labels is not None:
        require_components(model)
    src = Source(source, weights, model.n_features(params), labels,
                 functools.partial(host_labels, model))
    if src.callable and block_size is None:
        block_size = len(src.first_block())
    s = _Streamer(model, params, src, block_size, progress)
    dtype = s.dtype
    trace = np.full(max_iter, np.nan, dtype)
    prev, ll_prev, status, converged, i = params, -np.inf, 0, False, 0
    final_ll = None

    def partial_result():
        st = (status | int(Status.INVALID_INPUT)) & ~int(Status.MAX_ITER_REACHED)
        return FitResult(params, dtype.type(np.nan), np.int32(i), np.bool_(False), trace.copy(),
                         np.int32(st))

    try:
        while i < max_iter:
            desc = f"EM pass {i + 1}" + (f" (loglik {ll_prev:.6g})" if i else "")
            acc, comp, n_pos = s.statistics(params, desc)
            if i == 0 and n_pos < model.n_components:
                raise ValueError(
                    f"n_components={model.n_components} is larger than the number of rows with "
                    f"positive weight ({n_pos}); use fewer components or pass more data.")
            new, mstatus, ll, ok_ll, ok = _finish(model, params, acc, comp, fixed=fixed)
            ll, ok_ll, ok = dtype.type(ll), bool(ok_ll), bool(ok)
            if not ok_ll:  # the parameters entering this iteration are unusable: back one step
                params, final_ll = prev, (ll_prev if i > 0 else ll)
                status |= int(Status.NONFINITE)
                i += 1
                break
            trace[i] = ll
            i += 1
            if not ok:  # finite likelihood, non-finite M-step: keep the parameters entering it
                final_ll, status = ll, status | int(Status.NONFINITE)
                break
            status |= int(mstatus)
            converged = abs(ll - ll_prev) < tol
            prev, params, ll_prev = params, new, ll
            if converged or status & int(FATAL):
                break
        if final_ll is None:  # log p(X | θ) at the returned parameters: one more pass
            acc, comp, _ = s.statistics(params, "log-likelihood")
            final_ll = dtype.type(_finish(model, params, acc, comp, fixed=fixed)[2])
    except StreamError as err:
        err.result = partial_result()
        raise
    if not converged and tol > 0:
        status |= int(Status.MAX_ITER_REACHED)
    if status & int(FATAL):
        status &= ~int(Status.MAX_ITER_REACHED)
    return FitResult(params, final_ll, np.int32(i), np.bool_(converged), trace, np.int32(status))
