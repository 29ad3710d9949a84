"""Observed information and standard errors (issue 18): finite differences, Louis' identity, closed
forms, the delta method's invariance, checks; a parametric bootstrap as a slow test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxem

COV_TYPES = ("full", "diag", "spherical", "tied")


def _two_blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.random(n) < 0.4
    X = np.where(z[:, None], rng.normal(size=(n, 2)) * 0.7 + [3.0, 2.0],
                 rng.normal(size=(n, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]]))
    return X


def _sklearn_mle(X, ct):
    """The maximum-likelihood Gaussian mixture by scikit-learn's EM run to convergence (no JAX
    compile for the fits; reg_covar = 0, so its fixed point is the MLE)."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(2, covariance_type=ct, tol=1e-13, max_iter=5000, reg_covar=0.0,
                         means_init=[[0.0, 0.0], [3.0, 2.0]]).fit(X)
    return jaxem.GaussianMixtureParams(jnp.asarray(gm.weights_), jnp.asarray(gm.means_),
                                       jnp.asarray(gm.covariances_))


@pytest.fixture(scope="module")
def blobs():
    return _two_blobs()


@pytest.fixture(scope="module")
def fits(blobs):
    return {ct: _sklearn_mle(blobs, ct) for ct in COV_TYPES}


def _numpy_gmm_loglik(params, X):
    """Σ_n log Σ_k π_k N(x_n | μ_k, Σ_k), full covariances, in NumPy."""
    w, mu, cov = (np.asarray(a) for a in params)
    out = []
    for k in range(len(w)):
        d = X - mu[k]
        L = np.linalg.cholesky(cov[k])
        y = np.linalg.solve(L, d.T)
        out.append(np.log(w[k]) - 0.5 * np.sum(y * y, 0) - np.sum(np.log(np.diag(L)))
                   - 0.5 * X.shape[1] * np.log(2 * np.pi))
    out = np.stack(out, 1)
    m = out.max(1, keepdims=True)
    return float(np.sum(np.log(np.exp(out - m).sum(1)) + m[:, 0]))


def test_hessian_matches_numpy_finite_differences(blobs, fits):
    """-I(u) against central second differences of a NumPy log-likelihood in the same coordinates
    (at the MLE and at a point away from it)."""
    model = jaxem.GaussianMixture(2)
    for params in (fits["full"], fits["full"]._replace(means=fits["full"].means + 0.3)):
        info = jaxem.observed_information(model, params, blobs)
        u, to_params = jaxem.information_coordinates(model, params)
        u, P, h = np.asarray(u), len(u), 1e-4
        E = np.eye(P) * h
        i, j = np.triu_indices(P)
        signs = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
        U = np.stack([u + a * E[i] + b * E[j] for a, b in signs])  # (4, pairs, P)
        batch = jax.jit(jax.vmap(jax.vmap(to_params)))(U)
        f = np.array([[_numpy_gmm_loglik([x[s, t] for x in batch], blobs)
                       for t in range(len(i))] for s in range(4)])
        H = np.zeros((P, P))
        H[i, j] = H[j, i] = (f[0] - f[1] - f[2] + f[3]) / (4 * h * h)
        # FD error ~ eps·|f|/h² ≈ 1e-16·600/1e-8 ≈ 1e-5 (entries are O(1) to O(100)).
        np.testing.assert_allclose(-np.asarray(info.matrix), H, atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_louis_equals_hessian(blobs, fits, ct):
    """Louis' identity (E-step only) equals the autodiff Hessian, at the MLE and away from it."""
    model = jaxem.GaussianMixture(2, covariance_type=ct)
    params = fits[ct]
    a = jaxem.observed_information(model, params, blobs).matrix
    b = jaxem.observed_information(model, params, blobs, method="louis").matrix
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(a).max())
    se_a = jaxem.standard_errors(model, params, blobs)
    se_b = jaxem.standard_errors(model, params, blobs, method="louis")
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-8), se_a, se_b)
    # Away from the MLE the complete-data and missing terms change, the identity still holds.
    away = params._replace(means=params.means + 0.2)
    a = jaxem.observed_information(model, away, blobs).matrix
    b = jaxem.observed_information(model, away, blobs, method="louis").matrix
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(a).max())
    if ct == "spherical":  # Oakes' identity (the E-step differentiated): the same matrix
        c = jaxem.observed_information(model, away, blobs, method="oakes").matrix
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-9 * np.abs(a).max())


