"""Online (stepwise) EM: expected sufficient statistics averaged over mini-batches with steps γ_t.

Cappé & Moulines (2009), "On-line expectation-maximization algorithm for latent data models", JRSS-B
71(3); Liang & Klein (2009), "Online EM for unsupervised models", NAACL (stepwise EM). With ŝ(B; θ)
the per-unit-weight expected sufficient statistics of a mini-batch B at θ (`sufficient_statistics`
divided by the batch's total weight Σ_{n∈B} w_n),

    s_t = (1 - γ_t) s_{t-1} + γ_t ŝ(B_t; θ_{t-1}),     θ_t = maximize(s_t).

Every closed-form family's `maximize` is invariant under scaling all additive statistics by a
constant (its N_k / total-weight floors are relative), so per-unit-weight statistics stand for the
data set of any size. A prior on the model (MAP EM, `jaxem._prior`) is not: its pseudo-counts weigh
against the data's, so the stream states the size n of the population it represents and the M-step
is θ_t = maximize(n · s_t) with the prior, the posterior mode of a batch fit on n rows whose
statistics are n · s_t. All statistics are taken about one fixed reference point
r = `model.statistics_reference(θ_0)`, since statistics averaged across iterations must share it.
Partial labels clamp each batch's responsibilities (`jaxem._labels`); fixed fields are held by the
M-step (ECM, `jaxem._fixed`), as in `jaxem.fit`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import compiled
from ._fit import FitResult, _all_finite
from ._fixed import check_fixed, maximize_fixed
from ._labels import check_labels, labels_status, with_labels
from ._prior import active as active_prior
from ._prior import log_prior
from ._status import FATAL, Status, flag
from ._missing import allows_missing
from ._validate import as_data, check_values, is_concrete, status_of_data
from ._where import select, where


class _State(NamedTuple):
    t: jax.Array  # steps taken (batches with positive weight, before a stop)
    params: Any  # θ_t
    stats: Any  # s_t, per unit weight, about the fixed reference
    avg: Any  # Polyak-Ruppert average of θ over the steps after the burn-in
    n_avg: jax.Array
    epoch_ll: jax.Array  # Σ over this epoch's batches of Σ_n w_n log p(x_n | θ entering the batch)
    epoch_w: jax.Array  # Σ over this epoch's batches of Σ_n w_n
    prev_epoch: jax.Array  # the previous epoch's mean log-likelihood
    converged: jax.Array
    status: jax.Array
    done: jax.Array  # a fatal status or convergence stopped the run: later steps change nothing


def default_step_size(t):
    """γ_t = (t + 2)^-0.6 (Liang & Klein 2009; any exponent in (1/2, 1] satisfies Robbins-Monro)."""
    return (t + 2.0) ** -0.6


def _init_state(model, params, reference, X, w) -> _State:
    stats = lambda p, x, w, r: model.sufficient_statistics(p, x, w, reference=r)
    shapes = jax.eval_shape(stats, params, X, w, reference)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    z = jnp.zeros((), X.dtype)
    return _State(jnp.int32(0), params, zeros, params, z, z, z, jnp.asarray(jnp.nan, X.dtype),
                  jnp.bool_(False), jnp.int32(0), jnp.bool_(False))


def _population(stats, n_samples):
    """The per-unit-weight statistics ``stats`` scaled to a population of ``n_samples`` (None:
    unchanged; without a prior the M-step does not depend on the scale)."""
    if n_samples is None:
        return stats
    return jax.tree_util.tree_map(lambda a: (a * n_samples).astype(a.dtype), stats)


def _step(model, reference, state: _State, X, w, y, gamma, do_m, do_avg, n_samples=None,
          fixed=()):
    """One stepwise-EM step on the batch (X, w) with labels y (None: none): returns the new state
    and the batch's mean log-likelihood at the params entering it (NaN if the step did nothing).
    With ``n_samples`` (a prior) the M-step is that of n_samples · s_t, and the log-likelihood
    is the batch's share of the log posterior, Σ_B w log p(x | θ) + (Σ_B w / n_samples) log p̃(θ)."""
    st = model.sufficient_statistics(state.params, X, w, reference=reference, **with_labels(y))
    total = st.total_weight
    if n_samples is not None:  # s_t's log-likelihood: the running mean of the log posterior's
        st = st._replace(log_likelihood=st.log_likelihood + (  # shares (no M-step reads it)
            total * log_prior(model, state.params) / n_samples).astype(st.log_likelihood.dtype))
    active = (total > 0) & ~state.done
    safe_total = where(total > 0, total, 1.0)
    s_hat = jax.tree_util.tree_map(lambda a: a / safe_total, st)
    g = jnp.asarray(gamma, total.dtype)
    s = jax.tree_util.tree_map(lambda a, b: ((1 - g) * a + g * b).astype(a.dtype), state.stats,
                               s_hat)
    new, mstatus = maximize_fixed(model, _population(s, n_samples), state.params, fixed,
                                  reference)
    new = select(do_m, new, state.params)
    mstatus = where(do_m, jnp.asarray(mstatus, jnp.int32), 0)
    ok = _all_finite((s_hat, new))
    upd = active & ok
    params = select(upd, new, state.params)
    status = state.status | where(upd, mstatus, 0) | flag(active & ~ok, Status.NONFINITE)
    status = status | where(active, status_of_data(X, w, allow_nan=allows_missing(model))
                            | labels_status(y, getattr(model, "n_components", 0)),
                            0)  # bad data under jit
    n_avg = state.n_avg + where(upd & do_avg, 1.0, 0.0)
    avg = select(upd & do_avg, jax.tree_util.tree_map(
        lambda a, p: a + (p - a) / n_avg.astype(a.dtype), state.avg, params), state.avg)
    ll = st.log_likelihood.astype(X.dtype)
    new_state = state._replace(
        t=state.t + where(active, 1, 0),
        params=params,
        stats=select(upd, s, state.stats),
        avg=avg,
        n_avg=n_avg,
        epoch_ll=state.epoch_ll + where(upd, ll, 0.0),
        epoch_w=state.epoch_w + where(upd, total.astype(X.dtype), 0.0),
        status=status,
        done=state.done | ((status & int(FATAL)) != 0),
    )
    # (a loop carry keeps its types: no promotion by Python scalars under x64)
    new_state = jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), new_state, state)
    return new_state, where(upd, ll / safe_total.astype(X.dtype), jnp.nan)


