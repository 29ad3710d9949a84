"""Mixtures of factor analysers (Ghahramani & Hinton 1996) and of PPCA (Tipping & Bishop 1999):
iterates against a NumPy transcription of the papers' EM equations (explicit D x D matrices), one
component against FactorAnalysis / PPCA, the likelihood against a brute-force full-covariance
Gaussian mixture, Tipping & Bishop's two-stage update at the fixed point, float32, statistics.

One problem shape (N_ROWS x D, K = 2, q = 2) for every jitted fit, so each compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxem
from helpers import assert_tree_allclose

N_ROWS, D, K, Q = 150, 5, 2, 2
OPTS = dict(jaxem.COMPILER_OPTIONS)
MODELS = {"mfa": jaxem.MixtureOfFactorAnalyzers(K, Q), "mppca": jaxem.MixturePPCA(K, Q)}


def _data(seed=0, offset=0.0):
    """Two clusters, each x = W_k z + μ_k + noise (q = 2, unequal noise per feature)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, D, Q)) * 1.5
    mu = np.array([[3.0, 0, 0, -2, 0], [-3.0, 1, 2, 0, 1]])
    noise = rng.uniform(0.3, 0.8, size=(K, D))
    z = rng.integers(0, K, size=N_ROWS)
    f = rng.normal(size=(N_ROWS, Q))
    eps = rng.normal(size=(N_ROWS, D)) * noise[z]
    return mu[z] + np.einsum("ndq,nq->nd", W[z], f) + eps + offset


MAX_ITER = 40
_FITS = {}


def _fit(name, p, X, tol=0.0):
    """`jaxem.fit` of MODELS[name] with max_iter=MAX_ITER: one compiled program per model (tol is
    traced)."""
    if name not in _FITS:
        model = MODELS[name]
        _FITS[name] = jax.jit(lambda p, x, tol: jaxem.fit(model, p, x, max_iter=MAX_ITER, tol=tol),
                              compiler_options=OPTS)
    return _FITS[name](p, X, tol)


@pytest.fixture(scope="module")
def problem():
    X = _data()
    inits = {n: m.init(jax.random.key(0), X) for n, m in MODELS.items()}
    return X, inits


# --- NumPy transcriptions of the papers' equations ----------------------------------------------
def _np(params):
    return [np.asarray(a, np.float64) for a in params]


def _psi_full(psi):
    psi = np.asarray(psi)
    return np.repeat(psi[:, None], D, 1) if psi.ndim == 1 else psi


def _ref_e_step(pi, mu, W, psi, X):
    """Ghahramani & Hinton: h_nk ∝ π_k N(x | μ_k, W_k W_kᵀ + Ψ_k), β_k = W_kᵀ (Ψ_k + W_k W_kᵀ)⁻¹,
    E[z | x, k] = β_k (x - μ_k), E[zzᵀ | x, k] = I - β_k W_k + β_k (x-μ_k)(x-μ_k)ᵀ β_kᵀ."""
    lj, Ez, Ezz = [], [], []
    for k in range(len(pi)):
        C = W[k] @ W[k].T + np.diag(psi[k])
        lj.append(np.log(pi[k]) + multivariate_normal(mu[k], C).logpdf(X))
        beta = W[k].T @ np.linalg.inv(C)
        e = (X - mu[k]) @ beta.T
        Ez.append(e)
        Ezz.append(np.eye(W.shape[2]) - beta @ W[k] + e[:, :, None] * e[:, None, :])
    lj = np.stack(lj, 1)
    ll = logsumexp(lj, 1)
    return np.exp(lj - ll[:, None]), Ez, Ezz, ll.sum()


def _ref_gh_step(params, X, isotropic):
    """One EM iteration of Ghahramani & Hinton (1996), with a Ψ_k per component (and Ψ_k = σ_k² I,
    σ_k² = tr(·)/D, for PPCA): [W_k μ_k] = (Σ h x E[z̃]ᵀ)(Σ h E[z̃z̃ᵀ])⁻¹,
    Ψ_k = diag(Σ h (x - [W_k μ_k] E[z̃]) xᵀ) / Σ h, π_k = Σ h / N."""
    pi, mu, W, psi = _np(params)
    psi = _psi_full(psi)
    h, Ez, Ezz, ll = _ref_e_step(pi, mu, W, psi, X)
    new = [[], [], [], []]
    for k in range(len(pi)):
        n = X.shape[0]
        Ezt = np.concatenate([Ez[k], np.ones((n, 1))], 1)
        Ezzt = np.zeros((n, Q + 1, Q + 1))
        Ezzt[:, :Q, :Q], Ezzt[:, :Q, Q], Ezzt[:, Q, :Q], Ezzt[:, Q, Q] = Ezz[k], Ez[k], Ez[k], 1
        hk = h[:, k]
        Wt = np.einsum("n,nd,ne->de", hk, X, Ezt) @ np.linalg.inv(np.einsum("n,nij->ij", hk, Ezzt))
        ps = np.einsum("n,nd->d", hk, (X - Ezt @ Wt.T) * X) / hk.sum()
        new[0].append(hk.sum() / n)
        new[1].append(Wt[:, Q])
        new[2].append(Wt[:, :Q])
        new[3].append(ps.mean() if isotropic else ps)
    return [np.array(a) for a in new], ll


