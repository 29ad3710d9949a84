import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    return load_iris().data.astype(np.float64)


@pytest.fixture(scope="session")
def wine():
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(load_wine().data)