def _end_epoch(state: _State, tol) -> _State:
    """Convergence test at the end of a pass: |mean log-likelihood of this epoch - previous| < tol
    (the means are over the batches of each pass, each at the parameters entering it)."""
    ll = state.epoch_ll / jnp.maximum(state.epoch_w, jnp.finfo(state.epoch_w.dtype).tiny)
    conv = ~state.done & (jnp.abs(ll - state.prev_epoch) < tol)
    return state._replace(epoch_ll=jnp.zeros_like(state.epoch_ll),
                          epoch_w=jnp.zeros_like(state.epoch_w),
                          prev_epoch=where(state.done, state.prev_epoch, ll),
                          converged=state.converged | conv, done=state.done | conv)


def _result(state: _State, trace, tol, average) -> FitResult:
    params = state.params
    if average:
        params = select(state.n_avg > 0, state.avg, state.params)
    status = state.status | flag(~state.converged & (tol > 0), Status.MAX_ITER_REACHED)
    status = where((status & int(FATAL)) != 0, status & ~int(Status.MAX_ITER_REACHED), status)
    ll = (state.stats.log_likelihood / state.stats.total_weight).astype(trace.dtype)
    return FitResult(params, ll, state.t, state.converged, trace, status)


# --- step sizes -----------------------------------------------------------------------------------
def _gamma_fn(step_size) -> Callable:
    if step_size is None:
        return default_step_size
    if callable(step_size):
        return step_size
    try:
        g = float(step_size)
    except (TypeError, ValueError):
        raise ValueError(
            "step_size must be a float in (0, 1], or a function / optax schedule of the step t "
            f"returning one; got {step_size!r}.") from None
    _check_gamma(g, 0)
    return lambda t: g


def _check_gamma(g, t):
    if not (0.0 < g <= 1.0):  # also False for NaN
        raise ValueError(
            f"step_size must lie in (0, 1], got {g} at step t={t}; use a float in (0, 1] or a "
            "schedule such as lambda t: (t + 2) ** -0.6 (optax: e.g. "
            "optax.polynomial_schedule(1.0, 0.01, 1.0, n_steps)).")


