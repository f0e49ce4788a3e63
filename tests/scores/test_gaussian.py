import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_eigenbasis
from scipy.stats import multivariate_normal

from gaussjax.scores import Gaussian


@pytest.mark.parametrize("rank", [0, 2, 7])
def test_score_and_denoiser_match_dense_formula(x64, rng, rank):
    dim = 7
    eigvals, eigvecs = random_eigenbasis(rng, dim, rank)
    mean = rng.normal(size=dim)
    model = Gaussian(mean, eigvals, eigvecs)
    x = rng.normal(size=(3, 4, dim)) * 2
    sigma = rng.uniform(0.2, 2.0, size=(3, 4))
    cov = (eigvecs * eigvals) @ eigvecs.T
    np.testing.assert_allclose(model.covariance, cov, rtol=1e-12, atol=1e-14)
    for i in range(3):
        for j in range(4):
            noised = cov + sigma[i, j] ** 2 * np.eye(dim)
            expected_score = np.linalg.solve(noised, mean - x[i, j])  # Eq. 5
            expected_denoiser = mean + cov @ np.linalg.solve(noised, x[i, j] - mean)  # Eq. 6
            np.testing.assert_allclose(model.score(x, sigma)[i, j], expected_score, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(model.denoise(x, sigma)[i, j], expected_denoiser, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank", [0, 3, 5])
def test_log_density_matches_scipy_and_score_is_its_gradient(x64, rng, rank):
    dim = 5
    eigvals, eigvecs = random_eigenbasis(rng, dim, rank)
    mean = rng.normal(size=dim)
    model = Gaussian(mean, eigvals, eigvecs)
    x, sigma = rng.normal(size=(6, dim)), 0.7
    reference = multivariate_normal(mean, (eigvecs * eigvals) @ eigvecs.T + sigma**2 * np.eye(dim))
    np.testing.assert_allclose(model.log_density(x, sigma), reference.logpdf(x), rtol=1e-10)
    gradient = jax.vmap(jax.grad(model.log_density), in_axes=(0, None))(jnp.asarray(x), sigma)
    np.testing.assert_allclose(model.score(x, sigma), gradient, rtol=1e-9, atol=1e-12)


def test_float32_default_and_dtype_preserved(rng):
    eigvals, eigvecs = random_eigenbasis(rng, 4, 2)
    model = Gaussian(np.zeros(4), eigvals, eigvecs)
    assert model.mean.dtype == jnp.float32
    assert model.score(np.ones((2, 4), np.float32), 0.5).dtype == jnp.float32


def test_full_rank_small_sigma_is_accurate_in_float32(rng):
    eigvals, eigvecs = random_eigenbasis(rng, 16, 16)
    mean = rng.normal(size=16)
    x = rng.normal(size=(8, 16))
    sigma = 1e-3
    expected = np.linalg.solve((eigvecs * eigvals) @ eigvecs.T + sigma**2 * np.eye(16), (mean - x).T).T
    got = Gaussian(mean, eigvals, eigvecs).score(x.astype(np.float32), sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_jit_vmap_grad_with_model_as_argument(rng):
    eigvals, eigvecs = random_eigenbasis(rng, 3, 2)
    model = Gaussian(rng.normal(size=3), eigvals, eigvecs)
    x = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    jitted = jax.jit(lambda m, x, s: m.score(x, s))(model, x, 0.3)
    np.testing.assert_allclose(jitted, model.score(x, 0.3), rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(lambda xi: model.denoise(xi, 0.3))(x)
    np.testing.assert_allclose(mapped, model.denoise(x, 0.3), rtol=1e-5, atol=1e-6)
    # gradient with respect to the model's parameters flows through the pytree
    grads = jax.grad(lambda m: jnp.sum(m.log_density(x, 0.3)))(model)
    assert grads.mean.shape == (3,) and np.all(np.isfinite(grads.eigvals))


def test_errors(rng):
    eigvals, eigvecs = random_eigenbasis(rng, 4, 2)
    model = Gaussian(np.zeros(4), eigvals, eigvecs)
    with pytest.raises(ValueError, match="D = 4"):
        model.score(np.zeros((2, 5)), 1.0)
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        model.score(np.zeros((2, 4)), 0.0)
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        model.denoise(np.zeros((2, 4)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="`sigma` must be a scalar or broadcast"):
        model.score(np.zeros((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match="`x` contains NaN"):
        model.score(np.full((2, 4), np.nan), 1.0)
    with pytest.raises(ValueError, match="orthonormal"):
        Gaussian(np.zeros(4), eigvals, eigvecs * 2)
    with pytest.raises(ValueError, match="rank r = 5 exceeds the dimension D = 4"):
        Gaussian(np.zeros(4), np.ones(5), np.ones((4, 5)))
    with pytest.raises(ValueError, match="D = 3"):
        Gaussian(np.zeros(3), eigvals, eigvecs)
    with pytest.raises(ValueError, match="`eigvals` must be >= 0"):
        Gaussian(np.zeros(4), -eigvals, eigvecs)
    with pytest.raises(ValueError, match="`eigvals` shape"):
        Gaussian(np.zeros(4), np.ones(3), eigvecs)
    with pytest.raises(ValueError, match="`mean` contains NaN"):
        Gaussian(np.full(4, np.nan), eigvals, eigvecs)
