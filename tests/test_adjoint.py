"""Differentiating through jaxem.fit: implicit (fixed point) and unrolled adjoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import blobs

# A well-separated problem run with tol=0 for 1500 iterations: EM reaches its fixed point to machine
# precision (at 400 the last step still moves the means by 1e-10, enough to spoil the differences
# at the 1e-6 level), so finite differences of the fit are differences of the fixed point itself.
X0, _ = blobs(seed=0, n=60, d=2, k=2, spread=5.0)
W0 = np.random.default_rng(1).uniform(0.5, 1.5, X0.shape[0])
FIT = dict(tol=0, max_iter=1500)


def _loss_fn(model, p0, adjoint="implicit", **fit_kw):
    kw = {**FIT, **fit_kw}

    def loss(X, w):
        r = jaxem.fit(model, p0, X, weights=w, adjoint=adjoint, **kw)
        p = r.params
        return (jnp.sum(p.means ** 2) + jnp.sum(p.covariances) + jnp.sum(jnp.log(p.weights) ** 2)
                + r.log_likelihood)

    return loss


def _central_difference(f, x, v, h=1e-5):
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_implicit_gradient_matches_finite_differences(ct):
    model = jaxem.GaussianMixture(2, ct)
    p0 = model.init(jax.random.key(0), X0)
    loss = jax.jit(_loss_fn(model, p0))
    gX, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(X0, W0)
    rng = np.random.default_rng(2)
    vX, vw = rng.normal(size=X0.shape), rng.normal(size=W0.shape)
    fd_X = _central_difference(lambda x: loss(x, W0), X0, vX)
    fd_w = _central_difference(lambda w: loss(X0, w), W0, vw)
    # float64 central differences with h=1e-5 are accurate to ~1e-9 relative here.
    assert abs(np.sum(gX * vX) - fd_X) <= 1e-6 * abs(fd_X)
    assert abs(np.sum(gw * vw) - fd_w) <= 1e-6 * abs(fd_w)
    # Forward mode (custom_root's JVP) agrees with reverse mode.
    _, jvp_X = jax.jvp(lambda x: loss(x, W0), (X0,), (vX,))
    np.testing.assert_allclose(jvp_X, np.sum(gX * vX), rtol=1e-9)


@pytest.mark.slow  # CI's 10-minute budget (10-20 s of compiles); run with -m slow
def test_forward_and_reverse_mode_are_transposes():
    """<u, J v> from jax.jvp equals <J^T u, v> from jax.vjp (forward mode is a real JVP rule)."""
    model = jaxem.GaussianMixture(2, "full")
    p0 = model.init(jax.random.key(0), X0)
    means = lambda w: jaxem.fit(model, p0, X0, weights=w, **FIT).params.means
    rng = np.random.default_rng(3)
    v, u = rng.normal(size=W0.shape), rng.normal(size=(2, 2))
    _, Jv = jax.jvp(means, (W0,), (v,))
    _, vjp = jax.vjp(means, W0)
    (JTu,) = vjp(jnp.asarray(u))
    np.testing.assert_allclose(np.sum(u * Jv), np.sum(JTu * v), rtol=1e-9)
    assert np.abs(np.sum(u * Jv)) > 1e-6  # not trivially zero


@pytest.mark.slow  # CI's 10-minute budget (10-20 s of compiles); run with -m slow
def test_implicit_equals_unrolled_at_convergence():
    model = jaxem.GaussianMixture(2, "full")
    p0 = model.init(jax.random.key(0), X0)
    # Derivative w.r.t. the data only: the unrolled one also flows through the start p0, whose
    # influence has decayed to nothing after 1500 contracting iterations.
    g_imp = jax.grad(_loss_fn(model, p0, "implicit"))(X0, W0)
    g_unr = jax.grad(_loss_fn(model, p0, "unrolled"))(X0, W0)
    np.testing.assert_allclose(g_imp, g_unr, rtol=1e-7, atol=1e-10)


def test_truncated_unrolled_differs_from_implicit():
    """Unrolled gradients of a 2-step fit are gradients of that truncated map, not of the optimum."""
    model = jaxem.GaussianMixture(2, "full")
    p0 = model.init(jax.random.key(0), X0, method="random")
    g2 = jax.grad(_loss_fn(model, p0, "unrolled", max_iter=2))(X0, W0)
    g_imp = jax.grad(_loss_fn(model, p0, "implicit"))(X0, W0)
    assert np.max(np.abs(g2 - g_imp)) > 1e-3


def test_grad_under_vmap_and_in_jitted_training_step():
    """Per-member gradients of a batch equal the single fits' gradients; the whole step is jitted."""
    model = jaxem.GaussianMixture(2, "diag")
    Xs = np.stack([X0, X0[::-1] * 1.1 + 0.3])
    P = jax.vmap(lambda x: model.init(jax.random.key(0), x))(Xs)

    def member_loss(A, p, x):
        r = jaxem.fit(model, p, x @ A, tol=1e-10, max_iter=300)
        return jnp.sum(r.params.means[:, 0] ** 2) - r.log_likelihood

    @jax.jit
    def step(A):
        loss = lambda A: jnp.sum(jax.vmap(member_loss, (None, 0, 0))(A, P, Xs))
        return jax.value_and_grad(loss)(A)

    A = jnp.eye(2) + 0.1
    _, g = step(A)
    g_single = sum(jax.grad(member_loss)(A, jax.tree_util.tree_map(lambda a: a[b], P), Xs[b])
                   for b in range(2))
    np.testing.assert_allclose(g, g_single, rtol=1e-6)