def _gammas(fn, start, n, warmup, dtype):
    """Effective step sizes of steps start..start+n-1 (host side, checked): γ = 1/(t+1) during the
    warm-up (an equal-weight mean of the warm-up batches' statistics; γ_0 = 1, so s_0 is never
    used), the schedule after it."""
    t = np.arange(start, start + n)
    with jax.ensure_compile_time_eval():
        vals = jax.vmap(lambda t: jnp.asarray(fn(t), dtype))(jnp.asarray(t, jnp.int32))
    if is_concrete(vals):
        vals = np.asarray(vals, dtype)
        for ti, g in zip(t, vals):
            if ti >= warmup:
                _check_gamma(float(g), int(ti))
        vals = np.where(t < warmup, 1.0 / (t + 1.0), vals).astype(dtype)
    else:  # a schedule closing over traced values: not checked
        vals = jnp.where(t < warmup, 1.0 / (t + 1.0), vals).astype(dtype)
    return vals, t >= warmup - 1  # (γ_t, an M-step after step t)


# --- the two drivers ------------------------------------------------------------------------------
def _scan_impl(model, params, Xs, Ws, Ys, gammas, do_m, do_avg, tol, n_samples, *, n_epochs,
               average, fixed):
    reference = model.statistics_reference(params)
    T = Xs.shape[0]
    state = _init_state(model, params, reference, Xs[0], Ws[0])

    def epoch(state, xs):
        g, m, a = xs

        def body(state, xs):
            X, w, y, g, m, a = xs
            return _step(model, reference, state, X, w, y, g, m, a, n_samples, fixed)

        state, trace = jax.lax.scan(body, state, (Xs, Ws, Ys, g, m, a))
        return _end_epoch(state, tol), trace

    xs = tuple(jnp.reshape(v, (n_epochs, T)) for v in (gammas, do_m, do_avg))
    state, trace = jax.lax.scan(epoch, state, xs)
    return _result(state, trace.reshape(-1), tol, average)


_scan_compiled = compiled(_scan_impl, static_argnames=("model", "n_epochs", "average", "fixed"))
_step_compiled = compiled(_step, static_argnames=("model", "fixed"))
_end_epoch_compiled = compiled(_end_epoch)
_result_compiled = compiled(_result, static_argnames=("average",))
_init_compiled = compiled(_init_state, static_argnames=("model",))


