"""Inference in a hidden Markov model: forward-backward (sequential and parallel in time), Viterbi.

Notation (Rabiner 1989; Bishop 2006, §13.2): states z_t ∈ {1..K}, initial probabilities π_k,
transition matrix A_jk = p(z_{t+1} = k | z_t = j), log emission densities ℓ_tk = log p(x_t | z_t = k).
Forward α_t(k) = p(x_1..x_t, z_t = k), backward β_t(k) = p(x_{t+1}..x_T | z_t = k); the smoothed
marginals γ_t(k) ∝ α_t(k) β_t(k) and the pairwise ξ_t(j, k) ∝ α_t(j) A_jk p(x_{t+1}|k) β_{t+1}(k).

Every function here takes ONE sequence ``log_b (T, K)`` and a ``mask (T,)`` (True on the sequence's
own steps, False on padding at the end); callers `jax.vmap` them over sequences. A padded step acts
as the identity (no emission, z_{t+1} = z_t), so padding changes neither the likelihood nor the
posteriors of the real steps, nor their gradients.

- `forward_backward`: `jax.lax.scan` in time. The carried α̂_t, β̂_t are normalised to sum to one
  and every product with an emission is taken in log space with the running maximum subtracted,
  log c_t = logsumexp_k(log (α̂_{t-1} A)_k + ℓ_tk), so log p(x) = Σ_t log c_t never under- or
  overflows whatever T (Rabiner's scaling, with the scales kept as logs). O(T K²) time.
- `forward_backward_parallel`: the same quantities by `jax.lax.associative_scan` over the
  log-semiring products of the K x K elements ψ_t(j, k) = log A_jk + ℓ_tk (Hassan, Särkkä &
  García-Fernández 2021, "Temporal parallelization of inference in hidden Markov models", IEEE TSP
  69): O(log T) depth, O(T K³) work and O(T K²) memory.
- `viterbi`: max-product recursion in log space and back-tracking (Viterbi 1967; Rabiner 1989, §III.B).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ... import _shard
from ..._where import where

# log 0 as a large finite number: log-semiring identities and impossible transitions stay finite,
# so gradients never meet inf - inf (representable in float32: sums of a few stay below 3e38).
NEG = -1e30


def safe_log(p):
    """log p with log 0 = `NEG` (finite; zero gradient there)."""
    return where(p > 0, jnp.log(where(p > 0, p, 1.0)), NEG)


def _lse(a, axis=-1):
    m = jax.lax.stop_gradient(jnp.max(a, axis=axis, keepdims=True))
    return jnp.log(jnp.sum(jnp.exp(a - m), axis=axis)) + jnp.squeeze(m, axis)


def forward_backward(log_pi, A, log_b, mask):
    """Smoothed marginals of one sequence by a sequential scan.

    Args:
      log_pi: ``(K,)`` log initial probabilities.
      A: ``(K, K)`` transition matrix (rows sum to one).
      log_b: ``(T, K)`` log emission densities ℓ_tk.
      mask: ``(T,)`` bool, True on real steps (a prefix of length >= 1).

    Returns:
      ``(gamma (T, K), xi_sum (K, K), log_likelihood ())``: γ_t (meaningless on padding; mask it),
      Σ_t ξ_t over the real transitions, and log p(x_1..x_L).
    """
    K = log_pi.shape[0]
    u0 = log_pi + log_b[0]
    c0 = _lse(u0)
    alpha0 = jnp.exp(u0 - c0)

    def fwd(carry, inp):
        alpha, ll = carry
        lb, m = inp
        u = safe_log(alpha @ A) + lb
        c = _lse(u)
        new = jnp.exp(u - c)
        alpha = where(m, new, alpha)
        return (alpha, ll + where(m, c, 0.0)), alpha

    (_, ll), alphas = jax.lax.scan(fwd, (alpha0, c0), (log_b[1:], mask[1:]), unroll=4)
    alphas = jnp.concatenate([alpha0[None], alphas], 0)  # (T, K), normalised α̂_t

    ones = _shard.varying(jnp.full((K,), 1.0 / K, log_b.dtype), _shard.varying_axes((log_b,)))

    def bwd(beta, inp):  # beta = β̂_{t+1}; inp holds ℓ_{t+1}, mask_{t+1}
        lb, m = inp
        v = lb + safe_log(beta)
        e = jnp.exp(v - jax.lax.stop_gradient(jnp.max(v)))  # ∝ p(x_{t+1} | k) β_{t+1}(k)
        q = A @ e
        new = q / jnp.sum(q)
        return where(m, new, ones), (where(m, new, ones), e, q)

    _, (betas, es, qs) = jax.lax.scan(bwd, ones, (log_b[1:], mask[1:]), reverse=True, unroll=4)
    betas = jnp.concatenate([betas, ones[None]], 0)  # (T, K), normalised β̂_t
    g = alphas * betas
    gamma = g / jnp.sum(g, 1, keepdims=True)
    # ξ_t(j, k) = α̂_t(j) A_jk e_t(k) / Σ_jk (same): one GEMM over t for the sum.
    norm = jnp.sum(alphas[:-1] * qs, 1)
    scale = where(mask[1:] & (norm > 0), 1.0 / where(norm > 0, norm, 1.0), 0.0)
    xi_sum = A * ((alphas[:-1] * scale[:, None]).T @ es)
    return gamma, xi_sum, ll


def _log_matmul(a, b):
    """Log-semiring product: out_ik = logsumexp_j (a_ij + b_jk), batched over leading axes."""
    return _lse(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def forward_backward_parallel(log_pi, A, log_b, mask):
    """`forward_backward` by associative scans (Hassan, Särkkä & García-Fernández 2021).

    Forward: α_t = ψ_0 ⊗ ψ_1 ⊗ ... ⊗ ψ_t in the log semiring, with ψ_0(j, k) = log π_k + ℓ_0k for
    every j and ψ_t(j, k) = log A_jk + ℓ_tk (the identity on padding); log α_t is any row of the
    prefix. Backward: log β_t(j) = logsumexp_k (ψ_{t+1} ⊗ ... ⊗ ψ_{T-1})(j, k), a reverse scan.
    """
    T, K = log_b.shape
    dtype = log_b.dtype
    log_A = safe_log(A)
    eye = jnp.eye(K, dtype=bool)
    log_I = where(eye, 0.0, NEG).astype(dtype)
    psi = where(mask[:, None, None], log_A[None] + log_b[:, None, :], log_I[None])  # (T, K, K)
    first = jnp.broadcast_to((log_pi + log_b[0])[None, :], (K, K))
    psi = psi.at[0].set(first)
    prefix = jax.lax.associative_scan(_log_matmul, psi)
    log_alpha = prefix[:, 0, :]  # (T, K)
    # reverse=True combines as fn(later, earlier): swap the operands to keep ψ_{t+1} ⊗ ... ⊗ ψ_{T-1}.
    suffix = jax.lax.associative_scan(lambda a, b: _log_matmul(b, a), psi[1:], reverse=True)
    log_beta = jnp.concatenate([_lse(suffix, -1), jnp.zeros((1, K), dtype)], 0)
    ll = _lse(log_alpha[-1])
    gamma = jax.nn.softmax(log_alpha + log_beta, axis=1)
    lx = log_alpha[:-1, :, None] + psi[1:] + log_beta[1:, None, :] - ll
    xi_sum = jnp.sum(where(mask[1:, None, None], jnp.exp(lx), 0.0), 0)
    return gamma, xi_sum, ll


def viterbi(log_pi, log_A, log_b, mask):
    """Most probable state path argmax_z p(z, x) of one sequence: ``(T,)`` int32, -1 on padding."""
    K = log_pi.shape[0]
    log_I = where(jnp.eye(K, dtype=bool), 0.0, NEG).astype(log_b.dtype)
    delta0 = log_pi + log_b[0]

    def fwd(delta, inp):
        lb, m = inp
        s = delta[:, None] + where(m, log_A, log_I)  # (from j, to k)
        arg = jnp.argmax(s, 0).astype(jnp.int32)
        return jnp.max(s, 0) + where(m, lb, 0.0), arg

    delta, back = jax.lax.scan(fwd, delta0, (log_b[1:], mask[1:]))
    last = jnp.argmax(delta).astype(jnp.int32)

    def bwd(z, ptr):
        prev = ptr[z]
        return prev, prev

    _, path = jax.lax.scan(bwd, last, back, reverse=True)
    path = jnp.concatenate([path, last[None]])
    return where(mask, path, -1)


def forward_backward_scaled(log_pi, A, log_b, mask):
    """`forward_backward` for a batch ``log_b (S, T, K)``, ``mask (S, T)`` by Rabiner's scaling
    (`forward_backward_time_major` on the transposed arrays).

    Returns ``(gamma (S, T, K), xi_sum (S, K, K), log_likelihood (S,))``.
    """
    gamma, xi, ll = forward_backward_time_major(log_pi, A, jnp.swapaxes(log_b, 0, 1),
                                                jnp.swapaxes(mask, 0, 1))
    return jnp.swapaxes(gamma, 0, 1), xi, ll


def _small_matmul(x, M):
    """``x (S, K) @ M (K, K)`` for small K as K broadcast multiply-adds, which XLA fuses with the
    step's other elementwise work into one loop (a library matrix product per step of a scan costs
    more than its 2 S K² flops when K is small); a plain product for K > 16."""
    K = M.shape[0]
    if K > 16:
        return x @ M
    out = x[:, 0:1] * M[0][None]
    for j in range(1, K):
        out = out + x[:, j:j + 1] * M[j][None]
    return out


def forward_backward_time_major(log_pi, A, log_b, mask, seq_weights=None, frame_weights=None):
    """Forward-backward for a batch of S sequences stored time-major, ``log_b (T, S, K)``, ``mask
    (T, S)``, by Rabiner's scaling, with one fallback: the fast route on CPU.

    The emissions enter as b̃_tk = exp(ℓ_tk - max_k ℓ_tk) (one vectorised pass; 1 on padding), so
    each step of the two scans is a K x K matrix product (for small K written as K multiply-adds,
    fused with the rest of the step), a product and a sum on ``(S, K)`` arrays, with no
    transcendental inside the loop; the log-normalisers log c_t = log s_t + max_k ℓ_tk are
    summed after it (log p(x) = Σ_t log c_t, so no underflow in T). Time-major storage makes every
    step read and write contiguous rows, and γ_t = α̂_t β̂_t / Σ_k α̂_t β̂_t is formed inside the
    backward scan, so no pass over ``(T, S, K)`` arrays is spent on transposes or concatenations.
    With ``seq_weights`` the backward scan carries Σ_s w_s Σ_t ξ_{s,t} as one ``(K, K)`` array
    (a ``(K, S) @ (S, K)`` product per step) instead of ``(S, K, K)``.
    Padding needs no mask inside the loop because it is at the end: forward values past a
    sequence's end are never read, and with b̃ = 1 there the backward recursion β̂ ∝ A 1 = 1
    arrives uniform at the last real step, as it should. A step's s_t can underflow only if every
    state that the transitions reach explains x_t worse than some unreachable state by more than
    the dtype's exponent range (708 nats in float64, 87 in float32; e.g. transitions that EM drove
    to ~0). If that happens anywhere in the batch, the whole batch is recomputed by the log-space
    `forward_backward` (a `jax.lax.cond`; under a caller's `jax.vmap` both run).

    Args:
      log_pi: ``(K,)``; A: ``(K, K)``; log_b: ``(T, S, K)``; mask: ``(T, S)`` bool.
      seq_weights: optional ``(S,)``: return Σ_s w_s Σ_t ξ_{s,t} ``(K, K)`` instead of per sequence.
      frame_weights: optional ``(T, S)``: return w_ts γ_t instead of γ_t (formed in the scan: no
        extra pass over ``(T, S, K)``).

    Returns ``(gamma (T, S, K), xi (S, K, K) or (K, K), log_likelihood (S,))``; γ is meaningless
    on padding (mask it, or pass ``frame_weights`` 0 there).
    """
    T, S, K = log_b.shape
    dtype = log_b.dtype
    # The shift is added back to log p(x) below, so its derivative cancels: stopped, as in `_lse`
    # (a max's JVP finds the maximum by equality with a recomputed ℓ, which XLA need not repeat
    # bit for bit: unoptimised, d log p(x)/dX came out NaN).
    m = jax.lax.stop_gradient(jnp.max(log_b, -1))  # (T, S)
    # One pass (mask, shift, exponential); materialised once: the barrier keeps XLA from fusing
    # the exponential into both loops.
    bt = jax.lax.optimization_barrier(jnp.exp(where(mask[..., None], log_b - m[..., None], 0.0)))
    pi = jnp.exp(log_pi)
    steps = jnp.arange(T)
    At = A.T

    def fwd(alpha, inp):  # α̂_t ∝ (α̂_{t-1} A) ∘ b̃_t, with α̂_{-1} A := π
        b, t = inp
        a = where(t == 0, pi[None], _small_matmul(alpha, A)) * b
        s = jnp.sum(a, -1)
        alpha = a / s[:, None]
        return alpha, (alpha, s)

    # Initial carries vary over the axes of an enclosing jax.shard_map that the data vary over
    # (sequences split over devices), as a scan's carry types must match its body's.
    axes = _shard.varying_axes((bt,))
    vary = lambda z: _shard.varying(z, axes)
    _, (alphas, ss) = jax.lax.scan(fwd, vary(jnp.zeros((S, K), dtype)), (bt, steps), unroll=8)
    ones = vary(jnp.full((S, K), 1.0 / K, dtype))
    last = T - 1
    # Transition t -> t+1 is real when step t+1 is (padding is at the end).
    on = jnp.concatenate([mask[1:], jnp.zeros((1, S), bool)], 0).astype(dtype)
    pooled = seq_weights is not None  # Σ_s w_s ξ_s carried as (K, K)
    if pooled:
        on = on * seq_weights.astype(dtype)[None]

    def bwd(carry, inp):  # carry β̂_{t+1} and Σ_{t' > t} ξ_t'; emit γ_t
        beta, acc = carry
        alpha, o, t, fw = inp
        b = where(t == last, 1.0, jax.lax.dynamic_index_in_dim(bt, jnp.minimum(t + 1, last),
                                                               keepdims=False))
        e = b * beta  # ∝ p(x_{t+1} | k) β_{t+1}(k)
        q = _small_matmul(e, At)
        n = jnp.sum(q, -1)
        beta = q / n[:, None]
        g = alpha * beta
        gs = jnp.sum(g, -1)
        # ξ_t(j, k) = α̂_t(j) A_jk e(k) / Σ_jk(same), and Σ_jk = n Σ_j α̂_t(j) β̂_t(j) = n gs;
        # A multiplies the sum once at the end.
        c = o / where(n * gs > 0, n * gs, 1.0)
        ac = alpha * c[:, None]
        acc = acc + (ac.T @ e if pooled else ac[:, :, None] * e[:, None, :])
        return (beta, acc), (g * (fw / gs)[:, None], n)

    zero = vary(jnp.zeros((K, K) if pooled else (S, K, K), dtype))
    fws = jnp.ones((T, S), dtype) if frame_weights is None else frame_weights.astype(dtype)
    (_, acc), (gamma, ns) = jax.lax.scan(bwd, (ones, zero), (alphas, on, steps, fws),
                                         reverse=True, unroll=8)
    xi = A * acc if pooled else A[None] * acc
    ll = jnp.sum(where(mask, jnp.log(ss) + m, 0.0), 0)
    ok = (jnp.min(where(mask, ss, 1.0)) > 0) & (jnp.min(ns) > 0) & jnp.all(jnp.isfinite(ll))

    def fallback(ops):
        log_pi, A, log_b, mask = ops
        g, x, l = jax.vmap(forward_backward, (None, None, 1, 1), (1, 0, 0))(log_pi, A, log_b, mask)
        x = x if seq_weights is None else jnp.einsum("s,sjk->jk", seq_weights, x)
        g = g if frame_weights is None else g * fws[..., None]
        return g.reshape(T * S, K), x, l

    # γ leaves the cond as (T S, K): its row-major layout is then the fast branch's (a (T, S, K)
    # result took the fallback's sequence-major layout and cost a transposing copy every call).
    g, xi, ll = jax.lax.cond(ok, lambda ops: (gamma.reshape(T * S, K), xi, ll), fallback,
                             (log_pi, A, log_b, mask))
    return g.reshape(T, S, K), xi, ll
