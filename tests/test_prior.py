"""MAP estimation with conjugate priors (Fraley & Raftery 2007): NumPy references of MAP EM's
iterates, the log posterior in the trace (against scipy's normalised prior densities), monotonicity,
flat priors reproducing maximum likelihood, and singular data staying finite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln, logsumexp

import jaxem
from helpers import blobs

N_ITER = 6


@pytest.fixture(scope="module")
def data():
    return blobs(seed=3, n=120, d=2, k=3)


# --- NumPy reference of MAP EM (Fraley & Raftery 2007, §3-4; tech. report 486 Table 2) ----------
def _cov_k(cov, ct, k, D):
    return {"full": lambda: cov[k], "tied": lambda: cov, "diag": lambda: np.diag(cov[k]),
            "spherical": lambda: cov[k] * np.eye(D)}[ct]()


def _gmm_loglik(X, w, mu, cov, ct):
    K, D = mu.shape
    lj = np.stack([np.log(w[k]) + stats.multivariate_normal.logpdf(X, mu[k], _cov_k(cov, ct, k, D))
                   for k in range(K)], 1)
    return logsumexp(lj, 1).sum(), np.exp(lj - logsumexp(lj, 1, keepdims=True))


def _gmm_log_prior(w, mu, cov, ct, pr):
    """The normalised log prior density, from scipy's distributions."""
    K, D = mu.shape
    kap, muP, nu, lam, alpha = pr
    lp = stats.dirichlet.logpdf(w / w.sum(), np.full(K, alpha))
    for k in range(K):
        S = _cov_k(cov, ct, k, D)
        if kap > 0:
            lp += stats.multivariate_normal.logpdf(mu[k], muP, S / kap)
        if ct == "full":
            lp += stats.invwishart.logpdf(cov[k], df=nu, scale=lam)
        elif ct == "diag":
            lp += stats.invgamma.logpdf(cov[k], nu / 2, scale=lam / 2).sum()
        elif ct == "spherical":
            lp += stats.invgamma.logpdf(cov[k], nu / 2, scale=lam / 2)
    if ct == "tied":
        lp += stats.invwishart.logpdf(cov, df=nu, scale=lam)
    return lp


def _gmm_map_step(X, r, ct, pr):
    """The posterior mode from responsibilities r, written from Fraley & Raftery's equations."""
    kap, muP, nu, lam, alpha = pr
    N, D = X.shape
    K = r.shape[1]
    b = 1.0 if kap > 0 else 0.0
    nk = r.sum(0)
    xbar = r.T @ X / nk[:, None]
    W = np.stack([(r[:, k, None] * (X - xbar[k])).T @ (X - xbar[k]) for k in range(K)])
    e = xbar - muP
    M = np.stack([kap * nk[k] / (nk[k] + kap) * np.outer(e[k], e[k]) for k in range(K)])
    w = (nk + alpha - 1) / (N + K * (alpha - 1))
    mu = (nk[:, None] * xbar + kap * muP) / (nk[:, None] + kap)
    if ct == "full":
        cov = (lam + W + M) / (nu + nk + D + 1 + b)[:, None, None]
    elif ct == "tied":
        cov = (lam + W.sum(0) + M.sum(0)) / (nu + N + D + 1 + K * b)
    elif ct == "diag":
        cov = (lam + np.diagonal(W, 0, 1, 2) + np.diagonal(M, 0, 1, 2)) / (nu + nk + 2 + b)[:, None]
    else:
        cov = (lam + np.trace(W, 0, 1, 2) + np.trace(M, 0, 1, 2)) / (nu + D * nk + 2 + D * b)
    return w, mu, cov


CASES = {
    # (covariance_type, shrinkage κ_P, dof ν_P, scale Λ_P, weights' α)
    "full": ("full", 0.5, 5.0, ((1.0, 0.3), (0.3, 0.5)), 2.0),
    "full-no-mean-prior": ("full", 0.0, 3.0, ((0.6, -0.2), (-0.2, 0.8)), 1.0),
    "tied": ("tied", 0.3, 4.0, ((0.8, 0.1), (0.1, 0.4)), 3.0),
    "diag": ("diag", 0.5, 3.0, (0.7, 0.2), 1.5),
    "spherical": ("spherical", 1.0, 2.5, 0.6, 1.0),
}