def test_gaussian_closed_form():
    """K = 1: SE(μ_d) = sqrt(Σ_dd / N), SE(Σ_dd) = Σ_dd sqrt(2/N) (Gaussian MLE), SE(π) = 0."""
    X = _two_blobs(n=200, seed=1)
    N = X.shape[0]
    mean, S = X.mean(0), np.cov(X.T, bias=True)  # the MLE
    model = jaxem.GaussianMixture(1, reg_covar=0.0)
    params = jaxem.GaussianMixtureParams(jnp.ones(1), jnp.asarray(mean[None]), jnp.asarray(S[None]))
    se = jaxem.standard_errors(model, params, X)
    var = np.diag(S)
    np.testing.assert_allclose(se.means[0], np.sqrt(var / N), rtol=1e-8)
    np.testing.assert_allclose(np.diag(se.covariances[0]), var * np.sqrt(2 / N), rtol=1e-8)
    np.testing.assert_allclose(se.weights, 0.0, atol=1e-12)
    # Off the diagonal: Var(S_12) = (Σ_11 Σ_22 + Σ_12²) / N; Σ_12 and Σ_21 are one parameter.
    np.testing.assert_allclose(se.covariances[0, 0, 1],
                               np.sqrt((S[0, 0] * S[1, 1] + S[0, 1] ** 2) / N), rtol=1e-8)
    assert se.covariances[0, 0, 1] == se.covariances[0, 1, 0]


def test_product_mixture_closed_forms():
    """K = 1: Poisson SE(λ) = sqrt(λ/N); Bernoulli SE(p) = sqrt(p(1-p)/N); an all-zero feature
    (estimate clipped to min_rate / min_prob, on the boundary) is held fixed, error 0."""
    rng = np.random.default_rng(0)
    N = 300
    X = np.c_[rng.poisson([2.0, 5.0], (N, 2)), np.zeros(N)]
    model = jaxem.PoissonMixture(1)
    rates = np.maximum(X.mean(0), model.min_rate)  # the MLE, as EM clips it
    params = jaxem.PoissonMixtureParams(jnp.ones(1), jnp.asarray(rates[None]))
    se = jaxem.standard_errors(model, params, X)
    np.testing.assert_allclose(se.rates[0, :2], np.sqrt(rates[:2] / N), rtol=1e-8)
    assert se.rates[0, 2] == 0
    X = np.c_[rng.random((N, 2)) < [0.3, 0.6], np.zeros(N)].astype(float)
    model = jaxem.BernoulliMixture(1)
    p = np.clip(X.mean(0), model.min_prob, 1 - model.min_prob)
    params = jaxem.BernoulliMixtureParams(jnp.ones(1), jnp.asarray(p[None]))
    for method in ("hessian", "louis"):
        se = jaxem.standard_errors(model, params, X, method=method)
        np.testing.assert_allclose(se.probs[0, :2], np.sqrt(p[:2] * (1 - p[:2]) / N), rtol=1e-8)
        assert se.probs[0, 2] == 0


def test_mixture_model_reparametrised_gmm(blobs, fits):
    """The delta method's invariance at the MLE: a MixtureModel with its own parametrisation (one
    logit, log standard deviations) gives the GaussianMixture's errors of the means."""
    X = blobs
    gm = jaxem.GaussianMixture(2, covariance_type="diag")
    gp = fits["diag"]

    def log_joint(p, x):
        log_pi = jax.nn.log_softmax(jnp.array([p["logit"], 0.0]))
        z = (x - p["means"]) * jnp.exp(-p["log_sd"])
        return log_pi - 0.5 * jnp.sum(z * z + 2 * p["log_sd"] + jnp.log(2 * jnp.pi), -1)

    model = jaxem.MixtureModel(log_joint, 2)
    w = np.asarray(gp.weights)
    params = {"logit": jnp.log(w[0] / w[1]), "means": gp.means,
              "log_sd": 0.5 * jnp.log(gp.covariances)}
    se = jaxem.standard_errors(model, params, X)
    ref = jaxem.standard_errors(gm, gp, X)
    np.testing.assert_allclose(se["means"], ref.means, rtol=1e-6)
    # SE(log σ) = SE(σ²) / (2σ²) (delta method).
    np.testing.assert_allclose(se["log_sd"], ref.covariances / (2 * gp.covariances), rtol=1e-6)


