import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import gaussjax as gj
from gaussjax.solution import (
    amplification_factor,
    dxi_dsigma,
    gaussian_denoiser_trajectory,
    gaussian_final_state,
    gaussian_trajectory,
    gaussian_warm_start,
    psi,
    rotation_correction,
    rotation_decomposition,
    teleport,
    xi,
)


def random_gaussian(seed, dim=6, rank=3):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :rank]
    return gj.Gaussian(rng.normal(size=dim), np.sort(rng.uniform(0.05, 4.0, rank))[::-1], basis), rng


def dense_score(g, x, sigma):
    """(Sigma + sigma^2 I)^-1 (mu - x) with a dense inverse (Eq. 5)."""
    cov = (np.asarray(g.eigvecs) * np.asarray(g.eigvals)) @ np.asarray(g.eigvecs).T
    return np.linalg.solve(cov + sigma**2 * np.eye(len(x)), np.asarray(g.mean) - x)


@pytest.mark.parametrize("rank", [3, 6])
def test_edm_closed_form_matches_high_accuracy_ode_solve(x64, rank):
    g, rng = random_gaussian(0, rank=rank)
    x_T = 20.0 * rng.normal(size=6)
    sigmas = np.array([20.0, 8.0, 2.0, 0.5, 0.1, 0.01])
    # PF-ODE dx/dsigma = -sigma * score(x, sigma) (EDM, sigma(t) = t), dense score
    solution = solve_ivp(lambda s, x: -s * dense_score(g, x, s), (20.0, 0.01), x_T, t_eval=sigmas,
                         rtol=1e-10, atol=1e-10, method="DOP853")
    closed = gaussian_trajectory(g, x_T, 20.0, sigmas)
    np.testing.assert_allclose(closed, solution.y.T, rtol=1e-7, atol=1e-7)


def test_vp_closed_form_matches_ab_initio_vp_ode(x64):
    """App. D.3 Eq. 70-71: dx/dt = -beta x - g^2/2 (sigma_t^2 I + alpha_t^2 Sigma)^-1 (alpha_t mu - x), beta = g^2/2."""
    g, rng = random_gaussian(1, dim=5, rank=2)
    beta = lambda t: 0.1 + 19.9 * t  # noqa: E731
    alpha = lambda t: np.exp(-(0.1 * t + 19.9 * t**2 / 2))  # exp(-int_0^t beta)  # noqa: E731
    cov = (np.asarray(g.eigvecs) * np.asarray(g.eigvals)) @ np.asarray(g.eigvecs).T

    def vp_ode(t, x):
        a = alpha(t)
        s = np.linalg.solve((1 - a**2) * np.eye(5) + a**2 * cov, a * np.asarray(g.mean) - x)
        return -beta(t) * x - beta(t) * s  # g^2 / 2 = beta

    times = np.array([1.0, 0.6, 0.3, 0.1, 0.01, 1e-3])
    x_T = rng.normal(size=5)
    solution = solve_ivp(vp_ode, (1.0, 1e-3), x_T, t_eval=times, rtol=1e-11, atol=1e-11, method="DOP853")
    alphas = alpha(times)
    closed = gaussian_trajectory(g, x_T, np.sqrt(1 - alphas[0] ** 2), np.sqrt(1 - alphas**2),
                                 alpha_T=alphas[0], alpha=alphas)
    np.testing.assert_allclose(closed, solution.y.T, rtol=1e-7, atol=1e-7)


def test_denoiser_trajectory_is_the_denoiser_along_the_trajectory_and_eq16(x64):
    g, rng = random_gaussian(2)
    x_T = 30.0 * rng.normal(size=(4, 6))
    sigmas = np.array([30.0, 5.0, 1.0, 0.2])
    states = gaussian_trajectory(g, x_T, 30.0, sigmas)
    along = gaussian_denoiser_trajectory(g, x_T, 30.0, sigmas)
    for i, s in enumerate(sigmas):
        np.testing.assert_allclose(along[i], g.denoise(states[i], s), rtol=1e-10, atol=1e-10)
    # Eq. 16 written out: mu + sum_k lam / sqrt((lam + s^2)(lam + s_T^2)) c_k u_k
    lam, U, mu = np.asarray(g.eigvals), np.asarray(g.eigvecs), np.asarray(g.mean)
    coeff = lam / np.sqrt((lam + 1.0) * (lam + 900.0))
    np.testing.assert_allclose(along[2], mu + ((x_T - mu) @ U * coeff) @ U.T, rtol=1e-10)
    # and in the VP form it is the VP endpoint estimate of the VP state (Eq. 20)
    vp = gaussian_denoiser_trajectory(g, x_T, 1.0, 0.5, alpha_T=0.1, alpha=0.8)
    vp_states = gaussian_trajectory(g, x_T, 1.0, 0.5, alpha_T=0.1, alpha=0.8)
    np.testing.assert_allclose(vp, gj.conventions.vp_denoise(g, vp_states, 0.8, 0.5), rtol=1e-10, atol=1e-10)


