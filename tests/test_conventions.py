import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import multivariate_normal

from gaussjax.conventions import edm_to_vp, vp_denoise, vp_score, vp_to_edm
from gaussjax.scores import Gaussian


def test_round_trip():
    x, sigma, alpha = jnp.ones((2, 3)), jnp.array([0.5, 2.0]), jnp.array([0.9, 0.3])
    x_t, sigma_t = edm_to_vp(x, sigma, alpha)
    np.testing.assert_allclose(x_t, x * alpha[:, None], rtol=1e-6)
    x_edm, sigma_edm = vp_to_edm(x_t, alpha, sigma_t)
    np.testing.assert_allclose(x_edm, x, rtol=1e-6)
    np.testing.assert_allclose(sigma_edm, sigma, rtol=1e-6)


def test_vp_score_is_gradient_of_vp_marginal(x64):
    """VP marginal of a Gaussian: x_t ~ N(alpha mu, alpha^2 Sigma + sigma_t^2 I) (App. D.2-D.3)."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(4, 4)))[0][:, :2]
    eigvals, mean = np.array([2.0, 0.5]), rng.normal(size=4)
    model = Gaussian(mean, eigvals, basis)
    alpha, sigma_t = 0.6, 0.8
    cov = alpha**2 * (basis * eigvals) @ basis.T + sigma_t**2 * np.eye(4)
    x_t = rng.normal(size=(5, 4))
    expected = -np.linalg.solve(cov, (x_t - alpha * mean).T).T  # gradient of log N(x_t; alpha mu, cov)
    np.testing.assert_allclose(vp_score(model, x_t, alpha, sigma_t), expected, rtol=1e-10)
    assert np.all(np.isfinite(multivariate_normal(alpha * mean, cov).logpdf(x_t)))
    # endpoint estimate: E[y | x_t] for y ~ N(mu, Sigma), x_t = alpha y + sigma_t n
    prior = (basis * eigvals) @ basis.T
    gain = alpha * prior @ np.linalg.inv(cov)
    np.testing.assert_allclose(vp_denoise(model, x_t, alpha, sigma_t), mean + (x_t - alpha * mean) @ gain.T, rtol=1e-10)
    gradient = jax.vmap(jax.grad(lambda x: model.log_density(x / alpha, sigma_t / alpha)))(jnp.asarray(x_t))
    np.testing.assert_allclose(vp_score(model, x_t, alpha, sigma_t), gradient, rtol=1e-10)
