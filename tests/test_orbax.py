"""Parameters and `jaxem.FitResult` are pytrees: they round-trip through orbax-checkpoint as they are
(optional dependency: ``pip install -e ".[orbax]"``; the test extra installs it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem

ocp = pytest.importorskip("orbax.checkpoint", reason="orbax-checkpoint is not installed "
                          "(pip install -e '.[orbax]')")


def _equal(a, b):
    """Same pytree structure (NamedTuple types included), dtypes and values (NaN == NaN)."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _round_trip(tree, path):
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, tree)
        ckpt.wait_until_finished()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
        return ckpt.restore(path, abstract)


@pytest.fixture(scope="module")
def fitted():
    X = np.random.default_rng(0).normal(size=(120, 2))
    model = jaxem.GaussianMixture(2, "diag")
    return model, X, jaxem.fit(model, model.init(jax.random.key(1), X), X, max_iter=20)


def test_fit_result_round_trip(fitted, tmp_path):
    model, X, result = fitted
    restored = _round_trip(result, tmp_path / "fit")
    assert type(restored) is jaxem.FitResult and type(restored.params) is jaxem.GaussianMixtureParams
    _equal(restored, result)  # trace's NaN tail, int status, bool converged included
    np.testing.assert_array_equal(model.score_samples(restored.params, X),
                                  model.score_samples(result.params, X))
    # continue the fit from the restored parameters: the same as from the originals
    again = jaxem.fit(model, restored.params, X, max_iter=20)
    _equal(again, jaxem.fit(model, result.params, X, max_iter=20))


def test_params_of_other_families_round_trip(tmp_path):
    hmm = jaxem.GaussianHMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                                  jnp.zeros((2, 3)), jnp.ones((2, 3, 3)) * jnp.eye(3))
    ppca = jaxem.PPCAParams(jnp.arange(4.0), jnp.ones((4, 2), jnp.float32), jnp.float32(0.5))
    user = {"logits": jnp.zeros(3), "loc": jnp.arange(6.0).reshape(3, 2), "log_df": jnp.ones(3)}
    for i, tree in enumerate([hmm, ppca, user]):
        _equal(_round_trip(tree, tmp_path / f"p{i}"), tree)