@pytest.mark.slow  # CI's 10-minute budget (10-20 s of compiles); run with -m slow
def test_implicit_backward_memory_does_not_grow_with_iterations():
    """XLA's compiled temp-buffer size: constant for implicit, growing for unrolled."""
    model = jaxem.GaussianMixture(2, "full")
    p0 = model.init(jax.random.key(0), X0)

    def temp_bytes(adjoint, iters):
        loss = lambda X: jnp.sum(jaxem.fit(model, p0, X, tol=0, max_iter=iters,
                                           adjoint=adjoint).params.means)
        return jax.jit(jax.grad(loss)).lower(X0).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes("implicit", 10) == temp_bytes("implicit", 500)
    assert temp_bytes("unrolled", 500) > 2 * temp_bytes("unrolled", 10)


def test_unconverged_fit_is_reported():
    model = jaxem.GaussianMixture(2, "full")
    p0 = model.init(jax.random.key(0), X0, method="random")
    r = jaxem.fit(model, p0, X0, tol=1e-12, max_iter=3)
    assert int(r.status) & jaxem.Status.MAX_ITER_REACHED
    assert "approximate" in jaxem.describe_status(r.status)


def test_ppca_implicit_gradient_matches_finite_differences(iris):
    """PPCA's fixed points form a manifold (W -> W R); rotation-invariant outputs are well defined."""
    X = iris[:60]
    model = jaxem.PPCA(2)
    p0 = model.init(jax.random.key(0), X)

    @jax.jit
    def loss(X):
        r = jaxem.fit(model, p0, X, tol=0, max_iter=3000)
        W = r.params.W
        return (jnp.sum((W @ W.T) ** 2) + r.params.noise_variance + jnp.sum(r.params.mean ** 2)
                + r.log_likelihood)

    g = jax.grad(loss)(X)
    v = np.random.default_rng(0).normal(size=X.shape)
    fd = _central_difference(loss, X, v)
    assert abs(np.sum(g * v) - fd) <= 1e-6 * abs(fd)


def test_mixture_model_gradient_m_step_implicit_gradient():
    """Generalized EM: the fixed point is a stationary point of the likelihood (root of its gradient)."""
    import optax
    from test_generalized_em import GMM, MM, to_constrained, to_unconstrained

    X, labels = blobs(2, n=80, d=2, k=3, spread=4)
    u0 = to_unconstrained(GMM.m_step(jax.nn.one_hot(labels, 3, dtype=X.dtype), X))
    # L-BFGS restarted each M-step drives the score to ~1e-13 within 300 iterations.
    m_step = jaxem.GradientMStep(optax.lbfgs(), num_steps=10, reset_state=True)

    @jax.jit
    def loss(X):
        r = jaxem.fit(MM, u0, X, m_step=m_step, tol=0, max_iter=300)
        c = to_constrained(r.params)
        return jnp.sum(c.means ** 2) + jnp.sum(c.covariances) + jnp.sum(c.weights ** 2) + r.log_likelihood

    g = jax.grad(loss)(X)
    v = np.random.default_rng(0).normal(size=X.shape)
    fd = _central_difference(loss, X, v)
    assert abs(np.sum(g * v) - fd) <= 1e-6 * abs(fd)


def test_tangent_solve_propagates_nan_instead_of_a_silent_zero():
    """GMRES returns its start (0) when |b| is not finite: the implicit adjoint's solve gives NaN
    there, so a NaN tangent never becomes a zero derivative; finite right-hand sides solve."""
    from jaxem._adjoint import tangent_solve

    g = lambda x: jax.tree_util.tree_map(lambda a: 2.0 * a, x)
    y = {"a": jnp.array([1.0, 4.0]), "b": jnp.array(3.0)}
    x = jax.jit(lambda y: tangent_solve(g, y))(y)
    np.testing.assert_allclose(x["a"], [0.5, 2.0], rtol=1e-10)
    np.testing.assert_allclose(x["b"], 1.5, rtol=1e-10)
    bad = jax.jit(lambda y: tangent_solve(g, y))({"a": jnp.array([1.0, jnp.nan]),
                                                   "b": jnp.array(3.0)})
    assert all(np.isnan(v).all() for v in jax.tree_util.tree_leaves(bad))
