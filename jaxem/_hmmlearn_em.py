"""The compiled Baum-Welch of `jaxem.hmmlearn`: hmmlearn's MAP M-step on jaxem's HMM statistics.

E-step: jaxem's normalised forward-backward (`forward_backward`, Rabiner 1989 §III.C; Bishop 2006
§13.2.2) vmapped over the sequences, and the emission family's expected statistics
(`jaxem.GaussianHMM` etc.). M-step: hmmlearn 0.3's `_do_mstep`, term by term:
  π_k ∝ max(α_k - 1 + n⁰_k, 0),  A_jk ∝ max(β_jk - 1 + n_jk, 0)   (Dirichlet priors α, β; an
      entry that is 0 stays 0, as hmmlearn's left-right models need),
  μ_k = (τ μ⁰_k + Σ_t γ_tk x_t) / (τ + N_k)                         (normal prior μ⁰, τ),
  Σ_k = (Ψ + τ (μ_k - μ⁰_k)(·)ᵀ + Σ_t γ_tk (x_t - μ_k)(·)ᵀ) / (ν' + N_k)   (inverse-gamma /
      inverse-Wishart prior Ψ = covars_prior, ν' = max(covars_weight - 1, 0) for diag/spherical
      (denominator floored at 1e-5), max(covars_weight - D, 0) for full/tied; spherical averages
      the diagonal; tied sums numerators and N_k over the states)
  (Huang, Acero & Hon 2001, "Spoken Language Processing", pp. 443-445),
  B_kc ∝ max(e - 1 + n_kc, 0) (categorical), λ_k = (a + N ȳ_k) / (b + N) with N = Σ_k N_k (Poisson,
  hmmlearn's gamma prior form). Letters missing from ``params`` keep their parameters.
The stopping rule is hmmlearn's ConvergenceMonitor: stop after the first iteration whose gain in
total log-likelihood is below ``tol``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import compiled
from ._where import where
from .models.hmm import HMMStatistics
from .models.hmm._inference import forward_backward, safe_log
from .models.hmm._inference import viterbi as _viterbi


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static description of a fit: the jaxem model used for the E-step, hmmlearn's family and
    covariance type, and the letters of ``params`` (updated; the others are held fixed)."""

    model: object
    family: str  # "gaussian" | "categorical" | "poisson"
    letters: str
    covariance_type: str = ""


def _m_step(spec: _Spec, st, p, prior):
    """hmmlearn's `_do_mstep` from jaxem's expected statistics (`HMMStatistics`)."""
    L = spec.letters
    new = {}
    if "s" in L:
        sp = jnp.maximum(prior["startprob"] - 1 + st.initial_counts, 0)
        sp = where(p.initial_probs == 0, 0.0, sp)
        new["initial_probs"] = sp / jnp.sum(sp)
    if "t" in L:
        tm = jnp.maximum(prior["transmat"] - 1 + st.transition_counts, 0)
        tm = where(p.transition_matrix == 0, 0.0, tm)
        row = jnp.sum(tm, 1, keepdims=True)
        new["transition_matrix"] = where(row > 0, tm / where(row > 0, row, 1.0),
                                         p.transition_matrix)
    em = st.emission
    if spec.family == "categorical" and "e" in L:
        e = jnp.maximum(prior["emissionprob"] - 1 + em, 0)
        row = jnp.sum(e, 1, keepdims=True)
        new["emission_probs"] = where(row > 0, e / where(row > 0, row, 1.0), p.emission_probs)
    if spec.family == "poisson" and "l" in L:
        post, obs = em
        n = jnp.sum(post)
        y_bar = obs / where(post > 0, post, 1.0)[:, None]
        lam = (prior["lambdas_prior"] + n * y_bar) / (prior["lambdas_weight"] + n)
        new["rates"] = where((post > 0)[:, None], lam, p.rates)
    if spec.family == "gaussian":
        new.update(_gaussian_m_step(spec, em, p, prior))
    return p._replace(**new)