def fit_online(
    model,
    params,
    batches,
    *,
    weights=None,
    labels=None,
    fixed=(),
    n_samples=None,
    step_size=None,
    n_epochs: int = 1,
    warmup: int = 1,
    average: bool = False,
    burn_in: int | None = None,
    tol=0.0,
    callback: Callable | None = None,
) -> FitResult:
    """Fit ``model`` by online (stepwise) EM over mini-batches (Cappé & Moulines 2009).

    Step t (0-based) takes the batch B_t, its per-unit-weight expected sufficient statistics
    ŝ_t = sufficient_statistics(θ_{t-1}, B_t, reference=r) / Σ_{n∈B_t} w_n about the fixed reference
    r = `model.statistics_reference(θ_0)`, and updates

        s_t = (1 - γ_t) s_{t-1} + γ_t ŝ_t,     θ_t = maximize(s_t).

    Warm-up (Cappé & Moulines §2.3 skip the M-step for the first observations; Liang & Klein 2009):
    the first ``warmup`` batches are all taken at θ_0 and their statistics averaged with equal
    weights (γ_t = 1/(t+1)); the first M-step follows batch ``warmup - 1``. In particular γ_0 = 1
    always: the first batch initialises the statistics, so no s_0 is needed. After the warm-up
    γ_t = ``step_size`` (a float, or its value at t). With one batch holding all the data and
    ``step_size=1.0`` every step is one batch-EM iteration, as in `jaxem.fit`.

    Partial labels (-1 unknown) clamp the responsibilities of the labelled rows and ``fixed``
    fields keep their starting values (ECM), as in `jaxem.fit`. With a prior on the model (MAP
    EM) the M-step is θ_t = maximize(n · s_t) with the prior, n = ``n_samples`` the size (total
    weight) of the population the stream represents: the prior counts as much as in a batch fit
    on n rows, and with one batch holding all N rows, γ = 1 and ``n_samples=N`` every step is one
    iteration of `jaxem.fit`'s MAP EM.

    Batches whose total weight is 0 are skipped (no step). A non-finite statistic or parameter
    stops the run with the last finite parameters and ``Status.NONFINITE``; the M-step's
    ``Status.EMPTY_COMPONENT`` is reported as in `jaxem.fit`.

    Two ways to pass the data:
      * stacked: ``batches`` an array ``(T, B, D)`` (``weights`` and ``labels`` ``(T, B)``
        optional, or ``batches = (Xs, Ws)``). All ``n_epochs`` passes run inside one
        `jax.lax.scan`: jittable and vmappable.
      * a Python iterable of batches ``X_b``, ``(X_b, w_b)`` or ``(X_b, w_b, y_b)`` (``y_b`` the
        batch's labels; ``w_b`` may be None) of any sizes (the first batch's row
        count is the compiled shape; smaller batches, e.g. a ragged last one, are padded with
        weight-0 rows so nothing recompiles; a larger batch compiles its own shape once). For
        ``n_epochs > 1`` pass a re-iterable (a list) or a callable returning a fresh iterable per
        pass (e.g. a generator function reading files); a one-shot iterator is refused. Each step
        is one compiled call; ``callback(t, params)`` (if given) is called on the host after every
        step.

    Args:
      model: a closed-form jaxem model (GaussianMixture, PPCA, FactorAnalysis, BernoulliMixture,
        PoissonMixture).
      params: θ_0, e.g. ``model.init`` on a first batch.
      batches: see above.
      weights: ``(T, B)`` weights of stacked batches (None: ones).
      labels: ``(T, B)`` integer partial labels of stacked batches (-1 = unknown, k = the row's
        component is known to be k; mixtures only; `jaxem._labels`). An iterable yields them in
        its batches.
      fixed: names of fields of ``params`` kept at their starting values, as in `jaxem.fit`.
      n_samples: the size of the population the stream represents (its total weight; e.g. N
        for passes over N rows). Required when the model has a prior (and used only then): the
        M-step maximises n_samples · s_t with the prior.
      step_size: γ_t: a float in (0, 1], or a function / optax schedule of the 0-based step t (an
        int32 array; None: γ_t = (t + 2)^-0.6). Each value used must lie in (0, 1]. Evaluated on
        the host, before the run (stacked) or at each step (iterable).
      n_epochs: passes over the data (static).
      warmup: batches averaged at θ_0 before the first M-step (>= 1; 1 = M-step after every batch).
      average: return the Polyak-Ruppert average θ̄ = mean of θ_t over the steps t >= ``burn_in``
        (instead of the last θ_t). Averaging pays with slowly decaying step sizes
        (Cappé & Moulines: γ_t = t^-α, α ∈ (1/2, 1)), over a burn-in that skips the transient.
      burn_in: first step whose θ_t enters the average (None: half of all the steps; needs the
        number of steps up front: stacked batches, a sized iterable such as a list, or a callable
        whose iterables are sized).
      tol: when > 0, stop after the first pass whose mean per-batch log-likelihood differs from the
        previous pass's by less than ``tol`` (``converged=True``); unmet, the status carries
        ``MAX_ITER_REACHED``. ``tol=0``: run all ``n_epochs``; ``converged`` is False.
      callback: ``callback(t, params)`` after each step (Python-iterable input only).

    Returns:
      A `FitResult`: ``params`` (θ_T, or θ̄ with ``average``); ``trace[t]`` the mean log-likelihood
      of batch t at the parameters entering it (NaN for skipped steps); ``n_iter`` the number of
      steps taken; ``log_likelihood`` the running average s_T of the per-batch mean
      log-likelihoods (an estimate only: evaluate ``model.log_likelihood`` on held-out data for an
      exact figure); ``converged`` and ``status`` as above. With a prior, the log posterior per
      unit weight as in `jaxem.fit`: ``trace[t]`` adds log p̃(θ_{t-1}) / n_samples to batch t's
      mean log-likelihood, ``log_likelihood`` is the running average of these, and ``tol``
      compares their means over passes.

    Raises:
      ValueError: an empty iterable, a step size outside (0, 1], a feature-count mismatch,
        non-finite X, negative weights, labels outside [-1, K) or of the wrong shape, unknown
        ``fixed`` names, a prior without ``n_samples``, or bad arguments (for concrete input).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (10_000, 2))
      >>> model = jaxem.GaussianMixture(3)
      >>> params = model.init(jax.random.key(1), X[:1000])
      >>> result = jaxem.fit_online(model, params, X.reshape(20, 500, 2), n_epochs=2)
      >>> result.n_iter
      Array(40, dtype=int32)

      MAP EM with a prior (the population is the 10,000 rows), partial labels and fixed weights:

      >>> prior = jaxem.GaussianPrior(shrinkage=0.01, dof=4.0, scale=1.0)
      >>> labels = jax.numpy.full((20, 500), -1).at[0, :5].set(0)
      >>> result = jaxem.fit_online(jaxem.GaussianMixture(3, prior=prior), params,
      ...                           X.reshape(20, 500, 2), labels=labels, fixed=("weights",),
      ...                           n_samples=10_000)
      >>> bool((result.params.weights == params.weights).all())
      True
    """
    n_epochs, warmup = _check_counts(n_epochs, warmup, burn_in)
    n_samples = _check_n_samples(model, n_samples)
    fixed = check_fixed(params, fixed)
    if is_concrete(tol) and not float(tol) >= 0:
        raise ValueError(f"tol must be >= 0 (0: run all n_epochs), got {tol}.")
    gamma_fn = _gamma_fn(step_size)
    static = dict(n_samples=n_samples, fixed=fixed, average=bool(average))
    if callable(batches) or not _is_stacked(batches):
        for name, given in (("weights", weights), ("labels", labels)):
            if given is not None:
                raise ValueError(f"{name}= is for stacked batches (T, B, D); with an iterable, "
                                 "yield (X_b, w_b) pairs or (X_b, w_b, y_b) triples (w_b may be "
                                 f"None) with the {name} instead.")
        return _fit_iterable(model, params, batches, gamma_fn, n_epochs, warmup, burn_in, tol,
                             callback, **static)
    if callback is not None:
        raise ValueError("callback= is for an iterable of batches; stacked batches run inside one "
                         "lax.scan (split the array and pass a list to watch each step).")
    Xs, Ws, Ys = _stacked_data(model, params, batches, weights, labels)
    T = Xs.shape[0]
    n = n_epochs * T
    gammas, do_m = _gammas(gamma_fn, 0, n, warmup, Xs.dtype)
    start = n // 2 if burn_in is None else int(burn_in)
    do_avg = np.arange(n) >= start
    tol = jnp.asarray(tol, Xs.dtype)
    return _scan_compiled(model, params, Xs, Ws, Ys, gammas, do_m, do_avg, tol,
                          static.pop("n_samples"), n_epochs=n_epochs, **static)


