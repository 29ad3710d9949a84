"""M-step strategies used by `jaxem.fit`: the family's closed form, or optax ascent on Q."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import _shard
from ._fixed import maximize_fixed, restore
from ._labels import with_labels
from ._prior import log_posterior_sum, log_prior
from ._status import Status, flag
from ._where import select, where


@dataclasses.dataclass(frozen=True)
class ClosedFormMStep:
    """The model's own closed-form maximiser of Q (its fused, streamed ``em_update``).

    What `jaxem.fit` uses when ``m_step=None``; passing it explicitly is the same fit.
    ``fixed``: names of params fields held at their values (ECM; see `jaxem._fixed`; set by
    ``jaxem.fit(..., fixed=...)``).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (100, 2))
      >>> model = jaxem.GaussianMixture(2)
      >>> params = model.init(jax.random.key(1), X)
      >>> a = jaxem.fit(model, params, X)
      >>> b = jaxem.fit(model, params, X, m_step=jaxem.ClosedFormMStep())
      >>> bool(a.log_likelihood == b.log_likelihood), int(a.n_iter) == int(b.n_iter)
      (True, True)
    """

    fixed: tuple = ()

    def init(self, model, params, X, w):
        return ()

    def update(self, model, params, state, X, w, labels=None):
        """Returns ``(new_params, new_state, log_likelihood_at_params, status)``.

        With X split by rows over devices (`jaxem._shard`), the statistics are each device's
        rows' sum and ONE all-reduce; the M-step runs replicated. ``labels`` (row-aligned with
        ``w``; -1 unknown) clamp the posteriors (`jaxem._labels`)."""
        new, ll, status = em_map(model, params, X, w, labels, self.fixed)
        return new, state, ll, jnp.asarray(status, jnp.int32)


def em_map(model, params, X, w, labels=None, fixed=()):
    """One EM iteration T(θ) = maximize(statistics(θ)): ``(new_params, log_likelihood, status)``,
    with ``labels`` clamping the posteriors and the ``fixed`` fields held (the map `jaxem.fit`
    iterates and the implicit adjoint differentiates)."""
    rows = _shard.current()
    if _shard.applies(rows, X.shape[0]) and _has_statistics(model):
        if labels is None:
            st = _shard.reduce_rows(rows, lambda X, w: model._statistics(params, X, w), (X, w))
        else:
            st = _shard.reduce_rows(
                rows, lambda X, l, w: model._statistics(params, X, w, labels=l), (X, labels, w))
    elif labels is None and not fixed:
        return model.em_update(params, X, w)
    else:
        st = model._statistics(params, X, w, **with_labels(labels))
    new, status = maximize_fixed(model, st, params, fixed)
    # with a prior: + log p(θ) (the log posterior, which MAP EM increases; em_update adds it too)
    return new, log_posterior_sum(model, params, st.log_likelihood.astype(X.dtype)), status


def _has_statistics(model) -> bool:
    """Whether ``model``'s EM iteration is `_maximize` ∘ `_statistics` (the base `em_update`
    or the families' own equivalent), so that the statistics can be all-reduced between."""
    from .models._base import Model

    cls = type(model)
    return (cls._statistics is not Model._statistics and cls._maximize is not Model._maximize)


