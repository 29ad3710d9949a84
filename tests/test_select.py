"""Model selection: padded components are switched off exactly; one batch equals separate fits."""

import jax
import numpy as np
import pytest

import jaxem
from jaxem._select import _starts, n_free_parameters, pad_components
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
        P = _starts(jax.random.key(0), *as_data(X), n_init=1, K_max=KS[-1], method="kmeans",
                    models=tuple(jaxem.GaussianMixture(k, ct) for k in KS))
        p0 = jax.tree_util.tree_map(lambda a: a[m], P)
        p0 = p0._replace(weights=p0.weights[:K], means=p0.means[:K],
                         covariances=p0.covariances if ct == "tied" else p0.covariances[:K])
        assert np.all(np.asarray(P.weights[m, K:]) == 0.0)
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
