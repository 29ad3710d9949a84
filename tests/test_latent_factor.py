"""PPCA and factor analysis: closed-form ML, scikit-learn's likelihoods, dense-algebra references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxem


def _fit(model, X, tol, max_iter=3000):
    p0 = model.init(jax.random.key(0), X)
    return jax.jit(lambda p, x: jaxem.fit(model, p, x, max_iter=max_iter, tol=tol))(p0, X)


def _ml_ppca(X, q):
    """Tipping & Bishop's closed form from the (ddof=0) sample covariance S = U Λ Uᵀ."""
    S = np.cov(X.T, bias=True)
    lam, U = np.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    sigma2 = lam[q:].mean()
    W = U[:, :q] * np.sqrt(lam[:q] - sigma2)
    return X.mean(0), W, sigma2, lam, U


def _dense_cov(params):
    W = np.asarray(params.W)
    return W @ W.T + np.diag(np.broadcast_to(np.asarray(params.noise_variance), W.shape[:1]))


@pytest.fixture(scope="module")
def ppca_iris(iris):
    return _fit(jaxem.PPCA(2), iris, tol=1e-13)


def test_ppca_converges_to_closed_form_ml(iris, ppca_iris):
    res = ppca_iris
    assert int(res.status) == 0 and bool(res.converged)
    trace = np.asarray(res.trace)[: int(res.n_iter)]
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    mu, W, sigma2, lam, U = _ml_ppca(iris, 2)
    C_ml = W @ W.T + sigma2 * np.eye(4)
    ll_ml = multivariate_normal(mu, C_ml).logpdf(iris).mean()
    # The bar is 1e-6 per sample; measured ~2e-12.
    assert abs(float(res.log_likelihood) - ll_ml) < 1e-6
    p = res.params
    np.testing.assert_allclose(np.asarray(p.mean), mu, rtol=1e-12)
    # σ² = mean of the discarded eigenvalues; W's singular values are sqrt(λ_j - σ²) and W lies in
    # the span of the two leading eigenvectors. The likelihood is flat (quadratic) at the optimum, so
    # tol=1e-13 on it gives parameters to ~1e-6: tolerances 1e-5.
    np.testing.assert_allclose(float(p.noise_variance), sigma2, rtol=1e-5)
    sv = np.linalg.svd(np.asarray(p.W), compute_uv=False)
    np.testing.assert_allclose(sv, np.sqrt(lam[:2] - sigma2), rtol=1e-5)
    assert np.linalg.norm(U[:, 2:].T @ np.asarray(p.W)) < 1e-5 * np.linalg.norm(np.asarray(p.W))
    np.testing.assert_allclose(_dense_cov(p), C_ml, rtol=1e-5, atol=1e-5)


def test_ppca_likelihood_matches_sklearn_pca_score(iris, ppca_iris):
    """scikit-learn's ``PCA.score`` is the PPCA log-likelihood, but at parameters estimated from the
    ddof=1 covariance: the model covariance is c·C_ML (c = N/(N-1)), and since tr(C_ML⁻¹ S) = D at the
    ML solution its score is lower by exactly ½ D (log c + 1/c - 1) (4.46e-5 on iris). Rescaled to
    ddof=0, its likelihood equals ours."""
    from sklearn.decomposition import PCA

    N, D = iris.shape
    ours = float(ppca_iris.log_likelihood)
    pca = PCA(n_components=2).fit(iris)
    c = N / (N - 1)
    gap = 0.5 * D * (np.log(c) + 1 / c - 1)
    assert abs((ours - pca.score(iris)) - gap) < 1e-6
    pca.explained_variance_ = pca.explained_variance_ / c
    pca.noise_variance_ = pca.noise_variance_ / c
    assert abs(ours - pca.score(iris)) < 1e-6  # measured ~2e-12