def test_label_switching_and_weights(blobs, fits):
    """Permuting the components permutes the errors; weights 2 halve the variances; zero-weight rows
    are ignored."""
    model = jaxem.GaussianMixture(2, covariance_type="tied")
    params = fits["tied"]
    se = jaxem.standard_errors(model, params, blobs)
    flipped = params._replace(weights=params.weights[::-1], means=params.means[::-1])
    se_f = jaxem.standard_errors(model, flipped, blobs)
    np.testing.assert_allclose(se_f.means, se.means[::-1], rtol=1e-9)
    np.testing.assert_allclose(se_f.weights, se.weights[::-1], rtol=1e-9)
    np.testing.assert_allclose(se_f.covariances, se.covariances, rtol=1e-9)
    se2 = jaxem.standard_errors(model, params, blobs, weights=np.full(len(blobs), 2.0))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b / np.sqrt(2), rtol=1e-9),
                           se2, se)
    # Additive over rows, and rows of weight 0 are ignored whatever they hold.
    first = np.r_[np.ones(150), np.zeros(50)]
    X = blobs.copy()
    X[150:] = 1e3
    a = jaxem.observed_information(model, params, X, weights=first).matrix
    b = jaxem.observed_information(model, params, blobs, weights=1 - first).matrix
    c = jaxem.observed_information(model, params, blobs).matrix
    np.testing.assert_allclose(a + b, c, rtol=1e-9, atol=1e-9 * np.abs(c).max())


def test_hmm_one_state_closed_form():
    """A one-state categorical HMM is i.i.d. categorical: SE(p_c) = sqrt(p_c(1-p_c)/T); its initial
    and transition probabilities are fixed at 1 (error 0)."""
    rng = np.random.default_rng(0)
    X = rng.choice(3, size=(2, 150), p=[0.2, 0.3, 0.5])
    lengths, weights = np.array([150, 90]), np.array([1.0, 2.0])  # padded, weighted sequences
    frame_w = np.where(np.arange(150) < lengths[:, None], weights[:, None], 0.0)
    T = frame_w.sum()
    model = jaxem.CategoricalHMM(1, 3)
    p = np.array([frame_w[X == c].sum() for c in range(3)]) / T  # the MLE
    params = jaxem.CategoricalHMMParams(jnp.ones(1), jnp.ones((1, 1)), jnp.asarray(p[None]))
    se = jaxem.standard_errors(model, params, X, weights, lengths=lengths)
    np.testing.assert_allclose(se.emission_probs[0], np.sqrt(p * (1 - p) / T), rtol=1e-8)
    np.testing.assert_allclose(se.transition_matrix, 0.0, atol=1e-12)


