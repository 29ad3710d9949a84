"""Differentiating through a fit: implicit differentiation at the EM fixed point.

At convergence θ* is a root of F(θ; X, w) = T(θ; X, w) - θ, where T is one EM iteration (E-step then
closed-form M-step). By the implicit function theorem (Dempster, Laird & Rubin 1977 give T's Jacobian;
see also Blondel et al. 2022, "Efficient and modular implicit differentiation"),

    ∂θ*/∂X = -(∂F/∂θ)⁻¹ ∂F/∂X = (I - ∂T/∂θ)⁻¹ ∂T/∂X,

so a JVP needs one linear solve with (∂T/∂θ - I) and a VJP one with its transpose. Both are Krylov
(GMRES) solves on Jacobian-vector products, converging at least as fast as EM itself; nothing of the
forward iterations is stored, so memory is that of one EM iteration whatever the iteration count.
A `jax.custom_jvp` identity carries the rule; its tangent solve is a `jax.lax.custom_linear_solve`
(transposable), so `jax.grad`, `jax.jvp`, `jax.jacfwd` and `jax.jacrev` all work, also under
`jax.vmap` and `jax.jit`. The rule is traced only when something is differentiated (unlike
`jax.lax.custom_root`, which traces the GMRES solve on every call: ~1 s of tracing per fit).

For generalized EM (`GradientMStep`, no closed-form T) the fixed point is a stationary point of the
mean log-likelihood, F(θ) = ∇_θ ℓ(θ; X, w) / Σw = 0, and the solve uses its Hessian.

The gradient is exact only at a fixed point: a fit that stopped on ``max_iter`` reports
``Status.MAX_ITER_REACHED``, and its implicit gradient is an approximation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._mstep import ClosedFormMStep


def _tree_sub(a, b):
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def root_function(model, updater, X, w):
    """F(θ) whose root is the EM fixed point (closes over X and w, the differentiated inputs)."""
    if isinstance(updater, ClosedFormMStep):
        return lambda theta: _tree_sub(model.em_update(theta, X, w)[0], theta)
    total = jnp.sum(w)
    return jax.grad(lambda theta: model.log_likelihood(theta, X, w) / total)


def _gmres(matvec, b):
    leaves = jax.tree_util.tree_leaves(b)
    dtype = leaves[0].dtype
    size = sum(l.size for l in leaves)
    tol = 1e-11 if dtype == jnp.float64 else 1e-6
    # "incremental" (Givens rotations) survives near-singular systems where "batched" (least squares
    # on the whole Krylov basis) breaks down to NaN, e.g. float32 near a saddle of the likelihood.
    x, _ = jax.scipy.sparse.linalg.gmres(
        matvec, b, tol=tol, atol=0.0, restart=min(size, 30), maxiter=max(10, size // 10),
        solve_method="incremental",
    )
    return x


def tangent_solve(g, y):
    """Solve the linearised root equation g(x) = y with GMRES, transposable for reverse mode."""
    return jax.lax.custom_linear_solve(g, y, _gmres, transpose_solve=_gmres)


def implicit_params(model, theta_star, X, w, *, updater):
    """Return ``theta_star`` (a converged EM fixed point) with derivatives w.r.t. X and w from the
    implicit function theorem: dθ* = -(∂F/∂θ)⁻¹ (∂F/∂X dX + ∂F/∂w dw).

    The forward loop has already run on stop-gradient inputs; this identity only attaches the
    tangent rule. The derivative with respect to the starting parameters is zero: a fixed point does
    not depend on where EM started, within its basin.
    """

    @jax.custom_jvp
    def attach(theta, X, w):
        return theta

    @attach.defjvp
    def _(primals, tangents):
        theta, X, w = primals
        _, dX, dw = tangents
        _, b = jax.jvp(lambda X, w: root_function(model, updater, X, w)(theta), (X, w), (dX, dw))
        F = root_function(model, updater, X, w)
        matvec = lambda v: jax.jvp(F, (theta,), (v,))[1]
        neg_b = jax.tree_util.tree_map(jnp.negative, b)
        return theta, tangent_solve(matvec, neg_b)

    return attach(jax.lax.stop_gradient(theta_star), X, w)
