"""SQUAREM (`jaxem.fit(..., accelerate="squarem")`): EM's fixed point in fewer EM steps, monotone,
under jit/vmap, with the implicit adjoint unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxem
from helpers import assert_tree_allclose


def _overlapping(seed=0, n=300):
    """Two heavily overlapping Gaussians: EM converges slowly (rate close to 1)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, (n // 2, 2)), rng.normal(1.0, 1.2, (n // 2, 2))])


def _low_noise(seed=0, n=200):
    """Low-rank data with small noise: EM's loadings grow to their length slowly (the rate tends
    to 1 as the noise variance does)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(5, 2)) * 3.0
    return rng.normal(size=(n, 2)) @ W.T + 0.2 * rng.normal(size=(n, 5))


CASES = {
    "gmm_full": (jaxem.GaussianMixture(2, "full"), _overlapping),
    "ppca": (jaxem.PPCA(2), _low_noise),
    "factor_analysis": (jaxem.FactorAnalysis(2), _low_noise),
}

_FITS = {}


def _fit(name, accelerate, tol, max_iter):
    key = (name, accelerate, max_iter)
    if key not in _FITS:
        model = CASES[name][0]
        _FITS[key] = _jit(lambda p, X, tol: jaxem.fit(model, p, X, tol=tol, max_iter=max_iter,
                                                         accelerate=accelerate))
    return _FITS[key]


@pytest.mark.parametrize("name", list(CASES))
def test_squarem_reaches_em_fixed_point_in_fewer_em_steps_monotonically(name):
    model, make = CASES[name]
    X = make()
    p0 = model.init(jax.random.key(1), X)
    em = _fit(name, None, 0, 6000)(p0, X, 1e-11)
    sq = _fit(name, "squarem", 0, 2000)(p0, X, 1e-11)
    assert int(sq.status) == 0, jaxem.describe_status(sq.status)
    # The same fixed point: at least EM's log-likelihood, and the same to 1e-8 where EM got there
    # (factor analysis with small noise: EM needs more than 6,000 iterations).
    assert float(sq.log_likelihood) >= float(em.log_likelihood) - 1e-12
    if int(em.status) == 0:
        np.testing.assert_allclose(float(sq.log_likelihood), float(em.log_likelihood), rtol=1e-8)
    if name == "ppca":  # the closed-form maximum (Tipping & Bishop 1999, eqs. (7)-(8))
        ev = np.sort(np.linalg.eigvalsh(np.cov(X.T, bias=True)))[::-1]
        D, q = X.shape[1], 2
        ml = -0.5 * (D * np.log(2 * np.pi) + np.sum(np.log(ev[:q]))
                     + (D - q) * np.log(ev[q:].mean()) + D)
        np.testing.assert_allclose(float(sq.log_likelihood), ml, rtol=1e-9)
    elif name.startswith("gmm"):  # identifiable parameters
        assert_tree_allclose(sq.params, em.params, rtol=1e-4, atol=1e-5)
    # Monotone: the safeguard never lets the log-likelihood at the cycles' starts decrease (to
    # 1e-10 relative: at small-noise factor-analysis points Ψ⁻¹ is large, and the Woodbury form of
    # log p(x) then carries ~1e-11 relative rounding).
    n = int(sq.n_iter)
    trace = np.asarray(sq.trace)[:n]
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:])), np.diff(trace).min()
    # Three EM steps per cycle, and still at least 2x fewer than plain EM (which, for factor
    # analysis, has not converged after 6,000).
    if int(em.status) == 0:
        assert 3 * n * 2 <= int(em.n_iter), (3 * n, int(em.n_iter))
    else:
        assert 3 * n < int(em.n_iter) and float(sq.log_likelihood) > float(em.log_likelihood)


def _jit(f):
    """`jax.jit` with jaxem's light compiler options (an implicit gradient's program compiles in
    ~4 s instead of ~15 s)."""
    return jax.jit(f, compiler_options=dict(jaxem.COMPILER_OPTIONS))


def test_squarem_under_vmap_matches_single_fits_and_keeps_implicit_gradients():
    model, make = jaxem.GaussianMixture(2, "diag"), _overlapping
    Xs = np.stack([make(seed=s, n=120) for s in (3, 4)])
    P = jax.vmap(lambda x: model.init(jax.random.key(0), x))(Xs)
    fit = lambda p, x: jaxem.fit(model, p, x, tol=1e-10, max_iter=300, accelerate="squarem")
    batched = _jit(jax.vmap(fit))(P, Xs)
    single = _jit(fit)
    for b in range(2):
        one = single(jax.tree_util.tree_map(lambda a: a[b], P), Xs[b])
        assert int(batched.n_iter[b]) == int(one.n_iter)
        assert_tree_allclose(jax.tree_util.tree_map(lambda a: a[b], batched.params),
                             one.params, rtol=1e-8, atol=1e-10)
    # Same fixed point, same implicit gradient as plain EM (on separated groups, where EM too
    # converges tightly within its max_iter).
    X = Xs[0] + np.repeat([[0.0, 0.0], [2.5, 2.5]], 60, axis=0)
    p0 = model.init(jax.random.key(0), X)

    def loss(X, accelerate):
        r = jaxem.fit(model, p0, X, tol=1e-12, max_iter=3000 if accelerate is None else 300,
                      accelerate=accelerate)
        return jnp.sum(r.params.means ** 2) + r.log_likelihood

    g_em = _jit(jax.grad(lambda X: loss(X, None)))(X)
    g_sq = _jit(jax.grad(lambda X: loss(X, "squarem")))(X)
    np.testing.assert_allclose(np.asarray(g_sq), np.asarray(g_em), rtol=1e-4, atol=1e-5)


def test_squarem_with_a_gradient_m_step():
    """SQUAREM wraps any M-step: generalized EM reaches the same log-likelihood."""

    def log_joint(p, x):
        return jax.nn.log_softmax(p["logits"]) + jax.scipy.stats.norm.logpdf(x[0], p["loc"], 1.0)

    model = jaxem.MixtureModel(log_joint, n_components=2)
    X = np.concatenate([np.random.default_rng(0).normal(-0.7, 1.0, (100, 1)),
                        np.random.default_rng(1).normal(0.7, 1.0, (100, 1))])
    p0 = {"logits": jnp.zeros(2), "loc": jnp.array([-0.1, 0.1])}
    gm = jaxem.GradientMStep(optax.adam(0.05), num_steps=10, safe=True)
    plain = jaxem.fit(model, p0, X, m_step=gm, tol=1e-9, max_iter=600)
    fast = jaxem.fit(model, p0, X, m_step=gm, tol=1e-9, max_iter=200, accelerate="squarem")
    assert int(fast.status) & int(jaxem.Status.NONFINITE) == 0
    np.testing.assert_allclose(float(fast.log_likelihood), float(plain.log_likelihood), atol=1e-5)
    trace = np.asarray(fast.trace)[:int(fast.n_iter)]
    assert np.all(np.diff(trace) >= -1e-9)


def test_unknown_accelerate_is_a_value_error():
    X = _overlapping(n=20)
    model = jaxem.GaussianMixture(2)
    with pytest.raises(ValueError, match="accelerate"):
        jaxem.fit(model, model.init(jax.random.key(0), X), X, accelerate="anderson")