def _jit(f):
    return jax.jit(f, compiler_options=dict(jaxem.COMPILER_OPTIONS))


def _map_step(model):
    """One EM iteration through the statistics protocol, and the log posterior entering it."""
    def step(p, X):
        st = model.sufficient_statistics(p, X)
        return model.maximize(st, p), st.log_likelihood + jaxem.log_prior(model, p)

    return _jit(step)


def _start(X, labels, ct):
    """ML parameters of a hard partition (NumPy): the common starting point."""
    K = labels.max() + 1
    w = np.bincount(labels) / len(X)
    mu = np.stack([X[labels == k].mean(0) for k in range(K)])
    C = np.stack([np.cov(X[labels == k].T, bias=True) + 0.1 * np.eye(X.shape[1])
                  for k in range(K)])
    cov = {"full": C, "tied": C.mean(0), "diag": np.diagonal(C, 0, 1, 2),
           "spherical": np.diagonal(C, 0, 1, 2).mean(1)}[ct]
    return jaxem.GaussianMixtureParams(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))


def _prior_case(case):
    ct, kap, nu, scale, alpha = CASES[case]
    muP = np.array([0.5, -1.0])
    prior = jaxem.GaussianPrior(shrinkage=kap, mean=tuple(muP), dof=nu, scale=scale,
                                weights_concentration=alpha)
    return ct, prior, (kap, muP, nu, np.asarray(scale), alpha)


def _reference_iterates(X, p0, ct, pr, n_iter):
    w, mu, cov = (np.asarray(a) for a in p0)
    lps = []
    for _ in range(n_iter):
        ll, r = _gmm_loglik(X, w, mu, cov, ct)
        lps.append(ll + _gmm_log_prior(w, mu, cov, ct, pr))
        w, mu, cov = _gmm_map_step(X, r, ct, pr)
    return (w, mu, cov), np.asarray(lps)


def test_gaussian_map_em_matches_numpy_reference(data):
    """Iterate for iterate, for every covariance type (and κ_P = 0): ``maximize(
    sufficient_statistics)`` is the posterior mode of the NumPy reference, and the log posterior
    (log-likelihood + `jaxem.log_prior`) moves as the reference's with scipy's normalised prior
    densities (the kernel drops only a constant). One compiled program steps all cases."""
    X, labels = data
    cases = [_prior_case(c) for c in CASES]
    models = [jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior) for ct, prior, _ in cases]

    def steps(ps, X):
        out = []
        for m, p in zip(models, ps):
            st = m.sufficient_statistics(p, X)
            out.append((m.maximize(st, p), st.log_likelihood + jaxem.log_prior(m, p)))
        return out

    step = _jit(steps)
    p0 = [_start(X, labels, ct) for ct, _, _ in cases]
    ps, lps = p0, []
    for _ in range(N_ITER):
        out = step(ps, X)
        ps = [o[0] for o in out]
        lps.append([float(o[1]) for o in out])
    lps = np.asarray(lps)
    for i, (ct, _, pr) in enumerate(cases):
        want, ref = _reference_iterates(X, p0[i], ct, pr, N_ITER)
        for got, wa in zip(ps[i], want):
            np.testing.assert_allclose(np.asarray(got), wa, rtol=1e-9, atol=1e-11, err_msg=ct)
        np.testing.assert_allclose(lps[:, i] - lps[0, i], ref - ref[0], rtol=1e-9, atol=1e-9)
        assert np.all(np.diff(lps[:, i]) >= -1e-9)  # EM on the log posterior is monotone