def test_final_state_is_eq17_and_trajectory_endpoints(x64):
    g, rng = random_gaussian(3)
    x_T = 80.0 * rng.normal(size=(3, 6))
    lam, U, mu = np.asarray(g.eigvals), np.asarray(g.eigvecs), np.asarray(g.mean)
    expected = mu + ((x_T - mu) @ U * np.sqrt(lam / (80.0**2 + lam))) @ U.T
    np.testing.assert_allclose(gaussian_final_state(g, x_T, 80.0), expected, rtol=1e-10)
    np.testing.assert_allclose(gaussian_trajectory(g, x_T, 80.0, 80.0), x_T, rtol=1e-12)
    np.testing.assert_allclose(teleport(g, x_T, 80.0, 80.0), x_T, rtol=1e-12)


@pytest.mark.slow
def test_special_functions_against_formulas_and_autodiff(x64):
    sigma, lam = jnp.linspace(0.05, 10.0, 7)[:, None], jnp.array([0.1, 1.0, 9.0])[None, :]
    np.testing.assert_allclose(psi(sigma, lam, 80.0), np.sqrt((sigma**2 + lam) / (6400.0 + lam)))
    np.testing.assert_allclose(xi(sigma, lam, 80.0) * psi(80.0, lam, 80.0),
                               lam / (lam + sigma**2) * psi(sigma, lam, 80.0))
    dxi = jax.grad(lambda s, v: xi(s, v, 80.0))
    derivative = jax.vmap(jax.vmap(dxi, (None, 0)), (0, None))(sigma[:, 0], lam[0])
    np.testing.assert_allclose(dxi_dsigma(sigma, lam, 80.0), derivative, rtol=1e-10)
    # the critical period: |d xi / d sigma| peaks at sigma = sqrt(lam / 2)
    grid = jnp.linspace(0.01, 5, 20001)
    assert float(grid[jnp.argmax(-dxi_dsigma(grid, 2.0, 80.0))]) == pytest.approx(1.0, abs=1e-3)


