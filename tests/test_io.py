"""`jaxem.save` / `jaxem.load`: parameters and model configuration round trip through one .npz."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem

MODELS = [jaxem.GaussianMixture(2, "tied", reg_covar=1e-3, chunk_size=64), jaxem.PPCA(1),
          jaxem.FactorAnalysis(2), jaxem.BernoulliMixture(2, min_prob=1e-4),
          jaxem.PoissonMixture(2)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_round_trip_gives_the_same_model_and_parameters(model, tmp_path):
    X = np.asarray(jax.random.uniform(jax.random.key(0), (40, 3)))
    params = model.init(jax.random.key(1), X)
    jaxem.save(tmp_path / "m", model, params)  # ".npz" is added
    model2, params2 = jaxem.load(tmp_path / "m.npz")
    assert model2 == model and type(params2) is type(params)
    for a, b in zip(params, params2):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(model.score_samples(params, X)),
                                  np.asarray(model2.score_samples(params2, X)))


def test_user_models_need_the_model_and_the_structure(tmp_path):
    def log_joint(p, x):
        return jax.nn.log_softmax(p["logits"]) - 0.5 * jnp.sum((x - p["loc"]) ** 2, -1)

    model = jaxem.MixtureModel(log_joint, 2)
    params = {"logits": jnp.zeros(2), "loc": jnp.array([[0.0, 1.0], [2.0, 3.0]])}
    jaxem.save(tmp_path / "u.npz", model, params)
    with pytest.raises(ValueError, match="user function"):
        jaxem.load(tmp_path / "u.npz")
    with pytest.raises(ValueError, match="like="):
        jaxem.load(tmp_path / "u.npz", model=model)
    with pytest.raises(ValueError, match="structure"):
        jaxem.load(tmp_path / "u.npz", model=model, like={"logits": 0})
    m2, p2 = jaxem.load(tmp_path / "u.npz", model=model, like=params)
    assert m2 is model
    np.testing.assert_array_equal(np.asarray(p2["loc"]), np.asarray(params["loc"]))


def test_other_npz_files_are_refused(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="jaxem.save"):
        jaxem.load(tmp_path / "x.npz")


@pytest.mark.parametrize("model", [jaxem.GaussianHMM(2, "diag", reg_covar=1e-4),
                                   jaxem.PoissonHMM(2), jaxem.CategoricalHMM(2, 3)],
                         ids=lambda m: type(m).__name__)
def test_hmm_round_trip(model, tmp_path):
    u = np.asarray(jax.random.uniform(jax.random.key(0), (2, 30, 2)))
    X = {"GaussianHMM": u, "PoissonHMM": np.floor(5 * u),
         "CategoricalHMM": np.floor(3 * u[..., 0]).astype(np.int32)}[type(model).__name__]
    params = model.init(jax.random.key(1), X)
    jaxem.save(tmp_path / "hmm", model, params)
    model2, params2 = jaxem.load(tmp_path / "hmm.npz")
    assert model2 == model and type(params2) is type(params)
    for a, b in zip(params, params2):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(model.score_samples(params, X)),
                                  np.asarray(model2.score_samples(params2, X)))