def _gaussian_m_step(spec, em, p, prior):
    """hmmlearn's GaussianHMM M-step (Huang, Acero & Hon 2001, pp. 443-445), with the residual
    statistics about the current means (``em``: `GaussianMixtureStatistics`) in place of raw
    moments: Σγ(x - μ)(x - μ)ᵀ = S - d sᵀ - s dᵀ + N d dᵀ with d = μ - μ_old."""
    L, ct = spec.letters, spec.covariance_type
    n, sx, sxx = em.counts, em.sum_x, em.sum_xx
    mu_old = p.means
    mp, mw = prior["means_prior"], prior["means_weight"]
    out = {}
    mu = mu_old
    if "m" in L:
        obs = sx + n[:, None] * mu_old
        den = mw + n[:, None]
        mu = where(den > 0, (mw * mp + obs) / where(den > 0, den, 1.0), mu_old)
        out["means"] = mu
    if "c" in L:
        cp, cw = prior["covars_prior"], prior["covars_weight"]
        d = mu - mu_old
        md = mu - mp
        if ct in ("spherical", "diag"):
            c_n = mw * md ** 2 + sxx - 2 * d * sx + n[:, None] * d * d
            c_d = jnp.maximum(cw - 1, 0) + n[:, None]
            cov = (cp + c_n) / jnp.maximum(c_d, 1e-5)
            if ct == "spherical":
                cov = jnp.broadcast_to(jnp.mean(cov, 1, keepdims=True), cov.shape)
            out["covariances"] = cov
        else:
            D = mu.shape[1]
            outer = lambda a, b: a[:, :, None] * b[:, None, :]
            mw3 = mw if np.ndim(mw) == 0 else mw[..., None]
            c_n = mw3 * outer(md, md) + (
                sxx - outer(d, sx) - outer(sx, d) + n[:, None, None] * outer(d, d))
            cvw = jnp.maximum(cw - D, 0)
            if ct == "tied":
                tot = cvw + jnp.sum(n)
                cov = (cp + jnp.sum(c_n, 0)) / tot
                cov = jnp.broadcast_to(cov, c_n.shape)
                out["covariances"] = where(tot > 0, cov, p.covariances)
            else:
                den = cvw + n[:, None, None]
                cov = (cp + c_n) / where(den > 0, den, 1.0)
                out["covariances"] = where(den > 0, cov, p.covariances)
    return out


def _e_step(model, p, X, w):
    """Baum-Welch's expected statistics (`HMMStatistics`) by jaxem's normalised forward-backward
    (`forward_backward`, one `lax.scan` each way, vmapped over the sequences) and the family's
    emission statistics; also γ ``(S, T, K)``, log p(x_s) ``(S,)`` and the log-densities."""
    log_b = model._log_b(p, X)
    mask = w > 0
    gamma, xi, ll = jax.vmap(forward_backward, (None, None, 0, 0))(
        safe_log(p.initial_probs), p.transition_matrix, log_b, mask)
    gamma = where(mask[..., None], gamma, 0.0)
    ws = w[:, 0]
    S, T, D = X.shape
    rw = (gamma * w[..., None]).reshape(S * T, -1)
    st = HMMStatistics(
        initial_counts=ws @ gamma[:, 0],
        transition_counts=jnp.einsum("s,sjk->jk", ws, where(ws[:, None, None] > 0, xi, 0.0)),
        emission=model._emission_statistics(p, X.reshape(S * T, D), rw),
        log_likelihood=jnp.sum(where(ws > 0, ws * ll, 0.0)),
        total_weight=jnp.sum(w),
        n_invalid=jnp.zeros((), X.dtype))
    return st, gamma, ll, log_b


