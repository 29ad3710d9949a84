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

Partial labels (``jaxem.fit(..., labels=...)``) are part of T (they clamp its E-step) and are not
differentiated (integers). Fixed fields (``fixed=...``) are inputs of the fit, not unknowns: with
c their held values and θ_f the free fields, the root equation is F(θ_f; X, w, c) = T(θ_f, c)_f - θ_f
(for generalized EM: the gradient of the log-likelihood with respect to θ_f at (θ_f, c)), solved
for the free fields only. So the fitted fixed fields have derivative 1 with respect to the values
passed in and 0 with respect to X and w, and the free fields' derivatives with respect to c come
from the same solve (how the fit moves when a held value changes); the derivative with respect
to the starting values of the free fields stays 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._fixed import free_part, with_free
from ._labels import with_labels
from ._mstep import ClosedFormMStep, em_map
from ._prior import log_posterior_sum
from ._where import all_finite, where


def _tree_sub(a, b):
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def root_function(model, updater, X, w, labels=None, anchor=None):
    """F whose root is the EM fixed point (closes over X and w, the differentiated inputs;
    ``labels`` clamp the E-step). Without ``anchor``: F(θ) over all of θ. With ``anchor`` (params
    holding the values c of the updater's fixed fields): F over the free fields only, a dict
    ``{name: value}`` -> dict, at θ|c (see the module docstring)."""
    fixed = getattr(updater, "fixed", ()) if anchor is not None else ()
    full = (lambda free: with_free(anchor, free)) if fixed else (lambda theta: theta)
    part = (lambda theta: free_part(theta, fixed)) if fixed else (lambda theta: theta)
    if isinstance(updater, ClosedFormMStep):
        return lambda v: _tree_sub(part(em_map(model, full(v), X, w, labels, fixed)[0]), v)
    total = jnp.sum(w)  # generalized EM: a stationary point of the log posterior (prior=)
    grad = jax.grad(lambda v: log_posterior_sum(
        model, full(v), model.log_likelihood(full(v), X, w, **with_labels(labels))) / total)
    closed = getattr(model, "closed_form_fields", ())
    if not closed:
        return grad

    # Fields the model's `finish_m_step` sets in closed form (jaxem.HMM's π and A, on the
    # simplex, where the likelihood's gradient does not vanish): their equations are the
    # closed-form update's residual T(θ)_f - θ_f; the others' the gradient.
    def F(v):
        theta = full(v)
        posterior, _ = model.e_step(theta, X, w, **with_labels(labels))
        return _select_fields(grad(v), _tree_sub(part(model.finish_m_step(
            theta, posterior, X, w)), v), closed)

    return F


def _select_fields(tree, replacement, names):
    """``tree`` (params or a ``{name: value}`` dict of free fields) with the fields in ``names``
    taken from ``replacement``."""
    if isinstance(tree, dict):
        return {k: (replacement[k] if k in names else v) for k, v in tree.items()}
    return tree._replace(**{f: getattr(replacement, f) for f in names if f in tree._fields})


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
    # GMRES stops at once when |b| is not finite (its residual test is then False) and returns its
    # start, 0: a NaN tangent or cotangent would become a silent zero derivative. NaN instead.
    ok = all_finite(b)
    return jax.tree_util.tree_map(lambda a: where(ok, a, jnp.nan), x)


def tangent_solve(g, y):
    """Solve the linearised root equation g(x) = y with GMRES, transposable for reverse mode."""
    return jax.lax.custom_linear_solve(g, y, _gmres, transpose_solve=_gmres)


def implicit_params(model, theta_star, X, w, *, updater, labels=None, anchor=None):
    """Return ``theta_star`` (a converged EM fixed point) with derivatives w.r.t. X and w from the
    implicit function theorem: dθ* = -(∂F/∂θ)⁻¹ (∂F/∂X dX + ∂F/∂w dw).

    The forward loop has already run on stop-gradient inputs; this identity only attaches the
    tangent rule. The derivative with respect to the starting parameters is zero: a fixed point does
    not depend on where EM started, within its basin; except for the values of the updater's fixed
    fields, read from ``anchor`` (the starting params), which the fixed point does depend on.
    """
    if not getattr(updater, "fixed", ()):
        anchor = None

    @jax.custom_jvp
    def attach(theta, X, w, labels, anchor):
        return theta

    @attach.defjvp
    def _(primals, tangents):
        theta, X, w, labels, anchor = primals
        _, dX, dw, _, da = tangents
        F_of = lambda X, w, a: root_function(model, updater, X, w, labels, a)
        if anchor is None:
            v = theta
            _, b = jax.jvp(lambda X, w: F_of(X, w, None)(v), (X, w), (dX, dw))
        else:  # unknowns: the free fields; the fixed ones' tangent is that of their values
            v = free_part(theta, updater.fixed)
            _, b = jax.jvp(lambda X, w, a: F_of(X, w, a)(v), (X, w, anchor), (dX, dw, da))
        F = F_of(X, w, anchor)
        matvec = lambda u: jax.jvp(F, (v,), (u,))[1]
        neg_b = jax.tree_util.tree_map(jnp.negative, b)
        dv = tangent_solve(matvec, neg_b)
        return theta, (dv if anchor is None else with_free(da, dv))

    return attach(jax.lax.stop_gradient(theta_star), X, w, labels, anchor)