def test_ppca_mean_and_rotation():
    """PPCA with q = 2: W is not identifiable (NaN); the mean's error is sqrt(diag(C)/N) with
    C = WWᵀ + σ²I (the mean is orthogonal to C at the MLE); σ² gets a finite error."""
    rng = np.random.default_rng(0)
    N = 200
    X = rng.normal(size=(N, 2)) @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(N, 4))
    model = jaxem.PPCA(2)
    # The MLE in closed form (Tipping & Bishop 1999, eqs. 7-8), up to a rotation of W.
    lam, U = np.linalg.eigh(np.cov(X.T, bias=True))
    lam, U = lam[::-1], U[:, ::-1]
    s2 = lam[2:].mean()
    params = jaxem.PPCAParams(jnp.asarray(X.mean(0)), jnp.asarray(U[:, :2] * np.sqrt(lam[:2] - s2)),
                              jnp.asarray(s2))
    se = jaxem.standard_errors(model, params, X)
    C = params.W @ params.W.T + params.noise_variance * np.eye(4)
    np.testing.assert_allclose(se.mean, np.sqrt(np.diag(C) / N), rtol=1e-6)
    assert np.all(np.isnan(se.W))
    assert np.isfinite(se.noise_variance) and 0 < se.noise_variance < params.noise_variance
    # Louis' identity with the exact Gaussian moments of z | x (complete minus missing
    # information) and Oakes' identity equal the Hessian, away from the MLE, with weights (a
    # zero-weight row holding anything).
    w = rng.uniform(0.5, 2.0, N)
    w[3], X[3] = 0.0, 1e3
    away = params._replace(mean=params.mean + 0.1, W=params.W[:, ::-1],
                           noise_variance=jnp.asarray(0.3, params.mean.dtype))  # (same jit)
    h = jaxem.observed_information(model, away, X, w)
    _close(h, jaxem.observed_information(model, away, X, w, method="louis"))
    # Factor analysis with equal noise variances is this PPCA: with J mapping log σ² to the D
    # log ψ_d (the other coordinates shared), its information is Jᵀ I_FA J. With unequal ψ, Louis'
    # and Oakes' identities agree.
    fa = jaxem.FactorAnalysis(2)
    fp = jaxem.FactorAnalysisParams(away.mean, away.W, jnp.full(4, 0.3))
    J = np.zeros((16, 13))
    J[:12, :12], J[12:, 12] = np.eye(12), 1.0
    I_fa = np.asarray(jaxem.observed_information(fa, fp, X, w, method="louis").matrix)
    np.testing.assert_allclose(J.T @ I_fa @ J, h.matrix, rtol=1e-9,
                               atol=1e-10 * np.abs(h.matrix).max())
    fp = fp._replace(noise_variance=jnp.asarray([0.3, 0.5, 0.2, 0.8]))
    _close(jaxem.observed_information(fa, fp, X, w, method="louis"),
           jaxem.observed_information(fa, fp, X, w, method="oakes"))


def _close(a, b):
    a, b = np.asarray(a.matrix), np.asarray(b.matrix)
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10 * np.abs(a).max())


def test_not_positive_definite_and_bad_arguments(blobs):
    """Two identical components (not identifiable), an empty component, a parameter the likelihood
    ignores: ValueError outside jit, NaN under jit."""
    gm = jaxem.GaussianMixture(2)
    S = np.cov(blobs.T, bias=True)
    same = jaxem.GaussianMixtureParams(jnp.array([0.5, 0.5]), jnp.asarray([blobs.mean(0)] * 2),
                                       jnp.asarray([S, S]))
    with pytest.raises(ValueError, match="not positive definite"):
        jaxem.standard_errors(gm, same, blobs)
    with pytest.raises(ValueError, match="not finite"):
        jaxem.standard_errors(gm, same._replace(weights=jnp.array([1.0, 0.0])), blobs)

    def log_joint(p, x):
        return jnp.stack([jnp.log(0.5) - 0.5 * (x[0] - p["m"][0]) ** 2,
                          jnp.log(0.5) - 0.5 * (x[0] - p["m"][1]) ** 2])

    model = jaxem.MixtureModel(log_joint, 2)
    X = np.r_[np.zeros(20) - 2.0, np.zeros(20) + 2.0][:, None] + np.linspace(-0.5, 0.5, 40)[:, None]
    params = {"m": jnp.array([-2.0, 2.0]), "unused": jnp.zeros(())}
    with pytest.raises(ValueError, match="not positive definite"):
        jaxem.standard_errors(model, params, X)
    se = jax.jit(lambda p: jaxem.standard_errors(model, p, X))(params)
    assert np.all(np.isnan(se["m"])) and np.isnan(se["unused"])
    ok = jaxem.standard_errors(model, {"m": params["m"]}, X)
    assert np.all(np.isfinite(ok["m"]))
    with pytest.raises(ValueError, match="method"):
        jaxem.standard_errors(model, params, X, method="sandwich")
    with pytest.raises(ValueError, match="include_prior"):
        jaxem.standard_errors(model, params, X, include_prior="yes")


def test_float32(blobs, fits):
    model = jaxem.GaussianMixture(2, covariance_type="spherical")
    p64 = fits["spherical"]
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), p64)
    se32 = jaxem.standard_errors(model, p32, blobs.astype(np.float32))
    se64 = jaxem.standard_errors(model, p64, blobs)
    assert se32.means.dtype == np.float32
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3), se32, se64)


