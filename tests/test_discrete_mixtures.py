"""Bernoulli and Poisson mixtures against an independent NumPy EM, plus clipping, sampling, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

import jaxem
from helpers import assert_tree_allclose

N_ITER = 25


@pytest.fixture(scope="module")
def digits_binary():
    from sklearn.datasets import load_digits

    X = load_digits().data[:300]
    return (X > 7).astype(np.float64)  # pixel intensities are 0..16


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    rates = np.array([[0.5, 4.0, 10.0, 1.0], [6.0, 0.3, 2.0, 8.0], [3.0, 3.0, 0.0, 0.2]])
    z = rng.choice(3, size=300, p=[0.5, 0.3, 0.2])
    return rng.poisson(rates[z]).astype(np.float64)


def _np_log_joint(kind, theta, weights, X, floor):
    """log π_k + Σ_d log p(x_nd | θ_kd), written directly from the densities."""
    if kind == "bernoulli":
        p = np.clip(theta, floor, 1 - floor)
        lj = np.stack([(X * np.log(pk) + (1 - X) * np.log(1 - pk)).sum(1) for pk in p], 1)
    else:
        lam = np.maximum(theta, floor)
        lj = np.stack([(X * np.log(lk) - lk - gammaln(X + 1)).sum(1) for lk in lam], 1)
    return lj + np.log(weights)[None]


def _np_em(kind, theta, weights, X, w, n_iter, floor):
    """Textbook EM, one loop per iteration: returns (trace, weights, theta)."""
    eps = 10 * np.finfo(np.float64).eps
    trace = []
    for _ in range(n_iter):
        lj = _np_log_joint(kind, theta, weights, X, floor)
        lse = logsumexp(lj, axis=1)
        trace.append(np.sum(w * lse) / np.sum(w))
        r = np.exp(lj - lse[:, None]) * w[:, None]
        nk = r.sum(0) + eps
        weights = nk / nk.sum()
        theta = (r.T @ X) / nk[:, None]
        theta = np.clip(theta, floor, 1 - floor) if kind == "bernoulli" else np.maximum(theta, floor)
    return np.array(trace), weights, theta


CASES = {
    "bernoulli": (jaxem.BernoulliMixture(4), "digits_binary", "probs"),
    "poisson": (jaxem.PoissonMixture(3), "counts", "rates"),
}
_P0 = {}


def _start(kind, X):
    """k-means start (responsibilities + M-step), computed once per family."""
    if kind not in _P0:
        _P0[kind] = CASES[kind][0].init(jax.random.key(0), X)
    return _P0[kind]


@pytest.mark.parametrize("kind", list(CASES))
def test_iterates_match_numpy_reference_em(kind, request):
    model, data, field = CASES[kind]
    X = request.getfixturevalue(data)
    w = np.random.default_rng(1).uniform(0.2, 3.0, X.shape[0])
    p0 = _start(kind, X)
    res = jax.jit(lambda p, x, w: jaxem.fit(model, p, x, weights=w, max_iter=N_ITER, tol=0.0))(
        p0, X, w)
    assert int(res.status) == 0 and int(res.n_iter) == N_ITER
    floor = model.min_prob if kind == "bernoulli" else model.min_rate
    trace, weights, theta = _np_em(kind, np.asarray(getattr(p0, field)), np.asarray(p0.weights),
                                   X, w, N_ITER, floor)
    # Same iterates: float64 round-off (different summation order) only.
    np.testing.assert_allclose(np.asarray(res.trace), trace, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(res.params.weights), weights, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.asarray(getattr(res.params, field)), theta, rtol=1e-9, atol=1e-14)
    # EM never decreases the log-likelihood, and it does move.
    assert np.all(np.diff(trace) >= -1e-13 * np.abs(trace[1:]))
    assert trace[-1] > trace[0] + 1e-3
    # The E-step's log-likelihood against the reference formula at the fitted parameters.
    lj = _np_log_joint(kind, theta, weights, X, floor)
    np.testing.assert_allclose(float(model.log_likelihood(res.params, X, w)),
                               np.sum(w * logsumexp(lj, 1)), rtol=1e-11)
    np.testing.assert_allclose(np.asarray(model.predict_proba(res.params, X)),
                               np.exp(lj - logsumexp(lj, 1)[:, None]), rtol=1e-9, atol=1e-12)


def test_bernoulli_digits_converges_with_clipped_constant_pixels(digits_binary):
    """Pixels that are always 0 in the digits (the image border) give probabilities exactly at the
    clip, never log(0): the fit converges with a finite likelihood."""
    model = jaxem.BernoulliMixture(4)
    X = digits_binary
    res = jaxem.fit(model, _start("bernoulli", X), X, max_iter=300, tol=1e-8)
    assert int(res.status) == 0 and bool(res.converged)
    trace = np.asarray(res.trace)[: int(res.n_iter)]
    assert np.all(np.diff(trace) >= -1e-13 * np.abs(trace[1:]))
    dead = X.sum(0) == 0
    assert dead.any()
    np.testing.assert_array_equal(np.asarray(res.params.probs)[:, dead], model.min_prob)
    assert np.all(np.asarray(res.params.probs) >= model.min_prob)
    assert np.all(np.asarray(res.params.probs) <= 1 - model.min_prob)
    # bic/aic from n_parameters = K D + K - 1.
    ll = float(model.log_likelihood(res.params, X))
    assert model.n_parameters(res.params) == 4 * 64 + 3
    np.testing.assert_allclose(float(model.bic(res.params, X)),
                               -2 * ll + (4 * 64 + 3) * np.log(300), rtol=1e-12)
    np.testing.assert_allclose(float(model.aic(res.params, X)), -2 * ll + 2 * (4 * 64 + 3),
                               rtol=1e-12)


def test_poisson_rates_floored_and_sampling(counts):
    model = jaxem.PoissonMixture(3)
    res = jaxem.fit(model, _start("poisson", counts), counts, max_iter=300, tol=1e-8)
    assert int(res.status) == 0 and bool(res.converged)
    rates = np.asarray(res.params.rates)
    assert rates.min() >= model.min_rate
    # A zero-rate feature in the truth: its smallest fitted rate is near 0 but floored, finite.
    assert rates[:, 2].min() < 0.1
    # The components recover the true rates (up to order; 300 samples: ~20% accuracy).
    true = np.array([[0.5, 4.0, 10.0, 1.0], [6.0, 0.3, 2.0, 8.0], [3.0, 3.0, 0.0, 0.2]])
    order = [int(np.argmin(np.abs(rates - t).sum(1))) for t in true]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(rates[order], true, atol=0.2 * true.max())
    # Samples: the mixture mean Σ_k π_k λ_k (20,000 draws: Monte-Carlo error ~1%).
    S = np.asarray(model.sample(jax.random.key(1), res.params, 20000))
    assert S.dtype == np.float64 and np.all(S == np.round(S)) and S.min() >= 0
    np.testing.assert_allclose(S.mean(0), np.asarray(res.params.weights) @ rates, rtol=0.05,
                               atol=0.02)
    # An empty-data feature: all-zero column gives exactly the floor.
    X0 = counts.copy()
    X0[:, 3] = 0.0
    p = model.m_step(model.predict_proba(res.params, X0), X0)
    np.testing.assert_array_equal(np.asarray(p.rates)[:, 3], model.min_rate)
    assert np.isfinite(float(model.log_likelihood(p, X0)))


def test_bernoulli_sampling_matches_mixture_mean():
    model = jaxem.BernoulliMixture(2)
    p = jaxem.BernoulliMixtureParams(jnp.array([0.3, 0.7]), jnp.array([[0.9, 0.1, 0.5],
                                                                        [0.2, 0.6, 0.5]]))
    S, z = model.sample(jax.random.key(0), p, 20000, return_labels=True)
    assert set(np.unique(np.asarray(S))) <= {0.0, 1.0}
    # Monte-Carlo error of a mean of 20,000 Bernoullis: ~0.0035; 0.015 is > 4 standard errors.
    np.testing.assert_allclose(np.asarray(S).mean(0), [0.41, 0.45, 0.5], atol=0.015)
    assert abs(float(jnp.mean(z)) - 0.7) < 0.015


@pytest.mark.parametrize("kind", list(CASES))
def test_out_of_support_data(kind, request):
    model, data, _ = CASES[kind]
    X = request.getfixturevalue(data)[:60]
    bad = X.copy()
    bad[5, 2] = 2.0 if kind == "bernoulli" else -1.0
    with pytest.raises(ValueError, match="binar" if kind == "bernoulli" else "non-negative"):
        model.init(jax.random.key(0), bad)
    p0 = model.m_step(np.full((60, model.n_components), 1.0 / model.n_components)
                      + np.eye(60, model.n_components), X)  # a cheap start
    res = jax.jit(lambda p, x: jaxem.fit(model, p, x))(p0, bad)
    assert int(res.status) & jaxem.Status.INVALID_INPUT
    assert_tree_allclose(res.params, p0)
    # A bad value in a zero-weight (padding) row is ignored.
    w = np.ones(60)
    w[5] = 0.0
    res = jax.jit(lambda p, x, w: jaxem.fit(model, p, x, weights=w))(p0, bad, w)
    assert int(res.status) == 0


def test_fit_rejects_data_outside_the_support():
    """fit itself (not only init) says what is wrong with out-of-range data, outside jit."""
    X = np.random.default_rng(0).integers(0, 2, (20, 3)).astype(float)
    bern = jaxem.BernoulliMixture(2)
    p = bern.init(jax.random.key(0), X)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        jaxem.fit(bern, p, X * 3.0)
    pois = jaxem.PoissonMixture(2)
    p = pois.init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="non-negative"):
        jaxem.fit(pois, p, X - 1.0)