def _ref_tb_step(params, X):
    """Tipping & Bishop (1999), Appendix C: π̃_k, μ̃_k from R_nk, then with
    S_k = Σ R (x - μ̃_k)(x - μ̃_k)ᵀ / Σ R and M_k = σ_k² I + W_kᵀW_k:
    W̃_k = S_k W_k (σ_k² I + M_k⁻¹ W_kᵀ S_k W_k)⁻¹,  σ̃_k² = tr(S_k - S_k W_k M_k⁻¹ W̃_kᵀ) / D."""
    pi, mu, W, s2 = _np(params)
    R = _ref_e_step(pi, mu, W, _psi_full(s2), X)[0]
    out = [[], [], [], []]
    for k in range(len(pi)):
        r = R[:, k]
        m = r @ X / r.sum()
        S = np.einsum("n,nd,ne->de", r, X - m, X - m) / r.sum()
        M = s2[k] * np.eye(Q) + W[k].T @ W[k]
        SW = S @ W[k]
        Wn = SW @ np.linalg.inv(s2[k] * np.eye(Q) + np.linalg.solve(M, W[k].T @ SW))
        out[0].append(r.mean())
        out[1].append(m)
        out[2].append(Wn)
        out[3].append(np.trace(S - SW @ np.linalg.solve(M, Wn.T)) / D)
    return [np.array(a) for a in out]


# --- tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_iterates_match_numpy_reference_of_the_papers(name, problem):
    X, inits = problem
    model, p = MODELS[name], inits[name]
    res = _fit(name, p, X)
    ref, lls = _np(p), []
    for _ in range(MAX_ITER):
        ref, ll = _ref_gh_step(ref, X, model.isotropic)
        lls.append(ll / N_ROWS)
    np.testing.assert_allclose(np.asarray(res.trace), lls, rtol=1e-11)
    for a, b in zip(res.params, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-8, atol=1e-10)
    assert np.all(np.diff(lls) > 0)  # EM is monotone (strictly, away from the fixed point)


@pytest.mark.parametrize("name", list(MODELS))
def test_e_step_and_likelihood_equal_brute_force_gaussian_mixture(name, problem):
    X, inits = problem
    model, p = MODELS[name], inits[name]
    pi, mu, W, psi = _np(p)
    psi = _psi_full(psi)
    h, Ez, Ezz, ll = _ref_e_step(pi, mu, W, psi, X)
    # The full-covariance Gaussian mixture with Σ_k = W_k W_kᵀ + Ψ_k (D x D, brute force).
    cov = np.einsum("kdq,keq->kde", W, W) + np.stack([np.diag(s) for s in psi])
    lp = logsumexp(np.stack([np.log(pi[k]) + multivariate_normal(mu[k], cov[k]).logpdf(X)
                             for k in range(K)], 1), 1)
    np.testing.assert_allclose(np.asarray(model.score_samples(p, X)), lp, rtol=1e-11)
    np.testing.assert_allclose(float(model.log_likelihood(p, X)), ll, rtol=1e-12)
    post, ll_e = model.e_step(p, X)
    np.testing.assert_allclose(float(ll_e), ll, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(post.responsibilities), h, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.asarray(model.predict_proba(p, X)), h, rtol=1e-9, atol=1e-14)
    np.testing.assert_array_equal(np.asarray(model.predict(p, X)), h.argmax(1))
    Z = np.asarray(model.transform(p, X))
    assert Z.shape == (N_ROWS, K, Q)
    for k in range(K):
        np.testing.assert_allclose(Z[:, k], Ez[k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(post.covariance[k]), Ezz[k][0] - np.outer(
            Ez[k][0], Ez[k][0]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(jaxem.elbo(model, p, post, X)), ll, rtol=1e-10)
    # bic counts the free parameters: per component μ, W (less its rotation), noise; K - 1 weights.
    per = D + D * Q - Q * (Q - 1) // 2 + (1 if model.isotropic else D)
    assert model.n_parameters(p) == K * per + K - 1
    np.testing.assert_allclose(float(model.bic(p, X)),
                               -2 * ll + (K * per + K - 1) * np.log(N_ROWS), rtol=1e-12)


@pytest.mark.parametrize("name, single",
                         [("mfa", jaxem.FactorAnalysis(Q)), ("mppca", jaxem.PPCA(Q))])
def test_one_component_is_factor_analysis_or_ppca(name, single, problem):
    X, _ = problem
    model = type(MODELS[name])(1, Q)
    rng = np.random.default_rng(3)  # a start by hand (no eager init)
    nv = rng.uniform(0.5, 1.5, D)
    p1 = (jaxem.FactorAnalysisParams if name == "mfa" else jaxem.PPCAParams)(
        jnp.asarray(X.mean(0)), jnp.asarray(rng.normal(size=(D, Q))),
        jnp.asarray(nv if name == "mfa" else nv.mean()))
    pm = model._make(jnp.ones(1), p1.mean[None], p1.W[None], p1.noise_variance[None])
    opts = dict(max_iter=15, tol=0.0)
    fa = jax.jit(lambda p, x: jaxem.fit(single, p, x, **opts), compiler_options=OPTS)(p1, X)
    mx = jax.jit(lambda p, x: jaxem.fit(model, p, x, **opts), compiler_options=OPTS)(pm, X)
    np.testing.assert_allclose(np.asarray(mx.trace), np.asarray(fa.trace), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(mx.params.means[0]), np.asarray(fa.params.mean),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mx.params.loadings[0]), np.asarray(fa.params.W),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mx.params.noise_variance[0]),
                               np.asarray(fa.params.noise_variance), rtol=1e-9)
    assert float(mx.params.weights[0]) == 1.0
    assert model.n_parameters(mx.params) == single.n_parameters(fa.params)


