"""Errors that name the mistake: swapped `jaxem.fit` arguments, int seeds where a key goes, and
parameters of another structure than the model reads."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxem


@pytest.fixture(scope="module")
def setup():
    X = np.random.default_rng(0).normal(size=(60, 2))
    model = jaxem.GaussianMixture(2, covariance_type="diag")
    return model, model.init(jax.random.key(0), X, method="random"), X


@pytest.mark.parametrize("order", ["X, model, params", "params, model, X", "model, X, params"])
def test_swapped_fit_arguments_name_the_order(setup, order):
    model, params, X = setup
    args = {"model": model, "params": params, "X": X}
    with pytest.raises(ValueError, match=re.escape("jaxem.fit takes (model, params, X)")):
        jaxem.fit(*(args[a] for a in order.split(", ")))


def test_swapped_restart_arguments(setup):
    model, _, X = setup
    with pytest.raises(ValueError, match=re.escape("fit_restarts takes (model, key, X, n_init)")):
        jaxem.fit_restarts(X, jax.random.key(0), model, n_init=2)


@pytest.mark.parametrize("seed", [3, np.int64(3)])
def test_int_seed_is_the_key_of_that_seed(setup, seed):
    model, _, X = setup
    expected = model.init(jax.random.key(3), X, method="random")
    got = model.init(seed, X, method="random")
    np.testing.assert_array_equal(got.means, expected.means)


def test_int_seed_for_every_family_with_init():
    X = np.abs(np.random.default_rng(1).normal(size=(30, 3))).round()
    pm = jaxem.PoissonMixture(2)
    for init in (jaxem.PPCA(1).init, lambda k, X: pm.init(k, X, method="random")):
        a, b = init(5, X), init(jax.random.key(5), X)
        jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    hmm = jaxem.PoissonHMM(2)
    a, b = hmm.init(5, X), hmm.init(jax.random.key(5), X)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_int_seed_under_jit(setup):
    model, _, X = setup
    got = jax.jit(lambda s: model.init(s, X, method="random").means)(3)
    # The same draws; the eager call's program (small: compiled unoptimised, jaxem._compile)
    # may round the M-step differently from the caller's jit in the last digit.
    want = model.init(jax.random.key(3), X, method="random").means
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    other = model.init(jax.random.key(4), X, method="random").means
    assert not np.allclose(other, want, rtol=1e-3)


def test_legacy_raw_key_still_works(setup):
    model, _, X = setup
    model.init(jax.random.PRNGKey(0), X, method="random")


@pytest.mark.parametrize("bad", [1.5, "0", None, True])
def test_a_bad_key_says_what_a_key_is(setup, bad):
    model, _, X = setup
    with pytest.raises(ValueError, match="jax.random key .* or an int seed"):
        model.init(bad, X)


def test_data_passed_as_key_names_the_order(setup):
    model, _, X = setup
    with pytest.raises(ValueError, match=re.escape("model.init(key, X)")):
        model.init(X, jax.random.key(0))


def test_params_of_another_family_name_both_structures(setup):
    model, _, X = setup
    ppca = jaxem.PPCA(1).init(0, X)
    with pytest.raises(ValueError, match="params do not match GaussianMixture: got PPCAParams") as e:
        jaxem.fit(model, ppca, X)
    assert "GaussianMixtureParams(.weights: (2,), .means: (2, 2), .covariances: (2, 2))" in str(e.value)


def test_params_as_a_dict_name_the_fields(setup):
    model, params, X = setup
    with pytest.raises(ValueError, match="params do not match GaussianMixture: got dict"):
        jaxem.fit(model, params._asdict(), X)


def _log_joint(p, x):
    return jax.nn.log_softmax(p.logits) + jax.scipy.stats.norm.logpdf(x[0], p.loc)


def test_mixture_model_params_mismatch_names_the_structure(setup):
    _, _, X = setup
    model = jaxem.MixtureModel(_log_joint, n_components=2)
    bad = {"logits": jnp.zeros(2), "loc": jnp.zeros(2)}  # log_joint reads attributes
    with pytest.raises(ValueError, match=r"log_joint\(params, x\) raised AttributeError.*"
                                         r"params = dict\(\['loc'\]: \(2,\), \['logits'\]") as e:
        jaxem.fit(model, bad, X, m_step=jaxem.GradientMStep(optax.adam(0.1)))
    assert isinstance(e.value.__cause__, AttributeError)  # the user's own error is kept
    with pytest.raises(ValueError, match="log_joint"):
        model.log_likelihood(bad, X)