@dataclasses.dataclass(frozen=True)
class GradientMStep:
    """Generalized EM: the M-step is ``num_steps`` optax updates ascending Q, the posterior fixed.

    Each EM iteration at θ_old runs the E-step (responsibilities r = p(Z | X, θ_old) and the
    log-likelihood at θ_old), then minimises the per-sample negative Q-function

        f(θ) = -Q(θ, θ_old) / Σ_n w_n = -(1/Σw) Σ_n w_n Σ_k r_nk log p(x_n, z_n=k | θ)

    from θ_0 = θ_old by ``num_steps`` optimizer updates (one `jax.lax.scan`):
    g_j = ∇f(θ_j), (u_j, s) = optimizer.update(g_j, s, θ_j), θ_{j+1} = θ_j + u_j. Dividing by Σw makes
    learning rates independent of N. The optimizer state s is carried from one EM iteration to the
    next (``reset_state=True`` re-initialises it at every iteration). Optimizers that need the objective
    (``optax.lbfgs`` and other line searches) get ``value``, ``grad`` and ``value_fn`` (Dempster, Laird
    & Rubin 1977, §3 "GEM"; Lange 1995, "A gradient algorithm locally equivalent to the EM algorithm").

    GEM keeps EM's monotonicity only if the M-step does not lower Q: since log p(X|θ) - log p(X|θ_old)
    ≥ Q(θ, θ_old) - Q(θ_old, θ_old), Q(θ_new) ≥ Q(θ_old) implies the log-likelihood did not decrease.
    An M-step that lowers Q (by more than rounding, 10³·eps·(1 + |f(θ_old)|)) sets
    ``Status.Q_DECREASED`` in the fit's status. With ``safe=True`` the M-step returns the best iterate
    θ_j (j = 0..num_steps) in Q instead of the last one, so Q never decreases (θ_old is a candidate)
    and the log-likelihood trace is non-decreasing; the flag still reports overshooting steps. If
    every step of an M-step is rejected (non-finite, or lowering Q) the parameters cannot move: the
    fit stops there with ``Status.STEP_REJECTED`` (a failure; ``converged`` is False), rather than
    mistaking the unchanged log-likelihood for convergence. Lower the learning rate.

    The optimizer moves every leaf of ``params`` freely: it is meant for unconstrained
    parametrisations (softmax logits, log-scales, Cholesky factors with log-diagonal; see
    `jaxem.MixtureModel`). It runs on closed-form models too, replacing their M-step, but their
    params are constrained (e.g. `jaxem.GaussianMixture`'s ``weights`` on the simplex and SPD
    ``covariances``): restrict the optimizer to the unconstrained leaves (``optax.multi_transform`` with
    ``optax.set_to_zero()`` for the others), or use a `jaxem.MixtureModel` in unconstrained coordinates.

    The step is a frozen, hashable dataclass (usable as a static argument). It hashes by the identity
    of the optimizer's functions: build the optimizer once and reuse it, so that `jax.jit` caches hit.

    Args:
      optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-2)``, ``optax.lbfgs()``).
      num_steps: optimizer updates per EM iteration (static).
      reset_state: re-initialise the optimizer state at every EM iteration.
      safe: keep the best iterate in Q, never one that lowered it.
      fixed: names of params fields the optimizer does not move (set by ``jaxem.fit(...,
        fixed=...)``): Q is differentiated with them held constant and they are restored after
        every update (also after ``finish_m_step``), so they keep their values bit for bit.

    Example:
      >>> import jax, optax, jaxem
      >>> import jax.numpy as jnp
      >>> def log_joint(p, x):  # two unit-variance Gaussians in 1-D, weights as logits
      ...     return jax.nn.log_softmax(p["logits"]) + jax.scipy.stats.norm.logpdf(x[0], p["loc"])
      >>> model = jaxem.MixtureModel(log_joint, n_components=2)
      >>> X = jnp.concatenate([jnp.full((50, 1), -2.0), jnp.full((50, 1), 2.0)])
      >>> params = {"logits": jnp.zeros(2), "loc": jnp.array([-0.5, 0.5])}
      >>> gm = jaxem.GradientMStep(optax.adam(0.05), num_steps=10, safe=True)
      >>> result = jaxem.fit(model, params, X, m_step=gm, max_iter=200)
      >>> [round(float(m), 1) for m in result.params["loc"]]
      [-2.0, 2.0]
    """

    optimizer: optax.GradientTransformation
    num_steps: int = 10
    reset_state: bool = False
    safe: bool = False
    fixed: tuple = ()

    def __post_init__(self):
        if not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            raise ValueError(
                "optimizer must be an optax.GradientTransformation (with init and update), e.g. "
                f"optax.adam(1e-2); got {type(self.optimizer).__name__}."
            )
        if int(self.num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}.")

    def init(self, model, params, X, w):
        return self.optimizer.init(params)

    def update(self, model, params, state, X, w, labels=None):
        """Returns ``(new_params, new_state, log_likelihood_at_params, status)``; ``labels``
        clamp the E-step's posterior (`jaxem._labels`)."""
        posterior, ll = model.e_step(params, X, w, **with_labels(labels))
        ll = log_posterior_sum(model, params, ll)
        posterior = jax.lax.stop_gradient(posterior)
        total_w = jnp.sum(w)
        fixed = self.fixed
        held = jax.lax.stop_gradient(params)

        # (jaxem.HMM: π and A held in the prior too; they are set in closed form after)
        m_step_prior = getattr(model, "_m_step_log_prior", lambda p: log_prior(model, p))

        def f(p):  # -(Q(p, θ_old) + log p̃(p)) / Σw (with a prior: MAP generalized EM), the
            p = restore(p, held, fixed)  # fixed fields held (zero gradient for them)
            return -(model.q_function(p, posterior, X, w) + m_step_prior(p)) / total_w

        import optax  # imported on use: a closed-form fit never needs it (0.1 s of `import jaxem`)

        opt = optax.with_extra_args_support(self.optimizer)
        state = self.optimizer.init(params) if self.reset_state else _invalidate_cache(state)
        value_and_grad = (
            optax.value_and_grad_from_state(f) if _has_cached_value(state) else
            lambda p, state: jax.value_and_grad(f)(p)
        )

        def body(carry, _):
            p, s, best, best_f = carry
            value, grad = value_and_grad(p, state=s)
            better = value < best_f  # p is θ_j; keep the best seen (safe mode)
            best = select(better, p, best)
            best_f = where(better, value, best_f)
            updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
            return (restore(optax.apply_updates(p, updates), params, fixed), s, best, best_f), value

        inf = jnp.asarray(jnp.inf, ll.dtype)
        (last, state, best, best_f), values = jax.lax.scan(
            body, (params, state, params, inf), None, length=int(self.num_steps)
        )
        f_old, f_last = values[0], f(last)
        tol = 1e3 * jnp.finfo(ll.dtype).eps * (1.0 + jnp.abs(f_old))
        # `~(a <= b)` rather than `a > b`: a NaN objective counts as a decrease of Q.
        status = flag(~(f_last <= f_old + tol), Status.Q_DECREASED)
        if self.safe:
            take_last = f_last < best_f
            new = select(take_last, last, best)
            # No iterate beat θ_old although some step was non-finite or lowered Q: the M-step
            # rejected everything. The parameters would not move and the next E-step would look
            # converged; report it instead (a failure that stops the loop).
            moved = take_last | (best_f < f_old)
            # (a boolean all, not a max: XLA's CPU max reduction can drop NaNs)
            rose = ~jnp.all(jnp.append(values, f_last) <= f_old + tol)
            status = status | flag(~moved & rose, Status.STEP_REJECTED)
        else:
            new = last
        finish = getattr(model, "finish_m_step", None)  # closed-form parts (jaxem.HMM's π and A)
        if finish is not None:
            new = restore(finish(new, posterior, X, w), params, fixed)
        return new, state, ll, status



def _has_cached_value(state) -> bool:
    """Whether the optimizer state stores the objective (line searches: ``value`` and ``grad``)."""
    import optax

    try:
        return optax.tree.get(state, "value") is not None
    except KeyError:  # several line searches in one chain: do not use the cache
        return False


def _invalidate_cache(state):
    """Mark a cached objective value stale: Q changes with the posterior at every EM iteration, so
    `optax.value_and_grad_from_state` must recompute it (it does when the value is inf)."""
    import optax

    if not _has_cached_value(state):
        return state
    value = optax.tree.get(state, "value")
    return optax.tree.set(state, value=jnp.full_like(value, jnp.inf))