def test_factor_analysis_reaches_sklearn_score(wine):
    """On standardised wine (N=178, D=13, q=2) EM converges (148 iterations at tol=1e-10) to a
    higher likelihood than scikit-learn's default FactorAnalysis (whose tol=1e-2 is on the total
    log-likelihood): ours - sklearn ≈ +3.2e-4 per sample. With sklearn's tol tightened both reach
    the same maximum (~3e-8)."""
    from sklearn.decomposition import FactorAnalysis

    model = jaxem.FactorAnalysis(2)
    res = _fit(model, wine, tol=1e-10)
    assert int(res.status) == 0 and bool(res.converged)
    ours = float(res.log_likelihood)
    sk = FactorAnalysis(2).fit(wine)
    assert abs(ours - sk.score(wine)) < 1e-3
    assert ours > sk.score(wine)  # ours is the higher one
    tight = FactorAnalysis(2, tol=1e-8, max_iter=20000).fit(wine)
    assert abs(ours - tight.score(wine)) < 1e-6
    # scikit-learn's own likelihood and posterior mean, evaluated at our parameters.
    p = res.params
    sk.components_, sk.noise_variance_, sk.mean_ = (
        np.asarray(p.W).T, np.asarray(p.noise_variance), np.asarray(p.mean))
    np.testing.assert_allclose(ours, sk.score(wine), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(model.transform(p, wine)), sk.transform(wine),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", [jaxem.PPCA(2), jaxem.FactorAnalysis(2)], ids=["ppca", "fa"])
def test_woodbury_quantities_match_dense_algebra(model):
    """log p(x), E[z|x] and Cov[z|x] from the q x q factorisation against dense D x D algebra."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5))
    p = model.init(jax.random.key(3), X)
    p = p._replace(mean=p.mean + 0.3)  # not at the sample mean
    C = _dense_cov(p)
    Xc = X - np.asarray(p.mean)
    W = np.asarray(p.W)
    dense_ll = multivariate_normal(np.asarray(p.mean), C).logpdf(X)
    np.testing.assert_allclose(np.asarray(model.score_samples(p, X)), dense_ll, rtol=1e-11)
    post, ll = model.e_step(p, X)
    np.testing.assert_allclose(float(ll), dense_ll.sum(), rtol=1e-11)
    np.testing.assert_allclose(np.asarray(post.mean), np.linalg.solve(C, Xc.T).T @ W, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(post.covariance), np.eye(2) - W.T @ np.linalg.solve(C, W),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(model.transform(p, X)), np.asarray(post.mean))
    # One EM step from params off the sample mean still increases the likelihood (μ is updated
    # jointly with W, so each step is an exact EM step).
    new, ll0, _ = model.em_update(p, jnp.asarray(X), jnp.ones(30))
    np.testing.assert_allclose(float(ll0), dense_ll.sum(), rtol=1e-11)
    assert float(model.log_likelihood(new, X)) > float(ll0)
    n_par = 5 + 10 - 1 + (1 if isinstance(model, jaxem.PPCA) else 5)
    assert model.n_parameters(p) == n_par
    np.testing.assert_allclose(float(model.bic(p, X)), -2 * dense_ll.sum() + n_par * np.log(30),
                               rtol=1e-11)
    np.testing.assert_allclose(float(model.aic(p, X)), -2 * dense_ll.sum() + 2 * n_par, rtol=1e-11)


@pytest.mark.parametrize("model", [jaxem.PPCA(2), jaxem.FactorAnalysis(2)], ids=["ppca", "fa"])
def test_transform_inverse_transform_roundtrip(model):
    """On almost noiseless rank-2 data the posterior mean reconstructs x; inverse_transform is
    W z + μ."""
    rng = np.random.default_rng(1)
    Wtrue = rng.normal(size=(5, 2)) * 3
    X = rng.normal(size=(80, 2)) @ Wtrue.T + 2.0 + 1e-3 * rng.normal(size=(80, 5))
    res = _fit(model, X, tol=1e-9)
    p = res.params
    Z = model.transform(p, X)
    assert Z.shape == (80, 2)
    Xr = np.asarray(model.inverse_transform(p, Z))
    # Reconstruction error ~ the 1e-3 noise (the posterior shrinkage is ~σ²/λ ~ 1e-7).
    assert np.abs(Xr - X).max() < 1e-2
    np.testing.assert_allclose(Xr, np.asarray(Z) @ np.asarray(p.W).T + np.asarray(p.mean))
    with pytest.raises(ValueError, match="latent dimension"):
        model.inverse_transform(p, np.zeros((3, 3)))
    samples = model.sample(jax.random.key(0), p, 4000)
    # Sample covariance of 4000 draws within ~5% of WWᵀ + Ψ (Monte-Carlo error ~ sqrt(2/4000)).
    np.testing.assert_allclose(np.cov(np.asarray(samples).T), _dense_cov(p),
                               rtol=0.1, atol=0.05 * np.abs(_dense_cov(p)).max())


def test_no_dense_d_by_d_matrix_in_em_update():
    """The fused EM step is O(N D q): no D x D intermediate appears in its program."""
    D, q, N = 300, 3, 40
    X = jnp.zeros((N, D))
    for model in (jaxem.PPCA(q), jaxem.FactorAnalysis(q)):
        p = model.init(jax.random.key(0), np.random.default_rng(0).normal(size=(N, D)))
        jaxpr = jax.make_jaxpr(model.em_update)(p, X, jnp.ones(N))
        shapes = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars}
        assert all(s.count(D) < 2 for s in shapes), sorted(s for s in shapes if s.count(D) >= 2)
        shapes = {tuple(v.aval.shape) for eqn in jax.make_jaxpr(model.score_samples)(p, X).eqns
                  for v in eqn.outvars}
        assert all(s.count(D) < 2 for s in shapes)


def test_rank_and_sample_count_checks():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="n_components < n_features"):
        jaxem.PPCA(3).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="n_components <= n_features"):
        jaxem.FactorAnalysis(4).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="larger than the number of rows"):
        jaxem.PPCA(1).init(jax.random.key(0), X[:1])  # at least 2 rows to estimate a variance
    with pytest.raises(ValueError, match="n_components must be a positive int"):
        jaxem.FactorAnalysis(0)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X = load_digits().data  # raw: pixels 0, 32 and 39 are constant (0) over all 1797 images
    return X, np.flatnonzero(X.std(0) == 0), np.flatnonzero(X.std(0) > 0)


def _with_constant_columns_removed(model, X, const, keep, max_iter=20):
    """Fit X from ``model.init`` (W_d zeroed on the constant columns) and X without its constant
    columns from the same start restricted to them, ``max_iter`` iterations each. A constant column
    decouples exactly (ỹ_d = 0, W_d = 0 after every M-step, ψ_d at its floor):
    log p(x) = log p(x_keep) + Σ_const log N(0 | 0, ψ_d) at every iteration."""
    p0 = model.init(jax.random.key(0), X)
    run = lambda p, x: jaxem.fit(model, p, x, max_iter=max_iter, tol=0.0)
    raw = jax.jit(run)(p0, X)  # straight from init
    p0 = p0._replace(W=p0.W.at[const].set(0.0))
    full = jax.jit(run)(p0, X)
    part = jax.jit(run)(type(p0)(p0.mean[keep], p0.W[keep], p0.noise_variance[keep]), X[:, keep])
    psi = np.asarray(full.params.noise_variance)
    return raw, full, part, -0.5 * np.sum(np.log(2 * np.pi * psi[const]))


def test_factor_analysis_fits_raw_digits_with_constant_pixels(digits):
    """Constant pixels used to get noise variance 0 from init (status NONFINITE at iteration 1, with
    a message about reg_covar, which FA does not have). Now: status 0, the constant pixels decouple
    (zero loadings, ψ at the floor) and the rest is the fit without them."""
    X, const, keep = digits
    assert const.size == 3
    raw, full, part, extra = _with_constant_columns_removed(jaxem.FactorAnalysis(5), X, const, keep)
    for r in (raw, full, part):
        assert int(r.status) == 0, jaxem.describe_status(int(r.status))
    np.testing.assert_array_equal(np.asarray(raw.params.W)[const], 0.0)
    assert np.all(np.asarray(raw.params.noise_variance)[const] > 0)
    np.testing.assert_allclose(np.asarray(full.trace) - extra, np.asarray(part.trace), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(full.params.W)[keep], np.asarray(part.params.W),
                               rtol=1e-6, atol=1e-9)
    assert float(raw.log_likelihood) > float(raw.trace[0])


def test_ppca_fits_raw_digits_like_sklearn_pca(digits):
    from sklearn.decomposition import PCA

    X, _, _ = digits
    res = _fit(jaxem.PPCA(5), X, 1e-9)
    assert int(res.status) == 0
    np.testing.assert_allclose(float(res.log_likelihood), PCA(5).fit(X).score(X), rtol=1e-6)


@pytest.mark.slow
def test_factor_analysis_raw_digits_matches_sklearn(digits):
    """scikit-learn's FactorAnalysis on the non-constant pixels (~30 s: its randomized SVD)."""
    from sklearn.decomposition import FactorAnalysis as SkFA

    X, const, keep = digits
    _, full, _, extra = _with_constant_columns_removed(jaxem.FactorAnalysis(5), X, const, keep, 400)
    ref = SkFA(5, random_state=0).fit(X[:, keep]).score(X[:, keep])
    np.testing.assert_allclose(float(full.log_likelihood) - extra, ref, rtol=1e-5)


def test_nonfinite_message_names_remedies_per_family():
    msg = jaxem.describe_status(int(jaxem.Status.NONFINITE))
    assert "for Gaussian mixtures and HMMs increase reg_covar" in msg  # not a remedy for FA/PPCA
    assert "rescale X" in msg and "starting parameters" in msg