@compiled(static_argnames=("spec", "trace_len"))
def _fit_program(spec, params, prior, X, w, n_iter, tol, *, trace_len):
    """Baum-Welch with hmmlearn's M-step and stopping rule for at most ``n_iter`` iterations
    (traced): ``(params, trace, n_run, ok)``; ``trace[i]`` is the total log-likelihood at the
    parameters entering iteration i (so a run of one iteration scores the given parameters); a
    non-finite log-likelihood or update stops at the last finite parameters (``ok`` False)."""
    model = spec.model

    def cond(s):
        i, _, _, done, _ = s
        return (i < n_iter) & ~done

    def body(s):
        i, p, trace, _, _ = s
        st = _e_step(model, p, X, w)[0]
        ll = st.log_likelihood
        new = _m_step(spec, st, p, prior)
        ok = jnp.isfinite(ll) & jax.tree_util.tree_reduce(
            jnp.logical_and, jax.tree_util.tree_map(lambda a: jnp.all(jnp.isfinite(a)), new))
        trace = trace.at[i].set(ll)
        conv = (i >= 1) & (ll - trace[jnp.maximum(i - 1, 0)] < tol)
        p = jax.tree_util.tree_map(lambda a, b: where(ok, a, b), new, p)
        return i + 1, p, trace, conv | ~ok, ok

    init = (jnp.int32(0), params, jnp.full((trace_len,), jnp.nan, X.dtype), jnp.bool_(False),
            jnp.bool_(True))
    n_run, p, trace, _, ok = jax.lax.while_loop(cond, body, init)
    return p, trace, n_run, ok


@compiled(static_argnames=("model",))
def _infer_program(model, params, X, w):
    """At ``params``: γ ``(S, T, K)``, log p(x_s) ``(S,)``, the emission log-densities
    ``(S, T, K)``, the Viterbi paths ``(S, T)`` and their log-probabilities ``(S,)``."""
    _, gamma, ll, log_b = _e_step(model, params, X, w)
    path, score = _viterbi_paths(params, log_b, w > 0)
    return gamma, ll, log_b, path, score


def _viterbi_paths(params, log_b, mask):
    """Viterbi paths ``(S, T)`` (-1 on padding) and their log-probabilities ``(S,)``."""
    log_pi = safe_log(params.initial_probs)
    log_A = safe_log(params.transition_matrix)
    path = jax.vmap(_viterbi, (None, None, 0, 0))(log_pi, log_A, log_b, mask)
    z = jnp.maximum(path, 0)
    lb = jnp.take_along_axis(log_b, z[..., None], -1)[..., 0]
    la = log_A[z[:, :-1], z[:, 1:]]
    score = (log_pi[z[:, 0]] + jnp.sum(where(mask, lb, 0.0), 1)
             + jnp.sum(where(mask[:, 1:], la, 0.0), 1))
    return path.astype(jnp.int32), score


# --- data layout ----------------------------------------------------------------------------------
def _bucket(n: int, lo: int, pow2_upto: int) -> int:
    """Padded size: >= lo; a power of two up to ``pow2_upto`` (few distinct shapes, hence few
    compiles, for small data); beyond, a multiple of 2^(bits(n) - 4) (<= 1/8 extra work)."""
    if n <= lo:
        return lo
    if n <= pow2_upto:
        return 1 << (n - 1).bit_length()
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def _split_lengths(X, lengths):
    if lengths is None:
        return np.asarray([len(X)])
    lengths = np.asarray(lengths, dtype=int).reshape(-1)
    if lengths.sum() != len(X):
        raise ValueError(f"lengths array {lengths} doesn't sum to {len(X)} samples")
    if np.any(lengths < 1):
        raise ValueError(f"lengths must be positive, got {lengths}")
    return lengths


def _to_sequences(X, lengths):
    """Concatenated ``(n_samples, D)`` -> padded ``(S', T', D)`` float64 and frame weights
    ``(S', T')`` (1 on real frames), with S' and T' rounded up to buckets."""
    lengths = _split_lengths(X, lengths)
    S, T = len(lengths), int(lengths.max())
    Sp, Tp = _bucket(S, 1, 64), _bucket(T, 16, 256)
    D = X.shape[1]
    Xs = np.zeros((Sp, Tp, D))
    w = np.zeros((Sp, Tp))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, (a, n) in enumerate(zip(starts, lengths)):
        Xs[s, :n] = X[a:a + n]
        w[s, :n] = 1.0
    return Xs, w, lengths


def _unpad(arr, lengths):
    """``(S', T', ...)`` -> concatenated ``(n_samples, ...)``."""
    return np.concatenate([arr[s, :n] for s, n in enumerate(lengths)])


def _x64():
    return jax.enable_x64(True)


def _normalize(a, axis=None):
    a = np.array(a, dtype=float)
    s = a.sum(axis)
    if axis and a.ndim > 1:
        s[s == 0] = 1
        s = np.expand_dims(s, axis)
    return a / s