def test_converged_mppca_is_a_fixed_point_of_tipping_bishop_update(problem):
    """Our EM (μ_k jointly with W_k) and Tipping & Bishop's two-stage Appendix C update share
    their fixed points; the trace of a long fit never decreases."""
    X, inits = problem
    p, traces = inits["mppca"], []
    for _ in range(15):  # continued fits of MAX_ITER iterations each, until converged
        res = _fit("mppca", p, X, 1e-13)
        p = res.params
        traces.append(np.asarray(res.trace)[:int(res.n_iter)])
        if bool(res.converged):
            break
    assert bool(res.converged)
    tr = np.concatenate(traces)
    assert np.all(np.diff(tr) >= -1e-13 * np.abs(tr[1:]))
    p = _np(res.params)
    tb = _ref_tb_step(p, X)
    for a, b in zip(tb[:2] + tb[3:], p[:2] + p[3:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # W is determined up to a rotation: compare W Wᵀ.
    ww = lambda W: np.einsum("kdq,keq->kde", W, W)
    np.testing.assert_allclose(ww(tb[2]), ww(p[2]), rtol=1e-5, atol=1e-7)


def test_mfa_trace_is_monotone_and_float32_far_from_origin_is_accurate(problem):
    X, inits = problem
    r64 = _fit("mfa", inits["mfa"], X)
    tr = np.asarray(r64.trace)
    assert np.all(np.diff(tr) >= -1e-13 * np.abs(tr[1:]))
    # float32, data 1e4 away from the origin: statistics about the means keep it accurate.
    off = 1e4
    X32 = (X + off).astype(np.float32)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), inits["mfa"])
    p32 = p32._replace(means=(inits["mfa"].means + off).astype(np.float32))
    r32 = _fit("mfa", p32, X32)
    assert int(r32.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0
    for leaf in jax.tree_util.tree_leaves((r32.params, r32.trace)):
        assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))
    np.testing.assert_allclose(np.asarray(r32.trace), tr, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(r32.params.means) - off, np.asarray(r64.params.means),
                               atol=2e-2)