def test_float32_map_step(data):
    """float32 data far from the origin (|x| ~ 1e3): the MAP step (full covariances, statistics
    about the means) to float32 rounding."""
    X, labels = data
    ct, prior, pr = _prior_case("full")
    shift = np.array([1e3, -1e3])
    prior = jaxem.GaussianPrior(prior.shrinkage, tuple(pr[1] + shift), prior.dof, prior.scale,
                                prior.weights_concentration)
    pr = (pr[0], pr[1] + shift) + pr[2:]
    model = jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior)
    p0 = _start(X + shift, labels, ct)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p0)
    new, lp = _map_step(model)(p32, jnp.asarray(X + shift, jnp.float32))
    assert new.means.dtype == jnp.float32 and np.isfinite(float(lp))
    (w, mu, cov), _ = _reference_iterates(X + shift, p0, ct, pr, 1)
    np.testing.assert_allclose(new.weights, w, rtol=1e-5)
    np.testing.assert_allclose(new.means, mu, rtol=1e-6)
    np.testing.assert_allclose(new.covariances, cov, rtol=1e-4, atol=1e-5)


def test_fit_reports_the_log_posterior(data):
    """`jaxem.fit` runs the same MAP iterates: its trace is the mean log posterior
    (Σ log p(x) + log p̃(θ)) / N, non-decreasing, and ``log_likelihood`` is it at the returned
    params; BIC keeps the log-likelihood at the MAP estimate (mclust)."""
    X, labels = data
    ct, prior, pr = _prior_case("full")
    model = jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior)
    p0 = _start(X, labels, ct)
    res = jaxem.fit(model, p0, X, tol=0.0, max_iter=N_ITER)
    assert int(res.status) == 0
    (w, mu, cov), ref = _reference_iterates(X, p0, ct, pr, N_ITER + 1)
    tr = np.asarray(res.trace)
    ref = ref / len(X)
    np.testing.assert_allclose(tr - tr[0], ref[:N_ITER] - ref[0], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(float(res.log_likelihood) - tr[0], ref[N_ITER] - ref[0],
                               rtol=1e-9)
    assert np.all(np.diff(tr) >= -1e-12)
    ll = _gmm_loglik(X, *(np.asarray(a) for a in res.params), ct)[0]
    kernel, bic = _jit(lambda p, X: (jaxem.log_prior(model, p), model.bic(p, X)))(res.params, X)
    np.testing.assert_allclose(float(res.log_likelihood), (ll + kernel) / len(X), rtol=1e-10)
    p = model.n_parameters(res.params)
    np.testing.assert_allclose(float(bic), -2 * ll + p * np.log(len(X)), rtol=1e-10)


def test_flat_prior_is_maximum_likelihood(data):
    """Every hyperparameter at its flat value (the default GaussianPrior()) gives the ML step and
    log-likelihood exactly, for every covariance type (and so the ML fit and trace)."""
    X, labels = data
    cts = ("full", "tied", "diag", "spherical")

    def steps(X, starts):
        out = []
        for ct, p in zip(cts, starts):
            for prior in (None, jaxem.GaussianPrior()):
                m = jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior)
                st = m.sufficient_statistics(p, X)
                out.append((m.maximize(st, p), st.log_likelihood + jaxem.log_prior(m, p)))
        return out

    out = _jit(steps)(X, [_start(X, labels, ct) for ct in cts])
    for i in range(len(cts)):
        (ml, ll), (flat, lf) = out[2 * i: 2 * i + 2]
        for a, b in zip(ml, flat):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)
        assert float(lf) == float(ll)


