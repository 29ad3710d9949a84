"""The EM driver: one `jax.lax.while_loop` of E-step + M-step, stopping on tolerance."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _shard
from ._adjoint import implicit_params
from ._compact import while_loop as _while_loop
from ._checks import fit_arguments, positive_int, tolerance
from ._compile import compiled
from ._fixed import check_fixed
from ._labels import check_labels, labels_status, with_labels
from ._missing import allows_missing, complete_rows
from ._mstep import ClosedFormMStep
from ._prior import log_posterior_sum, resolve
from ._progress import with_progress
from ._squarem import Squarem
from ._status import FATAL, Status, flag
from ._validate import (as_data, check_params_finite, device_array, is_concrete, status_of_data,
                        validate)
from ._where import all_finite as _all_finite
from ._where import select, where


class FitResult(NamedTuple):
    """Outcome of `jaxem.fit` (a pytree; under `jax.vmap` every field gains a batch axis).

    Attributes:
      params: the fitted parameters (after the last M-step).
      log_likelihood: weighted mean per-sample log-likelihood at ``params``. With a prior on the
        model (``prior=``) the log posterior instead: (Σ_n w_n log p(x_n | θ) + log p̃(θ)) / Σw,
        p̃ the prior density without its normalising constant (`jaxem._prior`); the same in
        ``trace``. (`bic`/`aic` keep the log-likelihood at the MAP estimate, as mclust.)
      n_iter: number of EM iterations run (scikit-learn's ``n_iter_``).
      converged: whether |trace[i] - trace[i-1]| < tol was reached.
      trace: ``(min(max_iter, TRACE_CAP),)`` mean log-likelihood at the parameters entering
        iteration i (scikit-learn's ``lower_bounds_``); NaN after the last iteration. With
        ``max_iter <= TRACE_CAP`` (4096) ``trace[i]`` is iteration i. Beyond, the memory stays
        bounded: the first half holds iterations 0 .. TRACE_CAP/2 - 1 and the second half the last
        TRACE_CAP/2 iterations run, in order (all of them, NaN-padded, if fewer ran).
      status: int code, 0 = ok; see `jaxem.describe_status` and `jaxem.Status`.
    """

    params: Any
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    trace: jax.Array
    status: jax.Array


# Longest trace kept (see `FitResult.trace`): max_iter=10**8 allocated 0.6 GB for a 6-iteration fit.
TRACE_CAP = 4096


def _trace_slot(i, length: int):
    """Slot of iteration i in a trace of ``length`` entries: i while i < length; beyond, the
    second half is a ring of the latest iterations (see `_unroll_trace`)."""
    if length < TRACE_CAP:
        return i
    half = length // 2
    return where(i < length, i, half + (i - half) % half)


def _unroll_trace(trace, n_iter, max_iter: int):
    """The ring of `_trace_slot` rotated back into chronological order (static no-op unless
    ``max_iter > TRACE_CAP``)."""
    if max_iter <= TRACE_CAP:
        return trace
    half = trace.shape[-1] // 2
    tail = trace[half:]
    # After n > length iterations the oldest kept one sits right after the newest's slot.
    shift = where(n_iter > trace.shape[-1], (n_iter - half) % half, 0)
    idx = (np.arange(half) + shift) % half
    return jnp.concatenate([trace[:half], tail[idx]])


class _State(NamedTuple):
    i: jax.Array
    params: Any
    prev_params: Any
    mstate: Any
    ll: jax.Array
    trace: jax.Array
    converged: jax.Array
    status: jax.Array


def _init_state(model, updater, params, X, w, max_iter, data_checked=False, labels=None):
    dtype = X.dtype
    return _State(
        i=jnp.int32(0),
        params=params,
        prev_params=params,
        mstate=updater.init(model, params, X, w),
        ll=jnp.asarray(-jnp.inf, dtype),
        trace=jnp.full((min(max_iter, TRACE_CAP),), jnp.nan, dtype),
        converged=jnp.bool_(False),
        # Data (and params) already checked on the host (an eager call) need no check in the
        # program; under jit non-finite starting params are invalid input.
        status=jnp.int32(0) if data_checked else status_of_data(
            X, w, getattr(model, "n_components", None), allow_nan=allows_missing(model))
        | flag(~_all_finite(params), Status.INVALID_INPUT)
        | labels_status(None if data_checked else labels, getattr(model, "n_components", 0)),
    )


def _active(state: _State, max_iter: int):
    """Termination test: iterations left, not converged, no fatal status."""
    return (state.i < max_iter) & ~state.converged & ((state.status & int(FATAL)) == 0)


def _step(model, updater, X, w, total_w, tol, state: _State, labels=None):
    """One EM iteration with the non-finite guard and the scikit-learn convergence test; returns
    the new state and the mean log-likelihood at ``state.params``."""
    new, mstate, ll_sum, st = updater.update(model, state.params, state.mstate, X, w,
                                             **with_labels(labels))
    ll = ll_sum / total_w
    ok_ll = jnp.isfinite(ll)
    ok = _all_finite((ll, new))  # ll and the new params
    # ll non-finite: the params entering this iteration are unusable, go back one step.
    # ll finite but new params not: keep the params entering this iteration.
    params = select(ok, new, select(ok_ll, state.params, state.prev_params))
    prev = select(ok, state.params, state.prev_params)
    status = state.status | where(ok, st, int(Status.NONFINITE))
    # An M-step that rejected every step leaves θ unchanged: not evidence of convergence.
    converged = ok_ll & (jnp.abs(ll - state.ll) < tol) & ((st & int(Status.STEP_REJECTED)) == 0)
    return _State(
        i=state.i + 1,
        params=params,
        prev_params=prev,
        mstate=mstate,
        ll=where(ok_ll, ll, state.ll),
        trace=state.trace.at[_trace_slot(state.i, state.trace.shape[0])].set(
            where(ok_ll, ll, jnp.nan)),
        converged=converged,
        status=status,
    ), ll


def run_em(model, params, X, w, *, max_iter, tol, updater, unrolled=False, progress=False,
           final_log_likelihood=True, data_checked=False, labels=None):
    """The bare loop (no validation, no adjoint): returns a `FitResult`.

    With a closed-form M-step the final log-likelihood (at the returned parameters) comes from one
    more pass of the loop body after the last iteration, so no separate evaluation is compiled.
    """
    total_w = jnp.sum(w)
    state = _init_state(model, updater, params, X, w, max_iter, data_checked, labels)
    step = lambda s: _step(model, updater, X, w, total_w, tol, s, labels)
    if progress:  # Python-level: no callback in the program when off
        step = with_progress(step, lambda s: _active(s, max_iter), max_iter)
    nan = jnp.full((), jnp.nan, X.dtype)
    final_ll = None
    # Under vmap the compacting loop stops paying for finished members (`jaxem._compact`); a
    # progress bar follows the plain loop's iterations.
    loop = jax.lax.while_loop if progress else _while_loop
    if unrolled:
        # A bounded scan (reverse-differentiable): inactive iterations leave the state unchanged.
        def body(s, _):
            return select(_active(s, max_iter), step(s)[0], s), None

        state, _ = jax.lax.scan(jax.checkpoint(body), state, None, length=max_iter)
    elif final_log_likelihood and isinstance(updater, ClosedFormMStep):
        # Iterate while active; the first inactive pass only records log p(X | θ) and stops.
        def body(carry):
            s, final, _ = carry
            active = _active(s, max_iter)
            new, ll = step(s)
            return select(active, new, s), where(active, final, ll), ~active

        state, final_ll, _ = loop(lambda c: ~c[2], body, (state, nan, jnp.bool_(False)))
    else:
        state = loop(lambda s: _active(s, max_iter), lambda s: step(s)[0], state)
    status = state.status | flag(~state.converged & (tol > 0), Status.MAX_ITER_REACHED)
    status = where((status & int(FATAL)) != 0, status & ~int(Status.MAX_ITER_REACHED), status)
    if final_ll is None:
        final_ll = (log_posterior_sum(model, state.params, model.log_likelihood(
            state.params, X, w, **with_labels(labels))) / total_w if final_log_likelihood else nan)
    trace = _unroll_trace(state.trace, state.i, max_iter)
    return FitResult(state.params, final_ll, state.i, state.converged, trace, status)


def fit(
    model,
    params,
    X,
    *,
    weights=None,
    lengths=None,
    max_iter: int = 100,
    tol=1e-3,
    m_step=None,
    adjoint: str = "implicit",
    progress: bool = False,
    accelerate: str | None = None,
    labels=None,
    fixed=(),
) -> FitResult:
    """Fit ``model`` to ``X`` by EM (Dempster, Laird & Rubin 1977), starting from ``params``.

    Each iteration i runs the E-step at θ_i — which gives ``trace[i]`` = (1/Σw) Σ_n w_n log p(x_n | θ_i)
    and the posterior q(Z) = p(Z | X, θ_i) — then the M-step θ_{i+1} = argmax_θ Q(θ, θ_i). The loop (one
    `jax.lax.while_loop`) stops after the first iteration with |trace[i] - trace[i-1]| < tol, after
    ``max_iter`` iterations, or on a fatal status. From the same start, ``n_iter`` and ``trace`` equal
    scikit-learn's ``n_iter_`` and ``lower_bounds_``.

    With a prior on the model (``prior=``, e.g. `jaxem.GaussianPrior`; Fraley & Raftery 2007) the
    M-step is the posterior mode and EM maximises the log posterior: ``trace`` and
    ``log_likelihood`` then hold (Σ_n w_n log p(x_n | θ) + log p̃(θ)) / Σw, which never decreases.
    ``prior="default"`` is resolved here from the (concrete) data by `jaxem.default_prior`.

    With ``X`` (and ``weights``) a `jax.Array` split by rows over devices or processes
    (``NamedSharding(mesh, P(axis, None))``, any axis name), the fit is data-parallel
    (`jaxem._shard`): each device computes the statistics of its own rows, one all-reduce per
    iteration adds them, the M-step runs replicated, and X is never gathered. Under the caller's
    `jax.jit` this needs an Explicit mesh axis (the split is then part of X's type).

    Args:
      model: a jaxem model (e.g. `jaxem.GaussianMixture`).
      params: the starting parameters (e.g. from ``model.init``).
      X: ``(N, D)`` data.
      weights: ``(N,)`` non-negative sample weights; 0 marks padding. None = ones. (HMMs: ``(S,)``
        per-sequence weights.)
      lengths: HMMs only: ``(S,)`` lengths of sequences ``X (S, T, D)`` padded at the end (None:
        all T). A model with ``prepare_data(X, weights, lengths, params)`` lays out its own data.
      max_iter: maximum number of iterations (static).
      tol: tolerance on the change of the mean log-likelihood (may be traced); 0 runs ``max_iter``.
      m_step: None for the model's closed form, or a `jaxem.GradientMStep`.
      adjoint: "implicit" (differentiate at the fixed point) or "unrolled" (through the iterations).
      progress: show a tqdm bar with the current log-likelihood, fed from inside the loop by
        `jax.debug.callback` (one bar under vmap; nothing is added to the program when False).
      accelerate: None, or "squarem" for SQUAREM (Varadhan & Roland 2008; `jaxem._squarem`):
        each iteration is then one extrapolation cycle of three EM steps, monotone by its
        safeguard, with EM's fixed points (same implicit gradients). ``trace[i]`` is the
        log-likelihood at the start of cycle i, ``n_iter`` counts cycles (3 EM steps each), and
        ``tol`` applies to the change per cycle. Far fewer EM steps when EM converges slowly
        (overlapping components, small noise in PPCA/FA); no gain when it is already fast.
      labels: partial labels (semi-supervised EM, `jaxem._labels`): integer ``(N,)`` for
        mixtures, ``(S, T)`` (or ``(T,)``) for HMMs; -1 = unknown, k = the row's (the step's)
        component is known to be k: its posterior is clamped to one-hot on k (for HMMs the
        other states' emission log-densities at that step are masked). The log-likelihood
        (``trace``, ``log_likelihood``) is then Σ_unlabelled w log p(x) + Σ_labelled w log p(x,
        z=y), which EM never decreases. Not for PPCA/FactorAnalysis (no components). Works
        under jit and vmap (labels batched); out-of-range values give ``Status.INVALID_INPUT``.
      fixed: names of fields of ``params`` kept at their starting values (hmmlearn's ``params=``
        letters, by field name; e.g. ``("weights",)``, ``("means",)``, ``("transition_matrix",)``):
        an ECM fit (Meng & Rubin 1993; `jaxem._fixed`), monotone like EM. The closed-form M-steps
        compute the free fields given the fixed ones (a Gaussian mixture's covariances about fixed
        means; PPCA/FA loadings and noise about a fixed mean); `GradientMStep` does not move them.
        They come back bit for bit; under ``adjoint="implicit"`` their derivative is 1 with
        respect to the values passed in (0 with respect to X and w), and the free fields'
        derivatives with respect to those values are exact (`jaxem._adjoint`).

    Returns:
      A `FitResult`.

    Raises:
      ValueError: outside jit, for bad input (non-finite X or params, negative weights, shape
        mismatches, more components than rows with positive weight, a NaN or negative ``tol``);
        always for ``params`` of the wrong shapes for ``model``. Under jit bad values give a
        non-zero status (``Status.INVALID_INPUT``, ``Status.TOO_FEW_SAMPLES``). Floating
        ``params`` are cast to X's dtype.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (300, 2))
      >>> model = jaxem.GaussianMixture(3)
      >>> result = jaxem.fit(model, model.init(jax.random.key(1), X), X)
      >>> result.status
      Array(0, dtype=int32)
    """
    fit_arguments(model, params, X)  # swapped arguments, params of another structure: ValueError
    prepare = getattr(model, "prepare_data", None)
    if prepare is not None:  # sequence models: data in the layout their em_update reads, checked
        X, w = prepare(X, weights, lengths, params)
    elif lengths is not None:
        raise ValueError(f"lengths= is for sequence models (HMMs); {type(model).__name__} takes "
                         "rows X (N, D) without lengths.")
    else:
        X, w = as_data(X, weights, model.n_features(params))
        if allows_missing(model):  # NaN entries are missing values; a row of them has no weight
            w = model._effective_weights(X, w)
        validate(X, w, model.n_components, allow_nan=allows_missing(model))
        model.check_data(X)
        model.check_params(params)
    if labels is not None:
        labels = check_labels(model, labels, w)
    fixed = check_fixed(params, fixed)
    check_params_finite(params)
    model = resolve(model, X, w)  # prior="default": `jaxem.default_prior` of this data
    params = _cast_params(params, X.dtype)
    if adjoint not in ("implicit", "unrolled"):
        raise ValueError(f"adjoint must be 'implicit' or 'unrolled', got {adjoint!r}.")
    max_iter = positive_int("max_iter", max_iter)
    tolerance(tol)
    updater = ClosedFormMStep() if m_step is None else m_step
    if m_step is not None and getattr(model, "_q_needs_complete_rows", False):
        complete_rows(model, X, f"m_step={type(m_step).__name__} (its Q-function)",
                      "With missing='marginalize' fit with the closed-form M-step (m_step=None), "
                      "which integrates the missing entries out")
    if fixed:
        updater = _with_fixed(updater, fixed)
    if accelerate == "squarem":
        updater = Squarem(updater)
    elif accelerate is not None:
        raise ValueError(f"accelerate must be None or 'squarem', got {accelerate!r}.")
    rows = _shard.row_sharding(X)  # X split by rows over devices: a data-parallel program
    tol = device_array(tol, X.dtype) if rows is None or not is_concrete(X) else np.asarray(
        tol, X.dtype)
    if rows is not None and is_concrete(X, params):  # parameters on one device: on X's mesh
        params = _shard.replicate_on(rows, params)
    static = dict(max_iter=int(max_iter), updater=updater, adjoint=adjoint, progress=bool(progress),
                  data_checked=is_concrete(X, w), rows=rows)  # `validate` raised for bad data
    if _hashable(model) and _hashable(updater):
        return _fit_compiled(model, params, X, w, tol, labels, **static)
    return _fit_impl(model, params, X, w, tol, labels, **static)  # unhashable user objects: no cache


def precompile_fit(model, params, X, w, *, tol, max_iter: int, progress: bool = False) -> None:
    """Compile the program that ``fit(model, params, X, weights=w, tol=tol, max_iter=max_iter,
    progress=progress)`` runs (every other option at its default), without running it: the call
    then finds it compiled. ``params`` may be `jax.ShapeDtypeStruct`s (only their shapes are
    read), so the fit can compile while its start is still being computed or compiled
    (`jaxem._compile.precompile_concurrently`). For checked, unsharded X and w (arrays of X's
    dtype) and a model without a data-dependent prior (``prior="default"``)."""
    params = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), X.dtype), params)
    X, w = device_array(X), device_array(w)
    _fit_compiled.precompile(resolve(model, X, w), params, X, w, device_array(tol, X.dtype), None,
                             max_iter=int(max_iter), updater=ClosedFormMStep(),
                             adjoint="implicit", progress=bool(progress), data_checked=True,
                             rows=None)


def _with_fixed(updater, fixed: tuple):
    """``updater`` holding ``fixed`` (together with any fields it already holds)."""
    if not hasattr(updater, "fixed"):
        raise ValueError(f"fixed= needs an M-step that can hold fields fixed (None or "
                         f"jaxem.GradientMStep); {type(updater).__name__} has no `fixed`.")
    return dataclasses.replace(updater, fixed=tuple(sorted(set(updater.fixed) | set(fixed))))


def _cast_params(params, dtype):
    """Real floating leaves of ``params`` in X's dtype (the loop carries them with X's precision;
    float32 params with float64 data would otherwise change type inside the while_loop)."""
    def cast(a):
        a = a if isinstance(a, (jax.Array, jax.core.Tracer)) else device_array(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree_util.tree_map(cast, params)


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def _fit_impl(model, params, X, w, tol, labels=None, *, max_iter, updater, adjoint, progress,
              data_checked, rows=None):
    # Rows split over devices: every streamed row reduction traced below is data-parallel.
    return _shard.traced(rows, lambda params, X, w, tol, labels: _fit_rows(
        model, params, X, w, tol, labels, max_iter=max_iter, updater=updater, adjoint=adjoint,
        progress=progress, data_checked=data_checked), params, X, w, tol, labels)


def _fit_rows(model, params, X, w, tol, labels=None, *, max_iter, updater, adjoint, progress,
              data_checked):
    kw = dict(max_iter=max_iter, tol=tol, updater=updater, progress=progress,
              data_checked=data_checked, labels=labels)
    if adjoint == "unrolled":
        return run_em(model, params, X, w, unrolled=True, **kw)
    # Implicit: the loop sees no tangents; derivatives are attached at the fixed point.
    sg = jax.lax.stop_gradient
    in_loop = isinstance(updater, ClosedFormMStep)  # the loop evaluates the final log-likelihood
    r = run_em(model, sg(params), sg(X), sg(w), final_log_likelihood=in_loop, **kw)
    theta = implicit_params(model, r.params, X, w, updater=getattr(updater, "inner", updater),
                            labels=labels, anchor=params)
    return r._replace(params=theta, log_likelihood=_mean_log_likelihood(
        model, theta, X, w, r.log_likelihood if in_loop else None, labels))


def _mean_log_likelihood(model, theta, X, w, value=None, labels=None):
    """(1/Σw) log p(X | θ), differentiable in θ, X and w. With ``value`` (already computed by the
    loop) the evaluation is traced only when something is differentiated."""
    f = lambda theta, X, w, labels: log_posterior_sum(
        model, theta, model.log_likelihood(theta, X, w, **with_labels(labels))) / jnp.sum(w)
    if value is None:
        return f(theta, X, w, labels)

    @jax.custom_jvp
    def known(theta, X, w, value, labels):  # labels an argument: a rule closing over a tracer fails
        return value

    @known.defjvp
    def _(primals, tangents):
        return primals[3], jax.jvp(lambda t, X, w: f(t, X, w, primals[4]), primals[:3],
                                   tangents[:3])[1]

    return known(theta, X, w, jax.lax.stop_gradient(value), labels)


# Compiled once per (model, shapes, static options) and reused by eager calls; inside a caller's
# jit/vmap/grad it is simply inlined. (The loop's closures are rebuilt on every call, so without this
# every eager call of `fit` would compile the loop again.)
_fit_compiled = compiled(_fit_impl,
                         static_argnames=("model", "max_iter", "updater", "adjoint", "progress",
                                          "data_checked", "rows"))
