import numpy as np
import pytest

from gaussjax.schedules import VPSchedule, cosine_schedule, ddpm_linear_schedule, karras_sigmas, vp_alpha_from_edm_sigma


def test_karras_grid_matches_edm_formula():
    n, s_min, s_max, rho = 18, 0.002, 80.0, 7.0
    expected = [(s_max ** (1 / rho) + i / (n - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho for i in range(n)]
    sigmas = np.asarray(karras_sigmas(n))
    assert sigmas.shape == (19,) and sigmas[-1] == 0.0
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-6)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
    np.testing.assert_allclose(karras_sigmas(1), [80.0, 0.0])


def test_vp_schedules():
    linear = ddpm_linear_schedule()
    betas = np.linspace(1e-4, 0.02, 1000)
    manual = np.ones(1000)
    product = 1.0
    for t in range(1000):
        product *= 1 - betas[t]
        manual[t] = product
    np.testing.assert_allclose(linear.alphas_cumprod, manual, rtol=1e-12)
    np.testing.assert_allclose(linear.alpha**2 + linear.sigma**2, 1.0)
    np.testing.assert_allclose(linear.edm_sigma, linear.sigma / linear.alpha)
    np.testing.assert_allclose(vp_alpha_from_edm_sigma(linear.edm_sigma), linear.alpha, rtol=1e-6)
    cosine = cosine_schedule(100)
    f = lambda t: np.cos((t / 100 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(cosine.alphas_cumprod[:50], f(np.arange(1, 51)) / f(0), rtol=1e-10)
    np.testing.assert_array_equal(linear.timesteps(5), [999, 749, 500, 250, 0])


def test_errors():
    with pytest.raises(ValueError, match="`num_steps` must be a positive integer, got 0"):
        karras_sigmas(0)
    with pytest.raises(ValueError, match="`sigma_min` must be <= `sigma_max`"):
        karras_sigmas(5, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="strictly monotone"):
        VPSchedule(np.array([0.5, 0.9, 0.7]))
    with pytest.raises(ValueError, match="strictly monotone"):
        VPSchedule(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="exceeds"):
        ddpm_linear_schedule(10).timesteps(11)
