"""The hidden-Markov-model base: data layout, expected sufficient statistics, closed-form M-step.

Baum-Welch (Baum et al. 1970; Rabiner 1989, §III.C; Bishop 2006, §13.2.1) is EM on the complete
data (x, z). With γ_t(k) = p(z_t = k | x) and ξ_t(j, k) = p(z_t = j, z_{t+1} = k | x) from
forward-backward (`._inference`), and per-sequence weights w_s, the expected sufficient statistics
are additive over sequences:
  initial counts      n⁰_k  = Σ_s w_s γ_{s,1}(k)
  transition counts   n_jk  = Σ_s w_s Σ_t ξ_{s,t}(j, k)
  emission statistics        those of a K-component mixture with responsibilities w_s γ_{s,t}(k)
  log-likelihood      Σ_s w_s log p(x_s),   total weight Σ_s w_s · length_s,
and the M-step is π_k = n⁰_k / Σ_j n⁰_j, A_jk = n_jk / Σ_k' n_jk' (a row with no count keeps its
previous value), and the emission family's own M-step (`GaussianMixture`'s, `PoissonMixture`'s...).

Internal layout (what `prepare_data` hands to `jaxem.fit`'s loop and `em_update` reads): ``X (S, T,
D)`` floating with padded frames set to 0, and frame weights ``w (S, T)`` = w_s · [t < length_s].
Σ w is then Σ_s w_s length_s, so the driver's per-sample mean is the per-time-step mean; the mask is
w > 0 and a sequence's weight is w[s, 0]. Public methods take ``(T, D)`` or ``(S, T, D)`` with
``lengths (S,)`` and ``weights (S,)``.

Known states (``labels (S, T)`` or ``(T,)``, -1 unknown; `jaxem._labels`): at a step with a known
state y_t the emission log-densities of the other states are masked (log 0), the standard clamping
of forward-backward. γ_t is then one-hot on y_t, ξ only counts transitions consistent with the
known states, and the likelihood is p(x, z_t = y_t at the known steps).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ... import _prior
from ..._checks import as_key
from ..._precision import warn_if_downcast
from ..._status import Status, flag
from ..._compile import compiled
from ..._labels import check_labels, clamp
from ..._validate import device_array, is_concrete
from ..._where import select, where
from ._inference import (NEG, forward_backward, forward_backward_parallel,
                         forward_backward_scaled, forward_backward_time_major, safe_log, viterbi)

INFERENCE = ("auto", "sequential", "parallel")


class HMMStatistics(NamedTuple):
    """Expected complete-data sufficient statistics of an HMM (additive over sequences).

    Attributes:
      initial_counts: ``(K,)`` Σ_s w_s γ_{s,1}.
      transition_counts: ``(K, K)`` Σ_s w_s Σ_t ξ_{s,t}.
      emission: the emission family's statistics with responsibilities w_s γ_{s,t} (for Gaussian
        emissions a `jaxem.GaussianMixtureStatistics` about the means).
      log_likelihood: ``()`` Σ_s w_s log p(x_s | θ).
      total_weight: ``()`` Σ_s w_s · length_s.
      n_invalid: ``()`` frames outside the emission's support (0 for valid data).
    """

    initial_counts: jax.Array
    transition_counts: jax.Array
    emission: Any
    log_likelihood: jax.Array
    total_weight: jax.Array
    n_invalid: jax.Array


class HMMPosterior(NamedTuple):
    """E-step posterior: ``state_probs (S, T, K)`` γ (0 on padding) and ``transition_counts
    (S, K, K)`` Σ_t ξ_t per sequence."""

    state_probs: jax.Array
    transition_counts: jax.Array


class HiddenMarkovModel:
    """Shared machinery of every HMM; emission families (frozen dataclasses) provide:
    ``_log_emission_fn(params) -> (frames (N, D) -> (N, K))``, ``_emission_statistics(params,
    frames, rw)``, ``_emission_maximize(est, params) -> (params, status)``, ``_emission_init``,
    ``_draw(key, params, z)``, ``_n_emission_parameters(params)``, ``_invalid(frames)`` and
    ``_frame_shape`` (1 for integer-valued sequences ``(S, T)``, 2 for ``(S, T, D)``)."""

    n_states: int
    inference: str = "auto"
    _frame_ndim = 2  # a frame is a (D,) vector; Categorical: a scalar
    _supports_labels = True
    _support_message = ""

    def _check_config(self):
        if int(self.n_states) < 1:
            raise ValueError(f"n_states must be >= 1, got {self.n_states}.")
        if self.inference not in INFERENCE:
            raise ValueError(f"unknown inference {self.inference!r}; choose one of {INFERENCE}.")

    @property
    def n_components(self) -> int:
        return self.n_states

    # --- data -----------------------------------------------------------------------------------
    def _as_sequences(self, X, weights=None, lengths=None, check=True):
        """Public layout -> internal ``(X (S, T, D), w (S, T), single)``; ValueError outside jit
        for bad input (naming the argument), NaN frame weights under jit for bad lengths."""
        if weights is not None and lengths is None and np.ndim(weights) == 2 and np.ndim(X) == 3:
            return X, weights, False  # already internal (the fit loop)
        if not isinstance(X, (jax.Array, jax.core.Tracer)):
            X = np.asarray(X)
        nd = self._frame_ndim
        if X.ndim == nd:
            X, single = X[None], True
        elif X.ndim == nd + 1:
            single = False
        else:
            want = "(T, D) or (S, T, D)" if nd == 2 else "(T,) or (S, T)"
            raise ValueError(f"X must have shape {want} (one sequence, or S sequences padded at "
                             f"the end), got shape {X.shape}.")
        if nd == 1:
            X = X[..., None]
        S, T = X.shape[:2]
        if np.shape(weights if weights is not None else np.ones(S)) != (S,):
            raise ValueError(f"weights must have shape (n_sequences,) = ({S},), got "
                             f"{np.shape(weights)}.")
        if lengths is not None and np.shape(lengths) != (S,):
            raise ValueError(f"lengths must have shape (n_sequences,) = ({S},), got "
                             f"{np.shape(lengths)}.")
        dtype = X.dtype if jnp.issubdtype(X.dtype, jnp.floating) else jnp.result_type(float)
        warn_if_downcast(dtype, stacklevel=4)  # float64 data computed in float32: say so once
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        if is_concrete(X, weights, lengths):  # host data: NumPy, nothing compiled per shape
            Xn = np.asarray(X, dtype)
            wn = np.ones(S, dtype) if weights is None else np.asarray(weights, dtype)
            ln = np.full(S, T) if lengths is None else np.asarray(lengths)
            if not np.issubdtype(ln.dtype, np.integer) and not np.all(ln == np.round(ln)):
                raise ValueError("lengths must be integers (the number of real steps of each "
                                 "sequence).")
            if np.any(ln < 1) or np.any(ln > T):
                raise ValueError(f"lengths must lie in [1, T] = [1, {T}] (sequences padded at the "
                                 f"end), got min {ln.min()}, max {ln.max()}.")
            mask = np.arange(T)[None, :] < ln[:, None]
            Xm = np.where(mask[..., None], Xn, 0.0).astype(dtype)
            if check:
                self._check_values(Xm, wn, mask)
            w = np.where(mask, wn[:, None], 0.0).astype(dtype)
            return device_array(Xm), device_array(w), single
        X = jnp.asarray(X, dtype)
        weights = jnp.ones(S, dtype) if weights is None else jnp.asarray(weights, dtype)
        lengths = jnp.full(S, T, jnp.int32) if lengths is None else jnp.asarray(lengths)
        mask = jnp.arange(T)[None, :] < lengths[:, None]
        bad_len = (lengths < 1) | (lengths > T)
        w = where(mask, weights[:, None], 0.0)
        w = where(bad_len[:, None], jnp.nan, w)  # under jit: INVALID_INPUT via the data status
        Xm = where(mask[..., None], X, 0.0)  # padding never reaches the computation
        return Xm, w, single

    def _check_values(self, X, weights, mask):
        Xn = np.asarray(X)
        if not np.all(np.isfinite(Xn)):
            bad = np.argwhere(~np.all(np.isfinite(Xn), axis=-1))
            raise ValueError(f"X contains NaN or inf in {len(bad)} frame(s) within the sequences' "
                             f"lengths (first (sequence, step): {bad[:3].tolist()}); drop or impute "
                             "them (padding beyond `lengths` may hold anything).")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative (one per sequence).")
        bad = ~np.asarray(self._valid(Xn)) & mask
        if np.any(bad):
            raise ValueError(self._support_message + f" ({int(bad.sum())} bad frame(s), first "
                             f"(sequence, step): {np.argwhere(bad)[:3].tolist()}).")

    def _valid(self, X):
        """``(S, T)`` bool: frames inside the emission's support (NumPy or JAX arrays)."""
        return np.ones(X.shape[:2], bool)

    def prepare_data(self, X, weights=None, lengths=None, params=None):
        """The `jaxem.fit` hook: public data -> ``(X (S, T, D), frame weights (S, T))``, checked
        (ValueError outside jit; under jit bad lengths give NaN weights, i.e. INVALID_INPUT)."""
        X, w, _ = self._as_sequences(X, weights, lengths)
        D = self.n_features(params) if params is not None and self._frame_ndim == 2 else None
        if D is not None:
            if X.shape[-1] != D:
                raise ValueError(f"X has {X.shape[-1]} features but the parameters were made for "
                                 f"{D}.")
        return X, w

    def check_data(self, X) -> None:
        pass

    # --- inference ------------------------------------------------------------------------------
    def _use_parallel(self, T: int) -> bool:
        if self.inference == "auto":
            return jax.default_backend() != "cpu" and T >= 256
        return self.inference == "parallel"

    def _log_emission_time_major(self, params, frames):
        """``(N, K)`` log emission densities for the statistics pass (a family may use a faster
        route there, e.g. `GaussianHMM`'s moment features)."""
        return self._log_emission_fn(params)(frames)

    def _log_b(self, params, X):
        S, T, D = X.shape
        return self._log_emission_fn(params)(X.reshape(S * T, D)).reshape(S, T, -1)

    def _posteriors(self, params, X, w, labels=None):
        """γ ``(S, T, K)``, Σ_t ξ ``(S, K, K)``, log p(x_s) ``(S,)`` and the frames' log b
        (``labels (S, T)``: known states, the others' emissions masked)."""
        log_b = clamp(self._log_b(params, X), labels, NEG)
        log_pi = safe_log(params.initial_probs)
        args = (log_pi, params.transition_matrix, log_b, w > 0)
        if self._use_parallel(X.shape[1]):
            gamma, xi, ll = jax.vmap(forward_backward_parallel, (None, None, 0, 0))(*args)
        else:
            gamma, xi, ll = forward_backward_scaled(*args)
        return gamma, xi, ll, log_b

    # --- expected sufficient statistics and the M-step -------------------------------------------
    def sufficient_statistics(self, params, X, weights=None, lengths=None, *, labels=None
                              ) -> HMMStatistics:
        """Expected sufficient statistics at ``params`` (an `HMMStatistics`), additive over
        sequences; `maximize` of them is one Baum-Welch iteration. ``labels (S, T)`` or ``(T,)``:
        known states (-1 unknown), clamped."""
        X, w, _ = self._as_sequences(X, weights, lengths)
        return _run(self, "_statistics", params, X, w, _labels(self, labels, w))

    def _statistics(self, params, X, w, labels=None) -> HMMStatistics:
        S, T = X.shape[:2]
        ws = w[:, 0]
        if self._use_parallel(T):
            gamma, xi, ll, _ = self._posteriors(params, X, w, labels)
            xi = jnp.einsum("s,sjk->jk", ws, xi)
            frames, rw = X.reshape(S * T, *X.shape[2:]), (gamma * w[..., None]).reshape(S * T, -1)
            n0 = ws @ gamma[:, 0]
        else:
            # Time-major throughout (the frames are transposed once, not the (T, S, K) arrays):
            # log b, both scans and the emission statistics read contiguous rows.
            Xt, wt = jnp.swapaxes(X, 0, 1), w.T
            frames = Xt.reshape(T * S, *X.shape[2:])
            log_b = self._log_emission_time_major(params, frames).reshape(T, S, -1)
            log_b = clamp(log_b, None if labels is None else labels.T, NEG)  # known states
            rw, xi, ll = forward_backward_time_major(  # rw = w γ, formed in the scan
                safe_log(params.initial_probs), params.transition_matrix, log_b, wt > 0, ws, wt)
            n0 = jnp.sum(rw[0], 0)  # Σ_s w_s γ_s,1
            rw = rw.reshape(T * S, -1)
        est = self._emission_statistics(params, frames, rw)
        invalid = jnp.sum(where(~self._valid(X) & (w > 0), 1.0, 0.0))
        return HMMStatistics(
            initial_counts=n0,
            transition_counts=xi,
            emission=est,
            log_likelihood=jnp.sum(where(ws > 0, ws * ll, 0.0)),
            total_weight=jnp.sum(w),
            n_invalid=invalid,
        )

    def maximize(self, stats: HMMStatistics, params):
        """The closed-form M-step from `sufficient_statistics`."""
        return _maximize_jit(self, stats, params)[0]

    def _maximize(self, st: HMMStatistics, params):
        dtype = params.transition_matrix.dtype
        n0, counts = st.initial_counts, st.transition_counts
        prior = _prior.active(self)
        tiny = 10 * jnp.finfo(dtype).eps * jnp.sum(counts)
        if prior is not None:  # Dirichlet rows: the posterior mode (n + α - 1) / Σ (n + α - 1)
            n0 = n0 + (_prior._array(prior.initial, n0.dtype) - 1.0)
            counts = counts + (_prior._array(prior.transition, counts.dtype) - 1.0)
        pi = n0 / jnp.sum(n0)
        row = jnp.sum(counts, 1, keepdims=True)
        A = where(row > tiny, counts / where(row > 0, row, 1.0), params.transition_matrix)
        new, status = self._emission_maximize(st.emission, params)
        new = new._replace(initial_probs=pi.astype(dtype), transition_matrix=A.astype(dtype))
        bad = st.n_invalid > 0
        return select(bad, params, new), status | flag(bad, Status.INVALID_INPUT)

    def _log_prior(self, params):
        """θ-dependent part of log p(θ) under ``prior`` (`jaxem.HMMPrior`)."""
        p = _prior.active(self)
        lp = (_prior.dirichlet_log_kernel(params.initial_probs, p.initial)
              + _prior.dirichlet_log_kernel(params.transition_matrix, p.transition))
        return lp if p.emission is None else lp + self._emission_log_prior(p.emission, params)

    def _maximize_fixed(self, st: HMMStatistics, params, fixed):
        """`_maximize` with ``fixed`` fields held (ECM, `jaxem._fixed`): π, A and the emission's
        maximisers do not depend on each other; the emission family conditions its own
        statistics (`_fix_emission_statistics`). The caller restores the fixed fields."""
        return self._maximize(st._replace(
            emission=self._fix_emission_statistics(st.emission, params, fixed)), params)

    def _fix_emission_statistics(self, est, params, fixed):
        return est

    def em_update(self, params, X, w, labels=None):
        """One Baum-Welch iteration on internal data: ``(new_params, log_likelihood, status)``."""
        from ..._prior import log_posterior_sum

        st = self._statistics(params, X, w, labels)
        new, status = self._maximize(st, params)
        return new, log_posterior_sum(self, params, st.log_likelihood.astype(X.dtype)), status

    # --- E-step, Q, likelihoods -------------------------------------------------------------------
    def e_step(self, params, X, weights=None, lengths=None, *, labels=None):
        """``(HMMPosterior, Σ_s w_s log p(x_s))``; ``labels`` (known states, -1 unknown) clamp
        the posterior and make the second output Σ_s w_s log p(x_s, known states)."""
        X, w, _ = self._as_sequences(X, weights, lengths)
        return _run(self, "_e_step", params, X, w, _labels(self, labels, w))

    def _e_step(self, params, X, w, labels=None):
        gamma, xi, ll, _ = self._posteriors(params, X, w, labels)
        ws = w[:, 0]
        post = HMMPosterior(where((w > 0)[..., None], gamma, 0.0), xi)
        return post, jnp.sum(where(ws > 0, ws * ll, 0.0))

    def q_function(self, params, posterior: HMMPosterior, X, weights=None, lengths=None):
        """Q = Σ_s w_s [Σ_k γ_1k log π_k + Σ_jk ξ_jk log A_jk + Σ_t Σ_k γ_tk log p(x_t | k)]."""
        X, w, _ = self._as_sequences(X, weights, lengths)
        ws = w[:, 0]
        log_b = self._log_b(params, X)
        g = posterior.state_probs
        q0 = g[:, 0] @ safe_log(params.initial_probs)
        qa = jnp.einsum("sjk,jk->s", posterior.transition_counts,
                        safe_log(params.transition_matrix))
        qb = jnp.sum(where(g > 0, g * log_b, 0.0), (1, 2))
        return jnp.sum(ws * (q0 + qa + qb))

    def score_samples(self, params, X, lengths=None):
        """``(S,)`` log p(x_s | params) per sequence (a scalar for one ``(T, D)`` sequence)."""
        X, w, single = self._as_sequences(X, None, lengths)
        ll = _run(self, "_posteriors", params, X, w)[2]
        return ll[0] if single else ll

    def log_likelihood(self, params, X, weights=None, lengths=None, *, labels=None):
        """Σ_s w_s log p(x_s | params) (with ``labels``: log p(x_s, the known states))."""
        X, w, _ = self._as_sequences(X, weights, lengths)
        return _run(self, "_e_step", params, X, w, _labels(self, labels, w))[1]

    def predict_proba(self, params, X, lengths=None):
        """Smoothed marginals p(z_t = k | x): ``(S, T, K)`` (0 on padding) or ``(T, K)``."""
        X, w, single = self._as_sequences(X, None, lengths)
        g = _run(self, "_e_step", params, X, w)[0].state_probs
        return g[0] if single else g

    def predict(self, params, X, lengths=None):
        """Viterbi path argmax_z p(z | x): ``(S, T)`` int32 (-1 on padding) or ``(T,)``."""
        X, w, single = self._as_sequences(X, None, lengths)
        path = _run(self, "_viterbi", params, X, w)
        return path[0] if single else path

    def _viterbi(self, params, X, w):
        return jax.vmap(viterbi, (None, None, 0, 0))(
            safe_log(params.initial_probs), safe_log(params.transition_matrix),
            self._log_b(params, X), w > 0)

    # --- sampling and model selection ------------------------------------------------------------
    def sample(self, key, params, T: int, n_sequences: int = 1, return_states: bool = False):
        """Draw ``n_sequences`` sequences of length ``T``: ``X (n, T, D)`` (Categorical ``(n, T)``),
        and the states ``(n, T)`` if ``return_states``."""
        x, z = _sample_jit(self, key, params, int(T), int(n_sequences))
        return (x, z) if return_states else x

    def _sample(self, key, params, T, n_sequences):
        k0, kz, kx = jax.random.split(key, 3)
        log_pi = safe_log(params.initial_probs)
        log_A = safe_log(params.transition_matrix)
        z0 = jax.random.categorical(k0, log_pi, shape=(n_sequences,))

        def step(z, k):
            znew = jax.random.categorical(k, log_A[z])
            return znew, znew

        _, zs = jax.lax.scan(step, z0, jax.random.split(kz, T - 1))
        z = jnp.concatenate([z0[None], zs], 0).T  # (n, T)
        return self._draw(kx, params, z), z

    def n_parameters(self, params) -> int:
        K = self.n_states
        return (K - 1) + K * (K - 1) + self._n_emission_parameters(params)

    def bic(self, params, X, lengths=None):
        """-2 log L + p log(number of frames) (lower is better); with a prior, L is the
        likelihood at the MAP estimate (Fraley & Raftery 2007), not the posterior."""
        _, w, _ = self._as_sequences(X, None, lengths)
        n = jnp.sum(where(w > 0, 1.0, 0.0))
        return -2.0 * self.log_likelihood(params, X, None, lengths) + self.n_parameters(
            params) * jnp.log(n)

    def aic(self, params, X, lengths=None):
        """-2 log L + 2 p (lower is better)."""
        return -2.0 * self.log_likelihood(params, X, None, lengths) + 2.0 * self.n_parameters(params)

    # --- initialisation ---------------------------------------------------------------------------
    def _start_probs(self, dtype):
        """π uniform; A = ½ I + ½ · 1/K (a diagonal bias: states persist)."""
        K = self.n_states
        pi = jnp.full((K,), 1.0 / K, dtype)
        A = 0.5 * jnp.eye(K, dtype=dtype) + 0.5 / K
        return pi, A

    def init(self, key, X, lengths=None):
        """Starting parameters from the frames (see each family), π uniform, A = ½ I + ½/K.
        ``key``: a `jax.random` key or an int seed."""
        key = as_key(key)
        X, w, _ = self._as_sequences(X, None, lengths)
        S, T, D = X.shape
        return _init_jit(self, key, X, w)

    def _init(self, key, X, w):
        S, T, D = X.shape
        pi, A = self._start_probs(X.dtype)
        return self._emission_init(key, X.reshape(S * T, D), w.reshape(S * T), pi, A)


# Compiled once per (model, method, shapes) for eager calls; inlined under a caller's jit/vmap/grad.
@compiled(static_argnames=("model", "method"))
def _run_jit(model, method, params, X, w, labels=None):
    if labels is None:
        return getattr(model, method)(params, X, w)
    return getattr(model, method)(params, X, w, labels)


def _run(model, method, params, X, w, labels=None):
    return _run_jit(model, method, params, X, w, labels)


def _labels(model, labels, w):
    """Checked ``labels`` in the internal ``(S, T)`` layout (None stays None)."""
    return None if labels is None else check_labels(model, labels, w)


@compiled(static_argnames=("model", "T", "n"))
def _sample_jit(model, key, params, T, n):
    return model._sample(key, params, T, n)


@compiled(static_argnames=("model",))
def _init_jit(model, key, X, w):
    return model._init(key, X, w)


@compiled(static_argnames=("model",))
def _maximize_jit(model, stats, params):
    return model._maximize(stats, params)