@pytest.mark.parametrize("name", list(MODELS))
def test_statistics_additive_reference_and_fit_stream(name, problem):
    X, inits = problem
    model, p = MODELS[name], inits[name]
    w = np.random.default_rng(1).uniform(0.5, 2.0, N_ROWS)
    whole = model.sufficient_statistics(p, X, w)
    half = N_ROWS // 2
    parts = [model.sufficient_statistics(p, X[s], w[s])
             for s in (slice(0, half), slice(half, None))]
    assert_tree_allclose(jax.tree_util.tree_map(jnp.add, *parts), whole, rtol=1e-10, atol=1e-10)
    ref = p.means + 0.7
    shifted = model.sufficient_statistics(p, X, w, reference=ref)
    assert_tree_allclose(model.maximize(shifted, p, reference=ref), model.maximize(whole, p),
                         rtol=1e-10, atol=1e-12)
    # maximize ∘ sufficient_statistics is one EM iteration of the papers (NumPy reference).
    ref = _ref_gh_step(p, X, model.isotropic)[0]
    for a, b in zip(model.maximize(model.sufficient_statistics(p, X), p), ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_empty_and_switched_off_components(name, problem):
    """A component that takes no responsibility keeps its parameters and is reported; one whose
    weight is exactly 0 is switched off (kept, weight 0, not reported)."""
    X, inits = problem
    model, p = MODELS[name], inits[name]
    step = jax.jit(lambda p, X: model._maximize(model._statistics(p, X, jnp.ones(len(X))), p),
                   compiler_options=OPTS)  # (params, status)
    far = p._replace(means=p.means.at[1].set(1e4))
    new, status = step(far, X)
    assert int(status) & int(jaxem.Status.EMPTY_COMPONENT)
    np.testing.assert_array_equal(np.asarray(new.means[1]), np.asarray(far.means[1]))
    np.testing.assert_array_equal(np.asarray(new.loadings[1]), np.asarray(far.loadings[1]))
    assert float(new.weights[1]) < 1e-12 and bool(jnp.all(jnp.isfinite(new.means)))
    off = p._replace(weights=jnp.array([1.0, 0.0]))
    new, status = step(off, X)
    assert int(status) == 0 and float(new.weights[1]) == 0.0
    np.testing.assert_array_equal(np.asarray(new.noise_variance[1]),
                                  np.asarray(off.noise_variance[1]))


def test_component_collapsed_onto_one_row_stays_finite(problem):
    """A far outlier gets a k-means cluster of its own (no spread): the fit stays finite (the
    noise floor is pooled over components), with its component's weight 1/N."""
    X, _ = problem
    Xo = X.copy()
    Xo[0] = 100.0
    model = MODELS["mfa"]
    p = model.init(jax.random.key(0), Xo)
    assert np.isclose(float(jnp.min(p.weights)), 1 / N_ROWS)
    res = _fit("mfa", p, Xo)
    assert int(res.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0, jaxem.describe_status(
        res.status)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree_util.tree_leaves(res))


def test_fit_stream_equals_fit(problem):
    X, inits = problem
    model, p = MODELS["mfa"], inits["mfa"]
    fs = jaxem.fit_stream(model, p, X, max_iter=MAX_ITER, tol=0.0, block_size=64)
    fr = _fit("mfa", p, X)
    np.testing.assert_allclose(np.asarray(fs.trace), np.asarray(fr.trace), rtol=1e-10)
    assert_tree_allclose(fs.params, fr.params, rtol=1e-8, atol=1e-10)


def test_sample_moments_save_load_and_configuration_errors(problem, tmp_path):
    X, inits = problem
    model, p = MODELS["mfa"], inits["mfa"]
    x, k = model.sample(jax.random.key(5), p, 40000, return_labels=True)
    assert x.shape == (40000, D) and k.shape == (40000,)
    pi, mu, W, psi = _np(p)
    cov = np.einsum("kdq,keq->kde", W, W) + np.stack([np.diag(s) for s in psi])
    m = pi @ mu
    C = np.einsum("k,kde->de", pi, cov + mu[:, :, None] * mu[:, None, :]) - np.outer(m, m)
    np.testing.assert_allclose(np.asarray(jnp.mean(x, 0)), m, atol=0.1)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), C, atol=0.25)
    np.testing.assert_allclose(np.bincount(np.asarray(k), minlength=K) / 40000, pi, atol=0.01)
    with pytest.raises(ValueError, match="n_factors"):
        jaxem.MixtureOfFactorAnalyzers(2, 0)
    with pytest.raises(ValueError, match="n_factors"):
        jaxem.MixturePPCA(2, D).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="n_factors"):
        jaxem.MixtureOfFactorAnalyzers(2, D + 1).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="loadings"):
        model.log_likelihood(p._replace(loadings=p.loadings[:, :, :1]), X)
    jaxem.save(tmp_path / "mfa", model, p)
    model2, p2 = jaxem.load(tmp_path / "mfa.npz")
    assert model2 == model and type(p2) is type(p)
    assert_tree_allclose(p2, p, rtol=0, atol=0)
    assert jaxem.MixturePPCA(2, 3) == jaxem.MixturePPCA(2, 3)
    assert hash(jaxem.MixturePPCA(2, 3)) == hash(jaxem.MixturePPCA(n_components=2, n_factors=3))
