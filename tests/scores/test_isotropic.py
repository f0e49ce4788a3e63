import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gaussjax.scores import Gaussian, Isotropic


def test_eq29_and_log_density(x64, rng):
    mean, x = rng.normal(size=4), rng.normal(size=(3, 4))
    model = Isotropic(mean)
    np.testing.assert_allclose(model.score(x, 0.5), (mean - x) / 0.25, rtol=1e-12)
    np.testing.assert_allclose(model.denoise(x, 0.5), np.broadcast_to(mean, x.shape))
    np.testing.assert_allclose(model.log_density(x, 0.5), multivariate_normal(mean, 0.25 * np.eye(4)).logpdf(x))
    gradient = jax.vmap(jax.grad(model.log_density), in_axes=(0, None))(jnp.asarray(x), 0.5)
    np.testing.assert_allclose(model.score(x, 0.5), gradient, rtol=1e-12)


def test_equals_rank_zero_gaussian(x64, rng):
    mean, x = rng.normal(size=4), rng.normal(size=(3, 4))
    sigma = np.array([0.1, 1.0, 10.0])
    gaussian = Gaussian(mean, np.zeros(0), np.zeros((4, 0)))
    np.testing.assert_allclose(Isotropic(mean).score(x, sigma), gaussian.score(x, sigma), rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="`mean` must be a 1-D array"):
        Isotropic(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="D = 3"):
        Isotropic(np.zeros(3)).score(np.zeros(4), 1.0)