BOOTSTRAP = {
    # 1-D, spherical: the means and weights of a well-separated two-component mixture.
    "1d": (jaxem.GaussianMixture(2, covariance_type="spherical", reg_covar=0.0), 300, "hessian",
           jaxem.GaussianMixtureParams(jnp.array([0.35, 0.65]), jnp.array([[-2.0], [2.0]]),
                                       jnp.array([1.0, 0.64]))),
    # 2-D, full covariances (correlated), errors by Louis' identity.
    "2d": (jaxem.GaussianMixture(2, covariance_type="full", reg_covar=0.0), 400, "louis",
           jaxem.GaussianMixtureParams(jnp.array([0.4, 0.6]), jnp.array([[-2.0, 0.0], [2.0, 1.0]]),
                                       jnp.array([[[1.0, 0.5], [0.5, 1.0]],
                                                  [[0.5, -0.2], [-0.2, 0.8]]]))),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BOOTSTRAP))
def test_bootstrap_coverage(case):
    """Parametric bootstrap: 1000 data sets from a known mixture, each fitted by vmapped EM (from
    the truth: no label switching); the nominal 95% Wald intervals θ̂ ± 1.96 SE cover the true means
    and weights in 92-98% of the replicates (binomial s.d. of the coverage at 1000 replicates:
    0.7%). Covariance entries are printed, not asserted (their Wald intervals are known to
    undercover at moderate N: the sampling distribution of a variance is skewed)."""
    model, N, method, truth = BOOTSTRAP[case]
    R = 1000
    keys = jax.random.split(jax.random.key(2026), R)
    Xs = jax.vmap(lambda k: model.sample(k, truth, N))(keys)

    def one(X):
        p = jaxem.fit(model, truth, X, tol=1e-10, max_iter=1000).params
        return p, jaxem.standard_errors(model, p, X, method=method)

    P, SE = jax.jit(jax.vmap(one), compiler_options=dict(jaxem.COMPILER_OPTIONS))(Xs)
    assert np.all(np.isfinite(SE.means)) and np.all(np.isfinite(SE.weights))
    for name in ("means", "weights", "covariances"):
        est, se = np.asarray(getattr(P, name)), np.asarray(getattr(SE, name))
        true = np.asarray(getattr(truth, name))
        cover = np.mean(np.abs(est - true) <= 1.96 * se, axis=0)
        print(case, name, cover.ravel())
        if name != "covariances":
            assert np.all((cover >= 0.92) & (cover <= 0.98)), (name, cover)


