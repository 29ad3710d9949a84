"""Missing values (missing="marginalize"): EM on the observed-data likelihood (Ghahramani & Jordan
1994) against a NumPy implementation of the paper's equations, iterate for iterate; EM invariants;
imputation against the closed-form conditional mean; checks of bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxem
from jaxem._status import FATAL
from helpers import assert_tree_allclose, blobs

N, D, K = 48, 3, 2
MISS = "marginalize"


def _data(seed=0, frac=0.25):
    X = blobs(seed=seed, n=N, d=D, k=K, spread=3.0)[0]
    rng = np.random.default_rng(seed + 1)
    Xm = X.copy()
    Xm[rng.random(X.shape) < frac] = np.nan
    Xm[5] = np.nan  # a row with nothing observed
    Xm[7, :2] = np.nan  # one observed entry
    return X, Xm


@pytest.fixture(scope="module")
def data():
    return _data()


_JIT = {}


def _jit(f):
    return jax.jit(f, compiler_options=dict(jaxem.COMPILER_OPTIONS))


def _em_step(model):
    """One EM iteration through the statistics protocol, jitted once per model."""
    if model not in _JIT:
        def step(p, X):
            st = model.sufficient_statistics(p, X)
            return model.maximize(st, p), st.log_likelihood
        _JIT[model] = _jit(step)
    return _JIT[model]


# --- NumPy references, written from the paper's equations, one row at a time -------------------
def _full_cov(ct, cov, k):
    cov = np.asarray(cov)
    return {"full": lambda: cov[k], "tied": lambda: cov, "diag": lambda: np.diag(cov[k]),
            "spherical": lambda: cov[k] * np.eye(D)}[ct]()


def ref_gmm_step(ct, params, X, reg):
    """One EM step of a Gaussian mixture with missing entries: E-step by the observed marginals and
    the conditional Gaussians x_m | x_o; M-step of the expected complete-data statistics."""
    pi, mu = np.asarray(params.weights), np.asarray(params.means)
    S = [_full_cov(ct, params.covariances, k) for k in range(K)]
    R, ll = np.zeros((N, K)), 0.0
    xh, Ch = np.zeros((N, K, D)), np.zeros((N, K, D, D))
    for n in range(N):
        o = ~np.isnan(X[n])
        m = ~o
        if not o.any():
            continue  # no information: weight 0
        lp = np.zeros(K)
        for k in range(K):
            Soo, Smo = S[k][np.ix_(o, o)], S[k][np.ix_(m, o)]
            lp[k] = np.log(pi[k]) + multivariate_normal.logpdf(X[n, o], mu[k, o], Soo)
            xh[n, k] = X[n]
            xh[n, k, m] = mu[k, m] + Smo @ np.linalg.solve(Soo, X[n, o] - mu[k, o])
            Ch[n, k][np.ix_(m, m)] = S[k][np.ix_(m, m)] - Smo @ np.linalg.solve(Soo, Smo.T)
        ll += logsumexp(lp)
        R[n] = np.exp(lp - logsumexp(lp))
    Nk = R.sum(0)
    mu_new = np.einsum("nk,nkd->kd", R, xh) / Nk[:, None]
    dev = xh - mu_new[None]
    scat = np.einsum("nk,nkd,nke->kde", R, dev, dev) + np.einsum("nk,nkde->kde", R, Ch)
    full = scat / Nk[:, None, None] + reg * np.eye(D)
    cov = {"full": full, "diag": np.diagonal(full, 0, 1, 2),
           "spherical": np.diagonal(full, 0, 1, 2).mean(1),
           "tied": scat.sum(0) / Nk.sum() + reg * np.eye(D)}[ct]
    return (Nk / Nk.sum(), mu_new, cov), ll


def ref_factor_step(isotropic, params, X):
    """One EM step of PPCA / factor analysis with missing entries: q(z | x_o), E[x_m | z] = W_m z
    + μ_m, and the regression of x on z̃ = [z; 1] with expected statistics."""
    mu, W = np.asarray(params.mean), np.asarray(params.W)
    psi = np.broadcast_to(np.asarray(params.noise_variance), (D,))
    q = W.shape[1]
    Exz, Ezz, Exx, n_rows, ll = np.zeros((D, q + 1)), np.zeros((q + 1, q + 1)), np.zeros(D), 0, 0.0
    for n in range(N):
        o = ~np.isnan(X[n])
        m = ~o
        if not o.any():
            continue
        n_rows += 1
        C = W @ W.T + np.diag(psi)
        ll += multivariate_normal.logpdf(X[n, o], mu[o], C[np.ix_(o, o)])
        Wo = W[o]
        G = np.eye(q) + Wo.T @ (Wo / psi[o, None])
        Sz = np.linalg.inv(G)
        mz = Sz @ Wo.T @ ((X[n, o] - mu[o]) / psi[o])
        zz = Sz + np.outer(mz, mz)
        Ezz += np.block([[zz, mz[:, None]], [mz[None], np.ones((1, 1))]])
        for d in range(D):
            if o[d]:
                Exz[d] += X[n, d] * np.append(mz, 1.0)
                Exx[d] += X[n, d] ** 2
            else:
                Exz[d] += np.append(W[d] @ zz + mu[d] * mz, W[d] @ mz + mu[d])
                Exx[d] += W[d] @ zz @ W[d] + 2 * mu[d] * (W[d] @ mz) + mu[d] ** 2 + psi[d]
    coef = Exz @ np.linalg.inv(Ezz)
    psi_new = (Exx - np.sum(coef * Exz, 1)) / n_rows
    return (coef[:, q], coef[:, :q], psi_new.mean() if isotropic else psi_new), ll


# --- iterate for iterate ------------------------------------------------------------------------
@pytest.mark.parametrize("ct", ["full", "diag", "spherical", "tied"])
def test_gmm_iterates_match_numpy_reference(ct, data):
    _, Xm = data
    model = jaxem.GaussianMixture(K, ct, reg_covar=1e-4, missing=MISS)
    p = model.init(jax.random.key(0), Xm)
    for _ in range(3):
        (w, mu, cov), ll = ref_gmm_step(ct, p, Xm, 1e-4)
        p, ll_jax = _em_step(model)(p, Xm)
        np.testing.assert_allclose(float(ll_jax), ll, rtol=1e-10)
        assert_tree_allclose(p, (w, mu, cov), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("family", [jaxem.PPCA, jaxem.FactorAnalysis])
def test_latent_factor_iterates_match_numpy_reference(family, data):
    _, Xm = data
    model = family(1, missing=MISS)
    p = model.init(jax.random.key(0), Xm)
    for _ in range(3):
        ref, ll = ref_factor_step(family is jaxem.PPCA, p, Xm)
        p, ll_jax = _em_step(model)(p, Xm)
        np.testing.assert_allclose(float(ll_jax), ll, rtol=1e-10)
        assert_tree_allclose(p, ref, rtol=1e-8, atol=1e-10)


# One model (and problem shape) shared by the fits below, so that they share compiled programs.
FULL = jaxem.GaussianMixture(K, "full", reg_covar=1e-4, missing=MISS)
FA = jaxem.FactorAnalysis(1, missing=MISS)
ITER = 8


def test_fit_trace_is_the_reference_observed_log_likelihood(data):
    """`jaxem.fit` runs the same map: its trace is the reference's observed-data log-likelihood
    (mean over rows with something observed), and it never decreases (EM)."""
    _, Xm = data
    p0 = FULL.init(jax.random.key(0), Xm)
    res = jaxem.fit(FULL, p0, Xm, max_iter=ITER, tol=0)
    assert int(res.status) & ~int(jaxem.Status.MAX_ITER_REACHED) == 0
    n_obs = np.sum(np.any(~np.isnan(Xm), 1))
    p = p0
    for i in range(3):
        ref, ll = ref_gmm_step("full", p, Xm, 1e-4)
        np.testing.assert_allclose(float(res.trace[i]), ll / n_obs, rtol=1e-10)
        p = jaxem.GaussianMixtureParams(*ref)
    tr = np.asarray(res.trace)
    assert np.all(np.diff(tr) >= -1e-12), np.diff(tr).min()
    ll_end = ref_gmm_step("full", res.params, Xm, 1e-4)[1]
    np.testing.assert_allclose(float(res.log_likelihood), ll_end / n_obs, rtol=1e-10)


def test_factor_analysis_fit_is_monotone(data):
    _, Xm = data
    res = jaxem.fit(FA, FA.init(jax.random.key(0), Xm), Xm, max_iter=ITER, tol=0)
    tr = np.asarray(res.trace)
    assert np.all(np.diff(tr) >= -1e-12), np.diff(tr).min()
    assert tr[-1] > tr[0] + 0.1  # it moved


# --- invariants -----------------------------------------------------------------------------------
@pytest.mark.parametrize("marg", [FULL, FA], ids=["gmm_full", "fa"])
def test_complete_data_marginalize_equals_plain_fit(marg, data):
    import dataclasses

    X, _ = data
    plain = dataclasses.replace(marg, missing="error")
    p0 = marg.init(jax.random.key(0), X)
    a = jaxem.fit(plain, p0, X, max_iter=ITER, tol=0)
    b = jaxem.fit(marg, p0, X, max_iter=ITER, tol=0)
    assert_tree_allclose(a.params, b.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)


@pytest.mark.parametrize("marg", [FULL, FA], ids=["gmm_full", "fa"])
def test_rows_with_nothing_observed_change_nothing(marg, data):
    """A row with no observed entry is the same as no row: as a padding row of weight 0."""
    _, Xm = data
    assert np.isnan(Xm[5]).all()
    p0 = marg.init(jax.random.key(0), Xm)
    a = jaxem.fit(marg, p0, Xm, max_iter=ITER, tol=0)
    Xz, w = Xm.copy(), np.ones(N)
    Xz[5], w[5] = 1e3, 0.0  # padding: any finite value, weight 0
    b = jaxem.fit(marg, p0, Xz, weights=w, max_iter=ITER, tol=0)
    assert_tree_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-12)


def test_statistics_additive_and_vmappable(data):
    _, Xm = data
    p = FULL.init(jax.random.key(0), Xm)
    ss = _jit(lambda X: FULL.sufficient_statistics(p, X))
    parts = jax.tree_util.tree_map(jnp.add, ss(Xm[:N // 2]), ss(Xm[N // 2:]))
    whole = _em_step(FULL)(p, Xm)
    np.testing.assert_allclose(whole[1], parts.log_likelihood, rtol=1e-12)
    assert_tree_allclose(whole[0], _jit(FULL.maximize)(parts, p), rtol=1e-10, atol=1e-12)
    halves = jax.vmap(ss)(Xm.reshape(2, N // 2, D))
    assert_tree_allclose(parts, jax.tree_util.tree_map(lambda a: a.sum(0), halves), rtol=1e-10,
                         atol=1e-12)


def test_fit_stream_with_missing_equals_fit(data):
    _, Xm = data
    p0 = FULL.init(jax.random.key(0), Xm)
    a = jaxem.fit(FULL, p0, Xm, max_iter=ITER, tol=0)
    b = jaxem.fit_stream(FULL, p0, Xm, max_iter=ITER, tol=0, block_size=20)
    assert_tree_allclose(a.params, b.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)


def test_float32_statistics_far_from_origin(data):
    """Moments about the means: float32 statistics of data far from the origin give the float64
    M-step to float32 precision."""
    _, Xm = data
    Xf = Xm + 1e4
    p64 = FULL.init(jax.random.key(0), Xf)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), p64)
    step = _em_step(FULL)
    new64, new32 = step(p64, Xf)[0], step(p32, Xf.astype(np.float32))[0]
    np.testing.assert_allclose(new32.covariances, new64.covariances, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(new32.means - 1e4, new64.means - 1e4, atol=5e-3)


# --- imputation -----------------------------------------------------------------------------------
def _conditional_mean(mu, S, X):
    out = X.copy()
    for n in range(X.shape[0]):
        o = ~np.isnan(X[n])
        m = ~o
        if o.any():
            out[n, m] = mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)],
                                                                  X[n, o] - mu[o])
        else:
            out[n] = mu
    return out


def _random_params(seed=3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, D, D))
    cov = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(D)
    return jaxem.GaussianMixtureParams(np.array([0.3, 0.7]), rng.normal(size=(K, D)) * 2, cov)


def test_impute_one_gaussian_is_the_conditional_mean(data):
    """Two identical components are one Gaussian: imputation is its closed-form conditional mean
    μ_m + Σ_mo Σ_oo⁻¹ (x_o - μ_o); likewise for factor analysis with C = WWᵀ + Ψ."""
    _, Xm = data
    p = _random_params()
    one = jaxem.GaussianMixtureParams(p.weights, np.stack([p.means[0]] * K),
                                      np.stack([p.covariances[0]] * K))
    np.testing.assert_allclose(FULL.impute(one, Xm),
                               _conditional_mean(p.means[0], p.covariances[0], Xm), rtol=1e-10)
    rng = np.random.default_rng(4)
    pf = jaxem.FactorAnalysisParams(rng.normal(size=D), rng.normal(size=(D, 1)),
                                    rng.uniform(0.2, 1.0, D))
    C = pf.W @ pf.W.T + np.diag(pf.noise_variance)
    np.testing.assert_allclose(FA.impute(pf, Xm), _conditional_mean(pf.mean, C, Xm), rtol=1e-10)


def test_impute_mixture_weights_components_by_observed_responsibilities(data):
    _, Xm = data
    p = _random_params()
    Xi = np.asarray(FULL.impute(p, Xm))
    seen = ~np.isnan(Xm)
    lj = np.stack([np.log(p.weights[k]) + np.array(
        [multivariate_normal.logpdf(x[o], p.means[k][o], p.covariances[k][np.ix_(o, o)])
         if o.any() else 0.0 for x, o in zip(Xm, seen)]) for k in range(K)], 1)
    r = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    ref = sum(r[:, k:k + 1] * _conditional_mean(p.means[k], p.covariances[k], Xm)
              for k in range(K))
    np.testing.assert_allclose(Xi, ref, rtol=1e-10)
    assert np.array_equal(Xi[seen], Xm[seen])


# --- bad input -----------------------------------------------------------------------------------
def test_nan_without_marginalize_says_how_to_fix_and_inf_always_fails(data):
    import dataclasses

    X, Xm = data
    plain = dataclasses.replace(FULL, missing="error")
    p = FULL.init(jax.random.key(0), X)
    with pytest.raises(ValueError, match='missing="marginalize"'):
        jaxem.fit(plain, p, Xm)
    with pytest.raises(ValueError, match='missing="marginalize"'):
        plain.init(jax.random.key(0), Xm)
    Xi = Xm.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        jaxem.fit(FULL, p, Xi)
    with pytest.raises(ValueError, match="inf"):
        FULL.impute(p, Xi)
    with pytest.raises(ValueError, match="missing"):
        jaxem.GaussianMixture(K, missing="drop")
    # Under jit: a status flag.
    status = lambda m: _jit(lambda X: jaxem.fit(m, p, X, max_iter=1, tol=0).status)
    bad = int(jaxem.Status.INVALID_INPUT)
    assert int(status(plain)(Xm)) & bad
    fit_marg = status(FULL)
    assert int(fit_marg(Xi)) & bad and not int(fit_marg(Xm)) & bad


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_takes_missing(data):
    """`jaxem.sklearn.GaussianMixture(missing="marginalize")` runs the same EM and imputes."""
    from jaxem.sklearn import GaussianMixture

    _, Xm = data
    p0 = FULL.init(jax.random.key(0), Xm)
    est = GaussianMixture(K, reg_covar=1e-4, tol=0.0, max_iter=ITER, missing=MISS,
                          weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
                          precisions_init=np.linalg.inv(p0.covariances)).fit(Xm)
    res = jaxem.fit(FULL, p0, Xm, max_iter=ITER, tol=0)
    np.testing.assert_allclose(est.means_, res.params.means, rtol=1e-8)
    np.testing.assert_allclose(est.covariances_, res.params.covariances, rtol=1e-8)
    np.testing.assert_allclose(est.impute(Xm), FULL.impute(res.params, Xm), rtol=1e-8)
    assert np.isfinite(est.score_samples(Xm)).all()
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(K).fit(Xm)


_SHARDED = r"""
import jax, numpy as np, jaxem
jax.config.update("jax_enable_x64", True)
from jax.sharding import NamedSharding, PartitionSpec as P
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 3)); X[rng.random(X.shape) < 0.2] = np.nan; X[3] = np.nan
Xs = jax.device_put(X, NamedSharding(jax.make_mesh((2,), ("rows",)), P("rows", None)))
m = jaxem.GaussianMixture(2, "full", missing="marginalize")
p, ps = m.init(jax.random.key(0), X), m.init(jax.random.key(0), Xs)
a, b = jaxem.fit(m, p, X, max_iter=4, tol=0), jaxem.fit(m, p, Xs, max_iter=4, tol=0)
diff = lambda s, t: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                        for x, y in zip(jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(t)))
print(diff(p, ps), diff((a.params, a.trace), (b.params, b.trace)), int(b.status))
"""


@pytest.mark.slow  # a 2-device subprocess (~8 s); test_shard covers the sharded statistics route
def test_sharded_fit_with_missing_equals_unsharded():
    """X with NaN split by rows over 2 simulated devices: the same init and fit (statistics
    all-reduced; the mean imputation of `init` keeps the rows where they are)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(jaxem.__file__))))
    run = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    d_init, d_fit, status = run.stdout.split()
    assert float(d_init) < 1e-10 and float(d_fit) < 1e-10 and status == "0", run.stdout