def test_singular_data_stay_finite_with_a_prior():
    """A component sitting on duplicated points: ML EM without reg_covar breaks down (its
    covariance becomes singular); with mclust's default prior the covariance stays positive
    definite and the fit succeeds (Fraley & Raftery 2007's motivation)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 2)), np.tile([[6.0, 6.0]], (6, 1))])
    p0 = jaxem.GaussianMixtureParams(jnp.array([0.8, 0.2]), jnp.array([[0.0, 0.0], [6.0, 6.0]]),
                                     jnp.stack([jnp.eye(2), 0.5 * jnp.eye(2)]))
    ml = jaxem.GaussianMixture(2, reg_covar=0.0)
    ml_cov = _jit(lambda p, X: ml.maximize(ml.sufficient_statistics(p, X), p))(p0, X).covariances
    assert abs(np.linalg.det(np.asarray(ml_cov[1]))) < 1e-20  # ML: singular after one step
    model = jaxem.GaussianMixture(2, reg_covar=0.0, prior="default")
    res = jaxem.fit(model, p0, X, max_iter=20)
    assert int(res.status) == 0 and bool(res.converged)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in res.params)
    assert np.linalg.eigvalsh(np.asarray(res.params.covariances)).min() > 1e-3
    # the collapsed component's covariance is the prior's floor: Λ_P / (ν_P + n_k + D + 2)
    prior = jaxem.default_prior(jaxem.GaussianMixture(2), X)
    lam = np.asarray(prior.scale)
    nk = float(res.params.weights[1]) * len(X)
    e = 6.0 - np.asarray(prior.mean)
    want = (lam + 0.01 * nk / (nk + 0.01) * np.outer(e, e)) / (prior.dof + nk + 2 + 2)
    np.testing.assert_allclose(np.asarray(res.params.covariances[1]), want, rtol=1e-6)


def test_default_prior_is_mclusts(data):
    """mclust's defaultPrior: κ = 0.01, μ_P = column means, ν_P = D + 2, Λ_P = var(X) / K^(2/D)
    (ellipsoidal) or mean of the variances / K^(2/D) (diag, spherical)."""
    X = data[0]
    K, D = 3, X.shape[1]
    full = jaxem.default_prior(jaxem.GaussianMixture(K, "full"), X)
    assert full.shrinkage == 0.01 and full.dof == D + 2
    np.testing.assert_allclose(full.mean, X.mean(0))
    np.testing.assert_allclose(full.scale, np.cov(X.T) / K ** (2 / D))
    diag = jaxem.default_prior(jaxem.GaussianMixture(K, "diag"), X)
    np.testing.assert_allclose(diag.scale, np.var(X, 0, ddof=1).sum() / D / K ** (2 / D))
    # weights repeat rows: the same prior as the repeated data
    w = np.arange(len(X)) % 3 + 1.0
    rep = jaxem.default_prior(jaxem.GaussianMixture(K), np.repeat(X, w.astype(int), 0))
    np.testing.assert_allclose(jaxem.default_prior(jaxem.GaussianMixture(K), X, w).scale,
                               rep.scale, rtol=1e-12)
    hash(full), hash(diag)  # static model configuration


# --- Bernoulli and Poisson mixtures: the simple conjugate updates -------------------------------
def _product_reference(X, p0, kind, hyper, n_iter):
    w, th = (np.asarray(a) for a in p0)
    K = len(w)
    lps = []
    for _ in range(n_iter):
        if kind == "bernoulli":
            a, b, alpha = hyper
            lj = np.log(w) + X @ np.log(th).T + (1 - X) @ np.log1p(-th).T
            lp = stats.beta.logpdf(th, a, b).sum()
        else:
            shape, rate, alpha = hyper
            lj = np.log(w) + X @ np.log(th).T - th.sum(1) - gammaln(X + 1).sum(1)[:, None]
            lp = stats.gamma.logpdf(th, shape, scale=1 / rate).sum()
        lp += stats.dirichlet.logpdf(w, np.full(K, alpha))
        lse = logsumexp(lj, 1)
        lps.append(lse.sum() + lp)
        r = np.exp(lj - lse[:, None])
        nk, s = r.sum(0), r.T @ X
        w = (nk + alpha - 1) / (len(X) + K * (alpha - 1))
        th = ((s + a - 1) / (nk[:, None] + a + b - 2) if kind == "bernoulli"
              else (s + shape - 1) / (nk[:, None] + rate))
    return (w, th), np.asarray(lps) / len(X)


@pytest.mark.parametrize("kind", ["bernoulli", "poisson"])
def test_product_mixture_map_em_matches_numpy_reference(kind):
    rng = np.random.default_rng(1)
    D = 5
    if kind == "bernoulli":
        X = (rng.uniform(size=(90, D)) < np.where(np.arange(90) < 45, 0.2, 0.7)[:, None]) * 1.0
        hyper = (np.linspace(1.5, 3.0, D), np.linspace(2.0, 1.2, D), 2.0)
        prior = jaxem.BetaPrior(a=tuple(hyper[0]), b=tuple(hyper[1]), weights_concentration=2.0)
        model = jaxem.BernoulliMixture(2, prior=prior)
        flat, ml = jaxem.BernoulliMixture(2, prior=jaxem.BetaPrior()), jaxem.BernoulliMixture(2)
    else:
        X = rng.poisson(np.where(np.arange(90) < 45, 1.0, 6.0)[:, None], (90, D)) * 1.0
        hyper = (np.linspace(1.0, 4.0, D), 0.5, 1.5)
        prior = jaxem.GammaPrior(shape=tuple(hyper[0]), rate=0.5, weights_concentration=1.5)
        model = jaxem.PoissonMixture(2, prior=prior)
        flat, ml = jaxem.PoissonMixture(2, prior=jaxem.GammaPrior()), jaxem.PoissonMixture(2)
    r = np.stack([np.arange(90) < 45, np.arange(90) >= 45], 1) * 0.8 + 0.1
    th0 = r.T @ X / r.sum(0)[:, None]
    th0 = np.clip(th0, 0.05, 0.95) if kind == "bernoulli" else th0
    p0 = ml._make(jnp.array([0.5, 0.5]), jnp.asarray(th0))

    def steps(ps, X):
        out = []
        for m, p in zip((model, flat, ml), ps):
            st = m.sufficient_statistics(p, X)
            out.append((m.maximize(st, p), st.log_likelihood + jaxem.log_prior(m, p)))
        return out

    step = _jit(steps)
    ps, lps, lls = (p0, p0, p0), [], []
    for _ in range(N_ITER):
        out = step(ps, X)
        ps = tuple(o[0] for o in out)
        lps.append(float(out[0][1]))
        lls.append((float(out[1][1]), float(out[2][1])))
    (w, th), ref = _product_reference(X, p0, kind, hyper, N_ITER)
    np.testing.assert_allclose(ps[0][0], w, rtol=1e-10)
    np.testing.assert_allclose(ps[0][1], th, rtol=1e-10)
    lps = np.asarray(lps) / len(X)
    np.testing.assert_allclose(lps - lps[0], ref - ref[0], rtol=1e-9, atol=1e-11)
    assert np.all(np.diff(lps) >= -1e-12)
    # the flat prior (a = b = 1 / shape 1, rate 0) is maximum likelihood, log-likelihood included
    np.testing.assert_allclose(ps[1][1], ps[2][1], rtol=1e-12)
    assert all(a == b for a, b in lls)


# --- HMMs: Dirichlet rows and the emission prior ------------------------------------------------
def test_hmm_map_baum_welch():
    """MAP Baum-Welch: maximize of the statistics adds α - 1 to the expected counts (initial,
    transition) and gives the emission's MAP (`GaussianMixture`'s with the same prior); the
    log posterior (the value `jaxem.fit` traces) never decreases."""
    rng = np.random.default_rng(2)
    z = np.cumsum(rng.uniform(size=(3, 40)) < 0.1, 1) % 2
    X = rng.normal(size=(3, 40, 2)) + 3.0 * z[..., None]
    gp = jaxem.GaussianPrior(shrinkage=0.2, mean=(1.0, 1.0), dof=4.0, scale=0.5)
    A0 = ((3.0, 1.0), (1.5, 2.0))
    model = jaxem.GaussianHMM(2, "full", reg_covar=0.0,
                              prior=jaxem.HMMPrior(initial=(2.0, 1.0), transition=A0, emission=gp))
    Xs, ws = model.prepare_data(X)

    def step(p, Xs, ws):
        new, ll, status = model.em_update(p, Xs, ws)  # the fit loop's step: ll = log posterior
        return new, ll, status, model._statistics(p, Xs, ws)

    step = _jit(step)
    p = jaxem.GaussianHMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.1, 0.9]]),
                                jnp.array([[0.5, 0.5], [2.5, 2.5]]), jnp.stack([jnp.eye(2)] * 2))
    lls = []
    for _ in range(N_ITER):
        new, ll, status, st = step(p, Xs, ws)
        assert int(status) == 0
        lls.append(float(ll))
        n0 = np.asarray(st.initial_counts) + np.array([1.0, 0.0])
        nA = np.asarray(st.transition_counts) + np.asarray(A0) - 1
        np.testing.assert_allclose(new.initial_probs, n0 / n0.sum(), rtol=1e-12)
        np.testing.assert_allclose(new.transition_matrix, nA / nA.sum(1, keepdims=True),
                                   rtol=1e-12)
        # the emission: F&R's full-covariance mode from the γ-weighted statistics (about the means)
        e = st.emission
        n, d = np.asarray(e.counts), np.asarray(e.sum_x) / np.asarray(e.counts)[:, None]
        xbar = np.asarray(p.means) + d
        W = np.asarray(e.sum_xx) - n[:, None, None] * d[:, :, None] * d[:, None, :]
        c = xbar - 1.0
        M = (0.2 * n / (n + 0.2))[:, None, None] * c[:, :, None] * c[:, None, :]
        np.testing.assert_allclose(new.means, xbar - (0.2 / (n + 0.2))[:, None] * c, rtol=1e-10)
        np.testing.assert_allclose(new.covariances, (0.5 * np.eye(2) + W + M)
                                   / (4.0 + n + 2 + 2)[:, None, None], rtol=1e-10)
        p = new
    assert np.all(np.diff(lls) >= -1e-9)
    # "default" resolves from all frames
    d = jaxem.default_prior(jaxem.GaussianHMM(2, "full"), X)
    np.testing.assert_allclose(d.emission.mean, X.reshape(-1, 2).mean(0))


def test_fit_stream_with_a_prior_follows_the_reference(data):
    """`fit_stream` (blocks of the statistics, one M-step per pass) runs the same MAP iterates."""
    X, labels = data
    ct, prior, pr = _prior_case("diag")
    model = jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior)
    p0 = _start(X, labels, ct)
    res = jaxem.fit_stream(model, p0, X, tol=0.0, max_iter=N_ITER, block_size=50)
    (w, mu, cov), ref = _reference_iterates(X, p0, ct, pr, N_ITER)
    for got, want in zip(res.params, (w, mu, cov)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-11)
    tr = np.asarray(res.trace)
    np.testing.assert_allclose(tr - tr[0], (ref - ref[0]) / len(X), rtol=1e-9, atol=1e-11)


def test_fit_online_with_a_prior_and_n_samples(data):
    """One batch of all N rows, γ = 1 and ``n_samples=N``: every step of online EM is an
    iteration of `jaxem.fit`'s MAP EM, and the trace is the same log posterior per row. With
    ``n_samples=2N`` the prior counts as for 2N rows: the first step is the MAP step of the data
    taken twice (NumPy reference). Without ``n_samples`` a prior is refused."""
    X, labels = data
    ct, prior, pr = _prior_case("full")  # `test_fit_reports_the_log_posterior`'s compiled fit
    model = jaxem.GaussianMixture(3, ct, reg_covar=0.0, prior=prior)
    p0 = _start(X, labels, ct)
    ref = jaxem.fit(model, p0, X, tol=0.0, max_iter=N_ITER)
    res = jaxem.fit_online(model, p0, [X] * N_ITER, step_size=1.0, n_samples=len(X))
    assert int(res.n_iter) == N_ITER and int(res.status) == 0
    np.testing.assert_allclose(np.asarray(res.trace), np.asarray(ref.trace), rtol=1e-10)
    for got, want in zip(res.params, ref.params):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-11)
    # (log_likelihood: the running mean of the trace; with γ = 1 its last entry)
    np.testing.assert_allclose(float(res.log_likelihood), float(res.trace[-1]), rtol=1e-12)
    twice = jaxem.fit_online(model, p0, [X], step_size=1.0, n_samples=2 * len(X))
    (w, mu, cov), _ = _reference_iterates(np.concatenate([X, X]), p0, ct, pr, 1)
    for got, want in zip(twice.params, (w, mu, cov)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-11)
    assert not np.allclose(np.asarray(twice.params.covariances), np.asarray(
        jaxem.fit_online(model, p0, [X], step_size=1.0, n_samples=len(X)).params.covariances))
    with pytest.raises(ValueError, match="needs n_samples="):
        jaxem.fit_online(model, p0, [X])
    with pytest.raises(ValueError, match="n_samples must be a positive number"):
        jaxem.fit_online(model, p0, [X], n_samples=-1)


def test_bad_priors_raise():
    with pytest.raises(ValueError, match="shrinkage"):
        jaxem.GaussianPrior(shrinkage=-1.0)
    with pytest.raises(ValueError, match="weights_concentration"):
        jaxem.GaussianPrior(weights_concentration=0.5)
    with pytest.raises(ValueError, match="prior of GaussianMixture"):
        jaxem.GaussianMixture(2, prior=jaxem.BetaPrior())
    with pytest.raises(ValueError, match=">= 1"):
        jaxem.BetaPrior(a=0.5)
    with pytest.raises(ValueError, match="rate"):
        jaxem.GammaPrior(rate=-1.0)
    X = np.random.default_rng(0).normal(size=(20, 2))
    p = _start(X, np.arange(20) % 2, "full")
    st = jax.eval_shape(jaxem.GaussianMixture(2).sufficient_statistics, p, X)
    # (the checks run when the M-step is traced: eval_shape compiles nothing)
    maximize = lambda prior: jax.eval_shape(jaxem.GaussianMixture(2, prior=prior).maximize, st, p)
    with pytest.raises(ValueError, match="dof"):
        maximize(jaxem.GaussianPrior(dof=-5.0))
    with pytest.raises(ValueError, match="scale"):
        maximize(jaxem.GaussianPrior(scale=(1.0, 2.0, 3.0)))
    with pytest.raises(ValueError, match="default_prior"):
        maximize("default")
    with pytest.raises(ValueError, match="concrete"):
        jax.eval_shape(lambda X: jaxem.fit(jaxem.GaussianMixture(2, prior="default"), p, X), X)


def test_save_load_keeps_the_prior(tmp_path):
    gm = jaxem.GaussianMixture(2, "full", prior=jaxem.GaussianPrior(
        0.01, (0.0, 1.0), 4.0, ((1.0, 0.2), (0.2, 1.0)), weights_concentration=2.0))
    jaxem.save(tmp_path / "g.npz", gm, _start(np.eye(4, 2), np.arange(4) % 2, "full"))
    model = jaxem.load(tmp_path / "g.npz")[0]
    assert model == gm and hash(model) == hash(gm)
    bm = jaxem.BernoulliMixture(2, prior=jaxem.BetaPrior(a=(1.0, 2.0), b=1.5))
    jaxem.save(tmp_path / "b.npz", bm, jaxem.BernoulliMixtureParams(jnp.full(2, 0.5),
                                                                   jnp.full((2, 2), 0.5)))
    assert jaxem.load(tmp_path / "b.npz")[0] == bm


def test_generic_hmm_map_step():
    """`jaxem.HMM` with an `HMMPrior`: one generalized-EM iteration sets π and A to the Dirichlet
    posterior modes of a NumPy forward-backward's expected counts (π ∝ n⁰ + α⁰ - 1,
    A_jk ∝ n_jk + α_jk - 1), the same as `GaussianHMM`'s MAP Baum-Welch with the same prior and
    matching emissions; the value it reports (the fit's trace) is the log posterior, with the
    user's emission log prior, whose gradient the optimizer step ascends (one SGD step checked
    against NumPy)."""
    import optax
    from scipy.stats import multivariate_normal
    from _hmm_reference import forward_backward

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 12, 2))
    X[1, :5] += 3.0
    lengths, weights = np.array([12, 7, 3]), np.array([1.0, 2.0, 0.5])
    a0, a = (2.0, 1.0), ((3.0, 1.0), (1.5, 2.0))
    gauss = jaxem.GaussianHMM(2, "diag", reg_covar=0.0, prior=jaxem.HMMPrior(a0, a))
    e_prior = lambda e: -jnp.sum(e["loc"] ** 2) / 8.0  # noqa: E731  N(0, 4) on the locations
    model = jaxem.HMM(lambda e, x: -0.5 * jnp.sum((x - e["loc"]) ** 2 * jnp.exp(-e["lv"])
                                                  + e["lv"] + jnp.log(2 * jnp.pi), -1),
                      2, prior=jaxem.HMMPrior(a0, a, emission=e_prior))
    pi, A = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    loc, var = np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 2.0], [0.5, 1.0]])
    p = jaxem.HMMParams(jnp.asarray(pi), jnp.asarray(A), {"loc": jnp.asarray(loc),
                                                          "lv": jnp.asarray(np.log(var))})
    pg = jaxem.GaussianHMMParams(jnp.asarray(pi), jnp.asarray(A), jnp.asarray(loc),
                                 jnp.asarray(var))
    Xs, ws = model.prepare_data(X, weights, lengths)
    total = float(np.sum(weights * lengths))
    lr = 0.1
    gm = jaxem.GradientMStep(optax.sgd(lr), num_steps=1)

    def step(p):
        new, _, ll, status = gm.update(model, p, gm.init(model, p, Xs, ws), Xs, ws)
        return new, ll, status

    new, ll, status = _jit(step)(p)
    assert int(status) == 0
    n0, nA, ref_ll, dQ, moments = 0.0, 0.0, 0.0, np.zeros((2, 2)), [0.0, 0.0, 0.0]
    for x, w, L in zip(X, weights, lengths):
        x = x[:L]
        B = np.stack([multivariate_normal(loc[k], np.diag(var[k])).pdf(x).reshape(L)
                      for k in range(2)], 1)
        gamma, xi, lls = forward_backward(pi, A, B)
        n0, nA, ref_ll = n0 + w * gamma[0], nA + w * xi, ref_ll + w * lls
        dQ += w * np.einsum("tk,tkd->kd", gamma, (x[:, None] - loc) / var)
        r = x[:, None] - loc  # GaussianHMM's emission statistics (diag, about the means)
        moments = [m + w * v for m, v in zip(moments, (gamma.sum(0), np.einsum(
            "tk,tkd->kd", gamma, r), np.einsum("tk,tkd->kd", gamma, r * r)))]
    n0, nA = n0 + np.array(a0) - 1, nA + np.array(a) - 1
    np.testing.assert_allclose(new.initial_probs, n0 / n0.sum(), rtol=1e-10)
    np.testing.assert_allclose(new.transition_matrix, nA / nA.sum(1, keepdims=True), rtol=1e-10)
    # GaussianHMM with the same prior: the same closed form from the same counts (its E-step and
    # MAP update are checked against NumPy in test_hmm_map_baum_welch), the same log prior.
    est = jaxem.GaussianMixtureStatistics(*(jnp.asarray(v) for v in (*moments, 0.0, total)))
    st = jaxem.HMMStatistics(jnp.asarray(n0 - np.array(a0) + 1), jnp.asarray(nA - np.array(a) + 1),
                             est, jnp.zeros(()), jnp.asarray(total), jnp.zeros(()))
    new_g = gauss.maximize(st, pg)
    np.testing.assert_allclose(new.transition_matrix, new_g.transition_matrix, rtol=1e-12)
    np.testing.assert_allclose(new.initial_probs, new_g.initial_probs, rtol=1e-12)
    log_prior = (np.log(pi[0]) + 2 * np.log(A[0, 0]) + 0.5 * np.log(A[1, 0]) + np.log(A[1, 1])
                 - np.sum(loc ** 2) / 8.0)
    np.testing.assert_allclose(ll, ref_ll + log_prior, rtol=1e-12)
    np.testing.assert_allclose(jaxem.log_prior(gauss, pg), jaxem.log_prior(model, p)
                               + np.sum(loc ** 2) / 8.0, rtol=1e-12)  # no emission prior
    np.testing.assert_allclose(new.emission["loc"], loc + lr * (dQ - loc / 4.0) / total,
                               rtol=1e-10)
    with pytest.raises(ValueError, match="emission"):
        jaxem.HMM(model.log_emission, 2, prior=jaxem.HMMPrior(emission=2.0))
    with pytest.raises(ValueError, match="default"):
        jaxem.HMM(model.log_emission, 2, prior="default")