def _check_n_samples(model, n_samples):
    """``n_samples`` when the model has a prior (then required: ValueError), else None."""
    if n_samples is not None and is_concrete(n_samples):
        try:
            ok = math.isfinite(float(n_samples)) and float(n_samples) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"n_samples must be a positive number (the size of the population "
                             f"the stream represents), got {n_samples!r}.")
    if active_prior(model) is None:
        return None
    if n_samples is None:
        raise ValueError(
            f"fit_online with a prior on the model needs n_samples= (the size, or total weight, "
            f"of the population the stream represents, e.g. n_samples=N for passes over N rows): "
            f"the prior then counts as much as in jaxem.fit on n_samples rows. (The online "
            f"statistics are per unit weight, so without it the prior's weight is undefined.)")
    return float(n_samples) if is_concrete(n_samples) else n_samples


def _check_counts(n_epochs, warmup, burn_in):
    if int(n_epochs) < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}.")
    if int(warmup) < 1:
        raise ValueError(f"warmup must be >= 1 (1 = an M-step after every batch), got {warmup}.")
    if burn_in is not None and int(burn_in) < 0:
        raise ValueError(f"burn_in must be >= 0 steps (or None: half of the steps), got {burn_in}.")
    return int(n_epochs), int(warmup)


def _is_stacked(batches) -> bool:
    if isinstance(batches, (jax.Array, np.ndarray)):
        return True
    return (isinstance(batches, tuple) and len(batches) == 2
            and isinstance(batches[0], (jax.Array, np.ndarray)) and np.ndim(batches[0]) == 3)


