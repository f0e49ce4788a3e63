import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_eigenbasis
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gaussjax.scores import Gaussian, GaussianMixture


def random_mixture(rng, num, dim, rank):
    bases = [random_eigenbasis(rng, dim, rank) for _ in range(num)]
    weights = rng.uniform(0.5, 2.0, num)
    return (weights / weights.sum(), rng.normal(size=(num, dim)) * 2,
            np.stack([b[0] for b in bases]), np.stack([b[1] for b in bases]))


@pytest.mark.parametrize("rank", [0, 2, 5])
def test_log_density_matches_scipy_components(x64, rng, rank):
    weights, means, eigvals, eigvecs = params = random_mixture(rng, 4, 5, rank)
    model = GaussianMixture(*params)
    x, sigma = rng.normal(size=(7, 5)) * 2, 0.6
    per_component = [
        np.log(weights[k]) + multivariate_normal(
            means[k], (eigvecs[k] * eigvals[k]) @ eigvecs[k].T + sigma**2 * np.eye(5)).logpdf(x)
        for k in range(4)
    ]
    np.testing.assert_allclose(model.log_density(x, sigma), logsumexp(per_component, axis=0), rtol=1e-10)


@pytest.mark.parametrize("rank", [0, 3])
def test_score_is_gradient_of_log_density_and_eq7(x64, rng, rank):
    weights, means, eigvals, eigvecs = params = random_mixture(rng, 3, 6, rank)
    model = GaussianMixture(*params)
    x, sigma = rng.normal(size=(5, 6)), np.array([0.3, 0.5, 1.0, 2.0, 4.0])
    gradient = jax.vmap(jax.grad(model.log_density))(jnp.asarray(x), jnp.asarray(sigma))
    np.testing.assert_allclose(model.score(x, sigma), gradient, rtol=1e-8, atol=1e-10)
    # Eq. 7 directly: responsibilities times per-mode dense Gaussian denoisers
    for b in range(5):
        covs = [(eigvecs[k] * eigvals[k]) @ eigvecs[k].T + sigma[b] ** 2 * np.eye(6) for k in range(3)]
        logw = [np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(x[b]) for k in range(3)]
        w = np.exp(np.array(logw) - logsumexp(logw))
        expected = sum(w[k] * (x[b] + sigma[b] ** 2 * np.linalg.solve(covs[k], means[k] - x[b])) for k in range(3))
        np.testing.assert_allclose(model.denoise(x[b], sigma[b]), expected, rtol=1e-9, atol=1e-10)


def test_single_component_equals_gaussian(x64, rng):
    weights, means, eigvals, eigvecs = random_mixture(rng, 1, 6, 3)
    x, sigma = rng.normal(size=(4, 6)), np.array([0.01, 0.1, 1.0, 10.0])
    mixture, gaussian = GaussianMixture(weights, means, eigvals, eigvecs), Gaussian(means[0], eigvals[0], eigvecs[0])
    np.testing.assert_allclose(mixture.denoise(x, sigma), gaussian.denoise(x, sigma), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mixture.log_density(x, sigma), gaussian.log_density(x, sigma), rtol=1e-10)


def test_small_sigma_is_finite_and_one_hot(rng):
    weights, means, eigvals, eigvecs = random_mixture(rng, 5, 8, 2)
    model = GaussianMixture(weights, means, eigvals, eigvecs)
    x = means[3] + 1e-4 * rng.normal(size=8)
    out = model.denoise(x.astype(np.float32), 1e-3)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, Gaussian(means[3], eigvals[3], eigvecs[3]).denoise(x, 1e-3), atol=1e-4)


def test_weights_are_normalized_and_errors(rng):
    _, means, eigvals, eigvecs = random_mixture(rng, 2, 3, 1)
    model = GaussianMixture(np.array([1.0, 3.0]), means, eigvals, eigvecs)
    np.testing.assert_allclose(model.weights, [0.25, 0.75])
    with pytest.raises(ValueError, match="`weights` must be > 0"):
        GaussianMixture(np.array([1.0, 0.0]), means, eigvals, eigvecs)
    with pytest.raises(ValueError, match="K = 3"):
        GaussianMixture(np.ones(3), means, eigvals, eigvecs)
    with pytest.raises(ValueError, match="orthonormal"):
        GaussianMixture(np.ones(2), means, eigvals, eigvecs * 3)
    skewed = eigvecs.copy()
    skewed[-1, :, 0] *= 1.01  # the last mode only (the check goes one mode at a time): |U^T U - I| = 0.0201
    with pytest.raises(ValueError, match=r"max \|U\^T U - I\| = 2\.01e-02"):
        GaussianMixture(np.ones(2), means, eigvals, skewed)
    with pytest.raises(ValueError, match="D = 3"):
        model.score(np.zeros(4), 1.0)
