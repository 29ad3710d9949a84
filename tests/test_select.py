"""Model selection: padded components are switched off exactly; one batch equals separate fits."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem._compile import _cores
from jaxem._select import (_groups, _shared_starts, n_free_parameters, pad_components,
                           restart_keys)
from jaxem._validate import as_data
from helpers import assert_tree_allclose

TRUE_K = 3
KS = (1, 2, 3, 4)


def _data():
    """300 rows from 3 well-separated 2-D Gaussians with different shapes (known K = 3)."""
    rng = np.random.default_rng(11)
    centers = np.array([[0.0, 0.0], [7.0, 1.0], [2.0, 8.0]])
    scales = [np.array([[1.0, 0.4], [0.0, 0.6]]), np.eye(2) * 0.8, np.array([[0.5, 0.0], [0.3, 1.2]])]
    z = rng.integers(0, TRUE_K, 300)
    return np.stack([centers[k] + rng.normal(size=2) @ scales[k] for k in z])


X = _data()


@pytest.fixture(scope="module")
def selection():
    return jaxem.select_n_components(jax.random.key(0), X, KS, covariance_types=("full",))


def test_recovers_true_number_of_components(selection):
    assert selection.best_n_components == TRUE_K
    assert selection.bic.shape == selection.aic.shape == (1, len(KS))
    assert np.argmin(selection.bic[0]) == KS.index(TRUE_K)
    # the BIC curve really discriminates: K=1 and K=4 are clearly worse than K=3
    assert selection.bic[0, 0] - selection.bic[0, 2] > 50 and selection.bic[0, 3] > selection.bic[0, 2]
    best = selection.best_result
    assert best.params.means.shape == (TRUE_K, 2) and bool(best.converged)
    assert np.all(selection.status == 0)  # no EMPTY_COMPONENT from the padded components
    assert "BIC" in selection.table()


@pytest.mark.parametrize("ct", ["full", pytest.param("diag", marks=pytest.mark.slow)])
def test_batched_equals_fitting_each_K_separately(selection, ct):
    """Same start (restart_keys) fitted as a K-component model on its own: same BIC and AIC."""
    if ct != "full":
        selection = jaxem.select_n_components(jax.random.key(0), X, KS, covariance_types=(ct,))
    c = 0
    n = X.shape[0]
    fit_one = jax.jit(lambda p, model: jaxem.fit(model, p, X), static_argnums=1)
    for m, K in enumerate(KS):
        model = jaxem.GaussianMixture(K, ct)
        # The documented start, model.init(restart_keys(key, K, 1)[0], X), taken from the (cached)
        # padded starts of the selection and trimmed back to K components.
        # the selection's start programs (consecutive K, one per core), joined on the host
        grid = tuple((jaxem.GaussianMixture(k, ct),) for k in KS)
        parts = [_shared_starts(jax.random.key(0), *as_data(X), grid=tuple(grid[i] for i in g),
                                n_init=1, K_max=KS[-1], method="kmeans")[0]
                 for g in _groups(len(KS), _cores())]
        P = jax.tree_util.tree_map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *parts)
        p0 = jax.tree_util.tree_map(lambda a: a[m], P)
        p0 = p0._replace(weights=p0.weights[:K], means=p0.means[:K],
                         covariances=p0.covariances if ct == "tied" else p0.covariances[:K])
        assert np.all(np.asarray(P.weights[m, K:]) == 0.0)
        if K == TRUE_K:  # the shared k-means start is model.init's
            assert_tree_allclose(p0, model.init(restart_keys(jax.random.key(0), K, 1)[0], X),
                                 rtol=1e-12, atol=1e-12)
        res = fit_one(p0, model)
        ll_sum = float(res.log_likelihood) * n
        p = model.n_parameters(res.params)
        assert p == n_free_parameters(K, 2, ct) == selection.n_parameters[c, m]
        # round-off only (padded components add exact zeros; matmul blocking may differ)
        np.testing.assert_allclose(selection.bic[c, m], -2 * ll_sum + p * np.log(n), rtol=1e-10)
        np.testing.assert_allclose(selection.aic[c, m], -2 * ll_sum + 2 * p, rtol=1e-10)
        np.testing.assert_allclose(selection.bic[c, m], model.bic(res.params, X), rtol=1e-10)


@pytest.mark.parametrize("ct", ["full", "tied", "spherical"])
def test_switched_off_components_follow_the_small_model(ct):
    """A K=2 start padded to 4 components (weights exactly 0) gives the K=2 iterates exactly."""
    small, big = jaxem.GaussianMixture(2, ct), jaxem.GaussianMixture(4, ct)
    p0 = small.init(jax.random.key(3), X, method="random")
    a = jaxem.fit(small, p0, X, max_iter=15, tol=0.0)
    b = jaxem.fit(big, pad_components(p0, 4, ct), X, max_iter=15, tol=0.0)
    assert np.all(np.asarray(b.params.weights[2:]) == 0.0)
    assert int(b.status) == int(a.status)  # no EMPTY_COMPONENT for switched-off components
    np.testing.assert_allclose(b.trace, a.trace, rtol=1e-12)
    trim = lambda P: P._replace(weights=P.weights[:2], means=P.means[:2],
                                covariances=P.covariances if ct == "tied" else P.covariances[:2])
    assert_tree_allclose(trim(b.params), a.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(big.predict(b.params, X), small.predict(a.params, X))


def test_aic_criterion(selection):
    """criterion='aic' ranks by the same batch's AIC (same static config: no recompile)."""
    sel = jaxem.select_n_components(jax.random.key(0), X, [3, 1, 4, 2], criterion="aic")
    assert sel.n_components == KS and sel.criterion == "aic"
    np.testing.assert_allclose(sel.aic, selection.aic, rtol=1e-12)
    assert sel.best_n_components == KS[int(np.argmin(sel.aic[0]))]
    with pytest.raises(ValueError, match="criterion"):
        jaxem.select_n_components(jax.random.key(2), X, KS, criterion="cv")