def _stacked_data(model, params, batches, weights, labels=None):
    if isinstance(batches, tuple):
        if weights is not None:
            raise ValueError("pass the weights in batches=(Xs, Ws) or as weights=, not both.")
        batches, weights = batches
    if np.ndim(batches) != 3:
        raise ValueError(
            f"stacked batches must have shape (T, B, D) (T batches of B rows), got "
            f"{np.shape(batches)}; pass a list of (B, D) arrays for batches of different sizes.")
    T, B, D = np.shape(batches)
    for name, a in (("weights", weights), ("labels", labels)):
        if a is not None and np.shape(a) != (T, B):
            raise ValueError(f"{name} of stacked batches must have shape (T, B) = ({T}, {B}), "
                             f"got {np.shape(a)}.")
    flat_w = None if weights is None else _reshape(weights, (T * B,))
    X, w = as_data(_reshape(batches, (T * B, D)), flat_w, model.n_features(params), "batches")
    if is_concrete(X, w):
        check_values(X, w, allow_nan=allows_missing(model))
        model.check_data(X)
    y = None if labels is None else check_labels(model, _reshape(labels, (T * B,)), w).reshape(T, B)
    return X.reshape(T, B, D), w.reshape(T, B), y


def _reshape(a, shape):
    """Reshape without a device program for host data."""
    return a.reshape(shape) if isinstance(a, (jax.Array, np.ndarray)) else np.reshape(a, shape)


def _epochs(batches, n_epochs):
    """The iterables of the successive passes."""
    if callable(batches):
        return (batches() for _ in range(n_epochs))
    if n_epochs > 1 and iter(batches) is batches:
        raise ValueError(
            "n_epochs > 1 needs batches that can be iterated again: pass a list, or a function "
            "returning a fresh iterable per pass (e.g. lambda: make_batches()), not an iterator.")
    return (batches for _ in range(n_epochs))


def _fit_iterable(model, params, batches, gamma_fn, n_epochs, warmup, burn_in, tol, callback, *,
                  n_samples, fixed, average):
    state = reference = dtype = None
    rows = D = None
    t, trace = 0, []
    start = None if not average else burn_in
    for iterable in _epochs(batches, n_epochs):
        if start is None and average:
            start = _half_steps(iterable, n_epochs)
        for batch in iterable:
            X, w, y = _batch(model, params, batch)
            if state is None:
                rows, D, dtype = X.shape[0], X.shape[1], X.dtype
                reference = model.statistics_reference(params)
                state = _init_compiled(model, params, reference, X, w)
            elif X.dtype != dtype:
                X, w = X.astype(dtype), w.astype(dtype)
            if X.shape[0] < rows:  # ragged: pad with weight-0 rows (label -1) to the compiled shape
                pad = rows - X.shape[0]
                X = jnp.concatenate([X, jnp.zeros((pad, D), X.dtype)])
                w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
                y = None if y is None else jnp.concatenate([y, jnp.full((pad,), -1, y.dtype)])
            g, m = _gammas(gamma_fn, t, 1, warmup, dtype)
            do_avg = average and start is not None and t >= start
            state, ll = _step_compiled(model, reference, state, X, w, y, g[0], m[0],
                                       np.bool_(do_avg), n_samples, fixed=fixed)
            trace.append(ll)
            t += 1
            if callback is not None:
                callback(t - 1, state.params)
        if state is None:
            raise ValueError("batches yielded no batch; pass at least one (B, D) array, or (X_b, "
                             "w_b) pair, per pass.")
        state = _end_epoch_compiled(state, jnp.asarray(tol, dtype))
        if bool(state.done):  # converged, or a fatal status: the rest would change nothing
            break
    trace = np.asarray(jax.device_get(trace), dtype)  # (no concatenation program per length)
    return _result_compiled(state, trace, jnp.asarray(tol, dtype), average=average)


def _half_steps(iterable, n_epochs):
    """Default burn-in: half of all the steps, from the first pass's length."""
    try:
        return (len(iterable) * n_epochs) // 2
    except TypeError:
        raise ValueError(
            "average=True needs burn_in= (the first step to average) when the number of batches "
            "is not known up front (an iterator without len); pass e.g. burn_in=1000.") from None


def _batch(model, params, batch):
    """A checked ``(X_b, w_b, y_b or None)`` from one item of the iterable."""
    if isinstance(batch, (tuple, list)):
        if len(batch) not in (2, 3):
            raise ValueError(f"each batch must be X_b (B, D), a pair (X_b, w_b) or a triple (X_b, "
                             f"w_b, y_b); got a {type(batch).__name__} of length {len(batch)}.")
        X, w, y = (*batch, None)[:3]
    else:
        X, w, y = batch, None, None
    X, w = as_data(X, w, model.n_features(params), "X_b")
    if is_concrete(X, w):
        check_values(X, w, allow_nan=allows_missing(model))
        model.check_data(X)
    return X, w, None if y is None else check_labels(model, y, w)