def test_posterior_based_functions_refuse_nan(data):
    """m_step / FA's e_step take complete rows: NaN is a clear error, not NaN output. The
    mixture's e_step and q_function score rows by their observed entries."""
    _, Xm = data
    p = _random_params()
    resp, ll = _jit(FULL.e_step)(p, Xm)
    assert np.isfinite(resp).all() and np.isfinite(ll)
    with pytest.raises(ValueError, match="complete rows"):
        FULL.m_step(resp, Xm)
    assert np.isfinite(FULL.q_function(p, resp, Xm))  # the observed entries' Q (see below)
    with pytest.raises(ValueError, match="complete rows"):
        FA.e_step(jaxem.FactorAnalysisParams(np.zeros(D), np.ones((D, 1)), np.ones(D)), Xm)


def test_gradient_m_step_fits_missing_values(data):
    """With NaN entries a mixture's q_function is Σ w r log p(x_o, k): at the closed-form fit's
    fixed point its gradient is the observed-data log-likelihood's (Fisher's identity; both ~0 in
    the means), so GradientMStep is generalized EM on the same likelihood: its trace rises and
    its log-likelihood is the reference's (NumPy marginals). PPCA/FA (whose Q takes the factors'
    posterior of complete rows) refuse NaN with a GradientMStep, naming m_step=None."""
    import optax

    X, Xm = data
    p = _random_params()
    model = FULL
    ref = _jit(lambda p, x: jaxem.fit(model, p, x, max_iter=300, tol=1e-12))(p, Xm)
    post, _ = _jit(model.e_step)(ref.params, Xm)
    gq = _jit(jax.grad(lambda q: model.q_function(q, post, Xm)))(ref.params)
    gl = _jit(jax.grad(lambda q: model.log_likelihood(q, Xm)))(ref.params)
    # (the weights' gradients differ along (1, ..., 1), normal to the simplex: the row with
    # nothing observed adds log Σ_k π_k to the log-likelihood and has no weight in Q)
    assert_tree_allclose((gq.means, gq.covariances, gq.weights - jnp.mean(gq.weights)),
                         (gl.means, gl.covariances, gl.weights - jnp.mean(gl.weights)),
                         rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(gq.means))) < 1e-3 * N
    gm = jaxem.GradientMStep(optax.adam(3e-3), num_steps=3)
    r = _jit(lambda p, x: jaxem.fit(model, p, x, m_step=gm, max_iter=40, tol=0.0))(p, Xm)
    assert int(r.status) & int(FATAL) == 0
    t = np.asarray(r.trace)[:int(r.n_iter)]
    assert int(r.n_iter) == 40 and np.all(np.diff(t) >= -1e-9 * np.abs(t).max()) and t[-1] > t[0]
    n_obs = np.sum(np.any(~np.isnan(Xm), 1))
    np.testing.assert_allclose(float(r.log_likelihood),
                               ref_gmm_step("full", r.params, Xm, 1e-4)[1] / n_obs, rtol=1e-9)
    with pytest.raises(ValueError, match="m_step=None"):
        jaxem.fit(FA, FA.init(0, X), Xm, m_step=gm, max_iter=3)


def test_sweep_gives_the_conditional_blocks():
    """`jaxem._missing.sweep` on the observed pivots: -Σ_oo⁻¹, Σ_mo Σ_oo⁻¹, the Schur complement
    and log|Σ_oo|, in Σ's index order; every mask of a 4 x 4 covariance (none and all observed
    included)."""
    from jaxem._missing import sweep

    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    S = A @ A.T + 0.3 * np.eye(4)
    masks = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(np.float64)
    out, log_det = _jit(sweep)(S, masks)
    for mask, got, ld in zip(masks, np.asarray(out), np.asarray(log_det)):
        o, m = mask > 0, mask == 0
        inv = np.linalg.inv(S[np.ix_(o, o)]) if o.any() else np.zeros((0, 0))
        np.testing.assert_allclose(got[np.ix_(o, o)], -inv, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[np.ix_(m, o)], S[np.ix_(m, o)] @ inv, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(got[np.ix_(m, m)], S[np.ix_(m, m)]
                                   - S[np.ix_(m, o)] @ inv @ S[np.ix_(o, m)], rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(ld, np.linalg.slogdet(S[np.ix_(o, o)])[1] if o.any() else 0.0,
                                   rtol=1e-10, atol=1e-12)