def test_hmm_forward_recursion_matches_log_likelihood():
    """The forward-only recursion the HMM Hessian differentiates equals the model's
    log-likelihood (padded, weighted sequences; an impossible transition)."""
    from jaxem._information import _hmm_log_likelihood

    model = jaxem.CategoricalHMM(2, 3)
    params = jaxem.CategoricalHMMParams(jnp.array([1.0, 0.0]), jnp.array([[0.7, 0.3], [0.0, 1.0]]),
                                        jnp.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    X = np.random.default_rng(1).choice(3, size=(3, 40))
    weights, lengths = np.array([1.0, 2.0, 0.5]), np.array([40, 25, 1])
    Xs, w = model.prepare_data(X, weights, lengths, params)
    a, b = jax.jit(lambda p: (_hmm_log_likelihood(model, p, Xs, w),
                              model.log_likelihood(p, X, weights, lengths)))(params)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_hmm_louis_ragged():
    """HMMs: the E-step route (Oakes' identity through the smoothed posteriors, method="louis")
    equals the Hessian of the forward recursion for padded sequences of different lengths with
    sequence weights, and an impossible transition (held fixed); the posteriors it uses, the
    derivatives of the forward recursion, are a NumPy forward-backward's γ and Σ_t ξ."""
    from _hmm_reference import forward_backward
    from jaxem._information import _hmm_forward
    from jaxem.models.hmm._inference import safe_log

    model = jaxem.CategoricalHMM(2, 3)
    A = np.array([[0.7, 0.3], [0.0, 1.0]])
    B = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    params = jaxem.CategoricalHMMParams(jnp.array([0.8, 0.2]), jnp.asarray(A), jnp.asarray(B))
    X = np.random.default_rng(1).choice(3, size=(3, 20))
    weights, lengths = np.array([1.0, 2.0, 0.5]), np.array([20, 9, 1])
    h = jaxem.observed_information(model, params, X, weights, lengths=lengths)
    assert np.asarray(h.fixed).sum() == 1
    _close(h, jaxem.observed_information(model, params, X, weights, lengths=lengths,
                                         method="louis"))
    Xs, w = model.prepare_data(X, weights, lengths)
    posteriors = jax.jit(lambda p: jax.grad(_hmm_forward, (0, 1, 2))(
        safe_log(p.initial_probs), safe_log(p.transition_matrix), model._log_b(p, Xs), w),
        compiler_options=dict(jaxem.COMPILER_OPTIONS))
    g_pi, g_A, g_b = posteriors(params)
    n0, nA = 0.0, 0.0
    for s, (x, ws, L) in enumerate(zip(X, weights, lengths)):
        gamma, xi, _ = forward_backward(np.array([0.8, 0.2]), A, B.T[x[:L]])
        np.testing.assert_allclose(g_b[s, :L], ws * gamma, rtol=1e-10, atol=1e-14)
        n0, nA = n0 + ws * gamma[0], nA + ws * xi
    np.testing.assert_allclose(g_b[np.asarray(w) == 0], 0.0)
    np.testing.assert_allclose(g_pi, n0, rtol=1e-10)
    np.testing.assert_allclose(g_A, nA, rtol=1e-10, atol=1e-14)


def test_information_of_the_log_posterior():
    """With a prior (a MAP fit) the information is that of the log posterior: -∇²_u [log p(X | θ(u))
    + log p̃(θ(u))] against central second differences of the log posterior's values. K = 1 with
    κ_P pseudo-observations of the mean: SE(μ̂_d) = sqrt(Σ_dd / (N + κ_P)) at the posterior mode,
    and sqrt(Σ_dd / N) at the sample mean with include_prior=False (the likelihood's
    information)."""
    X = _two_blobs(n=200, seed=1)  # the shapes of test_gaussian_closed_form: its compiles reused
    N = X.shape[0]
    prior = jaxem.GaussianPrior(shrinkage=5.0, mean=(1.0, 0.5), dof=4.0, scale=0.5)
    model = jaxem.GaussianMixture(1, reg_covar=0.0, prior=prior)
    mu = (X.sum(0) + 5.0 * np.array([1.0, 0.5])) / (N + 5.0)  # the posterior mode of the mean
    S = np.cov(X.T, bias=True) + 0.1
    params = jaxem.GaussianMixtureParams(jnp.ones(1), jnp.asarray(mu[None]), jnp.asarray(S[None]))
    info = jaxem.observed_information(model, params, X)
    u = np.asarray(jaxem.information_coordinates(model, params)[0])  # log π, μ, tril(L), log L_dd
    np.testing.assert_allclose(u[[3, 5]], np.log(np.diag(np.linalg.cholesky(S))), rtol=1e-12)

    def log_posterior(v):  # NumPy and scipy: the normalised prior densities (constants cancel)
        L = np.array([[np.exp(v[3]), 0.0], [v[4], np.exp(v[5])]])
        m, C = v[1:3], L @ L.T
        return (stats.multivariate_normal(m, C).logpdf(X).sum()
                + stats.invwishart.logpdf(C, df=4.0, scale=0.5 * np.eye(2))
                + stats.multivariate_normal.logpdf(m, [1.0, 0.5], C / 5.0))

    P, h = len(u), 1e-4
    E = np.eye(P) * h
    H = np.zeros((P, P))
    for i in range(1, P):  # (the weight of one component is fixed: no curvature)
        for j in range(i, P):
            f = [log_posterior(u + a * E[i] + b * E[j]) for a, b in [(1, 1), (1, -1), (-1, 1),
                                                                      (-1, -1)]]
            H[i, j] = H[j, i] = (f[0] - f[1] - f[2] + f[3]) / (4 * h * h)
    np.testing.assert_allclose(-np.asarray(info.matrix)[1:, 1:], H[1:, 1:], atol=1e-3, rtol=1e-6)
    se = jaxem.standard_errors(model, params, X)
    np.testing.assert_allclose(se.means[0], np.sqrt(np.diag(S) / (N + 5.0)), rtol=1e-8)
    at_mle = params._replace(means=jnp.asarray(X.mean(0)[None]))  # the likelihood's cross terms 0
    se = jaxem.standard_errors(model, at_mle, X, include_prior=False)
    np.testing.assert_allclose(se.means[0], np.sqrt(np.diag(S) / N), rtol=1e-8)