@pytest.mark.slow
def test_several_types_and_restarts():
    sel = jaxem.select_n_components(jax.random.key(2), X, KS, ("full", "spherical", "tied"),
                                    n_init=3)
    assert sel.bic.shape == (3, len(KS)) and sel.best_n_components == TRUE_K
    assert np.all(np.isfinite(sel.bic))


# --- any family with init: PPCA (q), Bernoulli mixtures, MixtureModel hooks, HMMs; ICL; warnings ---

def _ppca_data():
    """300 rows of a 6-D PPCA with q = 2 (loadings well above the noise σ = 0.3)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 2)) @ (2.0 * rng.normal(size=(2, 6))) + 0.3 * rng.normal(size=(300, 6))


def test_ppca_chooses_the_true_number_of_factors():
    Y = _ppca_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxem.SelectionWarning)  # interior best, rising likelihood
        sel = jaxem.select_n_components(jax.random.key(4), Y, (1, 2, 3), model=jaxem.PPCA(1),
                                        tol=1e-6, max_iter=2000, accelerate="squarem")
    assert sel.best_n_components == 2 and sel.covariance_types == (None,)
    assert sel.best_model == jaxem.PPCA(2) and sel.best_result.params.W.shape == (6, 2)
    assert np.all(np.diff(sel.log_likelihood[0]) > 0) and np.all(sel.status == 0)
    # BIC as the model computes it, with p = D + Dq - q(q-1)/2 + 1 (rotation removed)
    np.testing.assert_array_equal(sel.n_parameters[0], [6 + 6 * q - q * (q - 1) // 2 + 1
                                                        for q in (1, 2, 3)])
    np.testing.assert_allclose(sel.bic[0, 1], jaxem.PPCA(2).bic(sel.best_result.params, Y),
                               rtol=1e-10)
    # q = 1 is far worse than q = 2 (the BIC curve discriminates)
    assert sel.bic[0, 0] - sel.bic[0, 1] > 1000
    # every q ran in one program, W padded with zero columns: the same fit as PPCA(2) on its own
    p0 = jaxem.PPCA(2).init(restart_keys(jax.random.key(4), 2, 1)[0], Y)
    alone = jaxem.fit(jaxem.PPCA(2), p0, Y, tol=1e-6, max_iter=2000, accelerate="squarem")
    # (plain EM iterates agree to ~1e-14; SQUAREM's extrapolation may amplify the padded GEMMs'
    # different rounding, so the two stop within tol of each other, not bit for bit)
    np.testing.assert_allclose(sel.log_likelihood[0, 1], alone.log_likelihood, rtol=1e-7)
    assert_tree_allclose(sel.best_result.params, alone.params, rtol=1e-4, atol=1e-5)
    # ICL's entropy without the padded dimensions: PPCA(2)'s own posterior entropy
    h = jaxem.PPCA(2).posterior_entropy(jaxem.PPCA(2).e_step(alone.params, Y)[0])
    np.testing.assert_allclose(sel.entropy[0, 1], h, rtol=1e-5)


P_TRUE = np.array([[0.9] * 8, [0.1] * 8, [0.9] * 4 + [0.1] * 4])


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(1)
    z = rng.integers(0, 3, 400)
    return (rng.random((400, 8)) < P_TRUE[z]).astype(np.float64)


def _numpy_icl(params, B):
    """BIC and ICL of a Bernoulli mixture in NumPy: responsibilities r, H = -Σ r log r."""
    pi, p = np.asarray(params.weights), np.asarray(params.probs)
    lj = np.log(pi) + B @ np.log(p).T + (1 - B) @ np.log1p(-p).T  # (N, K)
    lse = np.logaddexp.reduce(lj, axis=1)
    r = np.exp(lj - lse[:, None])
    H = -np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0))
    K, D = p.shape
    bic = -2 * lse.sum() + (K * D + K - 1) * np.log(len(B))
    return bic, bic + 2 * H, H


def test_bernoulli_chooses_K_and_icl_matches_numpy(binary):
    sel = jaxem.select_n_components(jax.random.key(5), binary, (2, 3, 4),
                                    model=jaxem.BernoulliMixture(1), criterion="icl")
    assert sel.best_n_components == 3 and sel.criterion == "icl"
    bic, icl, H = _numpy_icl(sel.best_result.params, binary)
    np.testing.assert_allclose(sel.bic[0, 1], bic, rtol=1e-10)
    np.testing.assert_allclose(sel.entropy[0, 1], H, rtol=1e-8)
    np.testing.assert_allclose(sel.icl[0, 1], icl, rtol=1e-10)
    assert sel.entropy[0, 1] > 0 and sel.bic[0, 0] - sel.bic[0, 1] > 100
    np.testing.assert_allclose(sel.icl, sel.bic + 2 * sel.entropy, rtol=1e-12)
    assert "ICL" in sel.table()


def test_edge_of_the_range_warns(binary):
    """Best K = the largest candidate: the criterion may keep falling beyond it."""
    with pytest.warns(jaxem.SelectionWarning, match="largest candidate.*widen"):
        sel = jaxem.select_n_components(jax.random.key(5), binary, (2, 3),
                                        model=jaxem.BernoulliMixture(1), criterion="icl")
    assert sel.best_n_components == 3
    with pytest.warns(jaxem.SelectionWarning, match="smallest candidate.*downward"):
        jaxem.select_n_components(jax.random.key(5), binary, (3, 4),
                                  model=jaxem.BernoulliMixture(1), criterion="icl")


def test_falling_likelihood_warns():
    from jaxem._select import _warn

    ll = np.array([[-3.0, -2.0, -2.5, -2.4]])  # K=2 -> 3 falls by 0.5 > tol
    with pytest.warns(jaxem.SelectionWarning, match=r"falls.*K=2 -> 3.*n_init"):
        _warn((1, 2, 3, 4), (None,), ll, 1, 1e-3, "bic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn((1, 2, 3, 4), ("full",), np.array([[-3.0, -2.0, -2.0005, -1.9]]), 1, 1e-3, "bic")


def _log_joint(p, x):  # 1-D Gaussian mixture in unconstrained coordinates
    return jax.nn.log_softmax(p["logits"]) + jax.scipy.stats.norm.logpdf(
        x[0], p["loc"], jnp.exp(p["log_scale"]))


def _user_mixture(K, bad=False):
    """A MixtureModel with init / sample hooks; ``bad``: K > 1 starts far from the data."""
    return _cached_user_mixture(K, bad and K > 1)


@functools.lru_cache(maxsize=None)  # equal models across calls share compiled programs
def _cached_user_mixture(K, bad):
    def init(key, X):
        loc = jnp.quantile(X[:, 0], (jnp.arange(K) + 0.5) / K) + 0.01 * jax.random.normal(key, (K,))
        if bad:  # every component far out of the optimizer's reach in 50 x 10 steps of 0.1
            loc = jnp.full((K,), 1000.0) + jnp.arange(K)
        return {"logits": jnp.zeros(K), "loc": loc, "log_scale": jnp.zeros(K)}

    def sample(key, p, n):
        kz, kx = jax.random.split(key)
        z = jax.random.categorical(kz, p["logits"], shape=(n,))
        return (p["loc"][z] + jnp.exp(p["log_scale"][z]) * jax.random.normal(kx, (n,)))[:, None]

    return jaxem.MixtureModel(_log_joint, K, n_features=1, init=init, sample=sample)


TWO_GROUPS = np.concatenate([np.random.default_rng(2).normal(-4, 1, (150, 1)),
                             np.random.default_rng(3).normal(4, 1, (150, 1))])


def test_mixture_model_hooks_init_sample_and_selection():
    import optax

    model = _user_mixture(2)
    p0 = model.init(jax.random.key(0), TWO_GROUPS)
    np.testing.assert_allclose(np.sort(np.asarray(p0["loc"])), [-4, 4], atol=0.7)
    x = model.sample(jax.random.key(1), p0, 50)
    assert x.shape == (50, 1) and model == _user_mixture(2) and hash(model) == hash(_user_mixture(2))
    m_step = jaxem.GradientMStep(optax.adam(0.1), num_steps=10)
    with warnings.catch_warnings():  # K=3 may stop short of K=2's likelihood in 50 iterations
        warnings.simplefilter("ignore", jaxem.SelectionWarning)
        sel = jaxem.select_n_components(jax.random.key(2), TWO_GROUPS, (1, 2, 3),
                                        model=_user_mixture, m_step=m_step, max_iter=50)
    assert sel.best_n_components == 2 and sel.best_model == _user_mixture(2)
    assert sel.n_parameters[0].tolist() == [3, 6, 9]  # every scalar of params (an upper bound)
    np.testing.assert_allclose(np.sort(np.asarray(sel.best_result.params["loc"])), [-4, 4], atol=0.3)
    # the falling-likelihood warning, end to end: K = 2 starts out of reach (K = 1 is compiled)
    with pytest.warns(jaxem.SelectionWarning, match="falls.*K=1 -> 2"):
        jaxem.select_n_components(jax.random.key(2), TWO_GROUPS, (1, 2),
                                  model=functools.partial(_user_mixture, bad=True),
                                  m_step=m_step, max_iter=50)


def test_mixture_model_hook_errors():
    bare = jaxem.MixtureModel(_log_joint, 2)
    with pytest.raises(NotImplementedError, match="init hook"):
        bare.init(jax.random.key(0), TWO_GROUPS)
    with pytest.raises(NotImplementedError, match="sample hook"):
        bare.sample(jax.random.key(0), {}, 3)
    with pytest.raises(ValueError, match="init must be None or a function"):
        jaxem.MixtureModel(_log_joint, 2, init=3)
    seen = {}
    three = jaxem.MixtureModel(_log_joint, 2, init=lambda k, X, w: seen.setdefault("w", w))
    three.init(jax.random.key(0), TWO_GROUPS, np.arange(300.0))
    np.testing.assert_array_equal(seen["w"], np.arange(300.0))  # a 3-argument hook sees weights
    with pytest.raises(ValueError, match="function K -> MixtureModel"):
        jaxem.select_n_components(jax.random.key(0), TWO_GROUPS, (1, 2), model=_user_mixture(2))
    with pytest.raises(ValueError, match="no covariance_type"):
        jaxem.select_n_components(jax.random.key(0), TWO_GROUPS, (1, 2), ("full",),
                                  model=jaxem.PPCA(1))
    with pytest.raises(ValueError, match="criterion"):
        jaxem.select_n_components(jax.random.key(0), TWO_GROUPS, (1, 2), criterion="dic")


@pytest.mark.slow
def test_hmm_number_of_states():
    model = jaxem.GaussianHMM(3, "diag")
    truth = jaxem.GaussianHMMParams(
        jnp.array([0.6, 0.3, 0.1]),
        jnp.array([[0.95, 0.04, 0.01], [0.05, 0.9, 0.05], [0.02, 0.08, 0.9]]),
        jnp.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]]), jnp.ones((3, 2)))
    X = model.sample(jax.random.key(0), truth, 200, 3)
    lengths = jnp.array([200, 150, 180])
    sel = jaxem.select_n_components(jax.random.key(5), X, (2, 3, 4), model=jaxem.GaussianHMM(1, "diag"),
                                    lengths=lengths, tol=1e-6)
    assert sel.best_n_components == 3 and sel.best_model == model
    np.testing.assert_allclose(sel.bic[0, 1], model.bic(sel.best_result.params, X, lengths),
                               rtol=1e-10)
    # the entropy of the state-sequence posterior: >= 0 and <= Σ_t H[p(z_t | x)] (chain rule)
    gamma = np.asarray(model.predict_proba(sel.best_result.params, X, lengths))
    marg = -np.sum(np.where(gamma > 0, gamma * np.log(np.where(gamma > 0, gamma, 1)), 0))
    assert 0 <= sel.entropy[0, 1] <= marg + 1e-8