def test_amplification_equals_sensitivity_of_the_closed_form_map(x64):
    g, rng = random_gaussian(4)
    x_t, sigma_t = 3.0 * rng.normal(size=6), 1.7
    for k in range(3):
        u = np.asarray(g.eigvecs[:, k])
        jvp = jax.jvp(lambda x: gaussian_final_state(g, x, sigma_t), (jnp.asarray(x_t),), (jnp.asarray(u),))[1]
        finite = (gaussian_final_state(g, x_t + 1e-4 * u, sigma_t)
                  - gaussian_final_state(g, x_t - 1e-4 * u, sigma_t)) / 2e-4
        np.testing.assert_allclose(jvp, amplification_factor(sigma_t, g.eigvals[k]) * u, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(finite, jvp, rtol=1e-6, atol=1e-9)
    off = np.linalg.qr(np.concatenate([np.asarray(g.eigvecs), rng.normal(size=(6, 1))], axis=1))[0][:, -1]
    off_effect = gaussian_final_state(g, x_t + off, sigma_t) - gaussian_final_state(g, x_t, sigma_t)
    np.testing.assert_allclose(off_effect, 0.0, atol=1e-12)  # off-manifold perturbations vanish


def test_rotation_decomposition_and_correction_bound(x64):
    """Eq. 101-108 for random low-rank Gaussians.

    The rigorous bound from Eq. 105 is |J| < sigma_t, so ||R_t||^2 <= sigma_t^2 sum_k c_k^2
    (about sigma_t^2 r / D for |x_T| ~ 1). Eq. 107 is J at the critical alpha = 1/sqrt(1 + lam)
    only; the paper's Eq. 22 bound (1 - sqrt(2)/2)^2 r / D does not hold at every alpha.
    """
    for seed in range(5):
        g, rng = random_gaussian(10 + seed, dim=50, rank=4)
        lam, U = np.asarray(g.eigvals), np.asarray(g.eigvecs)
        x_T = rng.normal(size=(200, 50)) / np.sqrt(50)  # |x_T| ~ 1, c_k ~ 1/sqrt(D)
        for alpha in (0.2, 0.5, 0.9):
            a, b, residual = rotation_decomposition(g, x_T, 0.0, alpha)
            x_t = gaussian_trajectory(g, x_T, 1.0, np.sqrt(1 - alpha**2), alpha_T=0.0, alpha=alpha)
            x_0 = gaussian_final_state(g, x_T, 1.0, alpha_T=0.0)
            np.testing.assert_allclose(x_t, a * x_0 + b * x_T + residual, rtol=1e-10, atol=1e-12)
            assert (float(a), float(b)) == pytest.approx((alpha, np.sqrt(1 - alpha**2)))
            J = np.asarray(rotation_correction(alpha, lam))
            coords = x_T @ U
            error = np.sum(residual**2, -1)
            np.testing.assert_allclose(error, np.sum(J**2 * coords**2, -1), rtol=1e-9)  # Eq. 108
            assert np.all(np.abs(J) < np.sqrt(1 - alpha**2))
            assert np.all(error <= (1 - alpha**2) * np.sum(coords**2, -1) + 1e-15)
    lam = np.array([0.5, 2.0, 30.0])
    direct = np.sqrt(1 + (lam - 1) * 0.36) - 0.6 * np.sqrt(lam) - 0.8  # Eq. 104 at alpha = 0.6
    np.testing.assert_allclose(rotation_correction(0.6, lam), direct, rtol=1e-12)
    critical = rotation_correction(1 / np.sqrt(1 + lam), lam)  # Eq. 107
    np.testing.assert_allclose(critical, -(2 - np.sqrt(2)) * np.sqrt(lam / (1 + lam)), rtol=1e-12)


def test_warm_start_has_the_predicted_covariance(x64, key):
    g, _ = random_gaussian(5, dim=4, rank=2)
    samples = np.asarray(gaussian_warm_start(g, key, (200_000,), 0.5))
    cov = (np.asarray(g.eigvecs) * np.asarray(g.eigvals)) @ np.asarray(g.eigvecs).T + 0.25 * np.eye(4)
    np.testing.assert_allclose(samples.mean(0), g.mean, atol=0.02)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), cov, atol=0.03)


def test_errors(key):
    g, _ = random_gaussian(6)
    mixture = gj.GaussianMixture(np.ones(1), np.zeros((1, 6)), np.ones((1, 1)), np.eye(6)[None, :, :1])
    with pytest.raises(TypeError, match="needs a gaussjax.Gaussian.*GaussianMixture"):
        teleport(mixture, np.zeros(6), 80.0, 1.0)
    with pytest.raises(ValueError, match="`sigma_skip` = 90.0 must not exceed `sigma_T` = 80.0"):
        teleport(g, np.zeros(6), 80.0, 90.0)
    with pytest.raises(ValueError, match="D = 6"):
        gaussian_trajectory(g, np.zeros(5), 80.0, 1.0)
    with pytest.raises(ValueError, match="`sigma_T` must be finite and > 0"):
        gaussian_trajectory(g, np.zeros(6), 0.0, 1.0)
    with pytest.raises(ValueError, match="`sigma` must be finite and >= 0"):
        gaussian_trajectory(g, np.zeros(6), 1.0, -1.0)
    with pytest.raises(ValueError, match="`sigma` must be a scalar or a 1-D grid"):
        gaussian_trajectory(g, np.zeros(6), 1.0, np.ones((2, 2)))
    with pytest.raises(ValueError, match="alpha_T < 1"):
        rotation_decomposition(g, np.zeros(6), 1.0, 0.5)
    with pytest.raises(TypeError, match="`key`"):
        gaussian_warm_start(g, None, (2,), 1.0)
