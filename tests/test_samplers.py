import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.samplers import ddim_sampler, dpmpp_2m_sampler, euler_sampler, heun_sampler, hybrid_sampler
from gaussjax.schedules import ddpm_linear_schedule, karras_sigmas
from gaussjax.solution import gaussian_denoiser_trajectory, gaussian_final_state, gaussian_trajectory, teleport


def random_gaussian(seed, dim=8, rank=4):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :rank]
    return gj.Gaussian(rng.normal(size=dim) * 0.3, np.sort(rng.uniform(0.2, 2.0, rank))[::-1], basis), rng


def reference_edm_loop(denoise, x, sigmas, *, second_order, S_churn=0.0, S_min=0.0, S_max=np.inf, S_noise=1.0,
                       key=None):
    """EDM Alg. 2 written as a plain Python loop over NumPy states (the oracle for the scan)."""
    num_steps = len(sigmas) - 1
    for i in range(num_steps):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        if S_churn > 0:
            key, sub = jax.random.split(key)
            eps = np.asarray(jax.random.normal(sub, x.shape, jnp.float64))
            x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * S_noise * eps
        else:
            x_hat = x
        d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (t_next - t_hat) * d_cur
        if second_order and t_next > 0:
            d_prime = (x - denoise(x, t_next)) / t_next
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x


def numpy_delta_denoiser(points):
    def denoise(x, sigma):
        logits = -np.sum((x[:, None, :] - points[None]) ** 2, -1) / (2 * sigma**2)
        w = np.exp(logits - logits.max(1, keepdims=True))
        return (w / w.sum(1, keepdims=True)) @ points
    return denoise


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize("churn", [0.0, 30.0])
def test_edm_samplers_match_reference_loop_on_a_delta_mixture(x64, key, second_order, churn):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 5))
    model = gj.DeltaMixture(points)
    sigmas = np.asarray(karras_sigmas(12, sigma_max=20.0))
    x_T = 20.0 * rng.normal(size=(6, 5))
    sampler = heun_sampler if second_order else euler_sampler
    out = sampler(model, x_T, sigmas, S_churn=churn, S_min=0.05, S_max=10.0, key=key if churn else None)
    expected = reference_edm_loop(numpy_delta_denoiser(points), x_T, sigmas, second_order=second_order,
                                  S_churn=churn, S_min=0.05, S_max=10.0, key=key)
    np.testing.assert_allclose(out.x, expected, rtol=1e-8, atol=1e-8)
    assert out.nfe == (2 * 12 - 1 if second_order else 12)


def test_heun_is_second_order_and_euler_first_order(x64):
    g, rng = random_gaussian(1)
    x_T = 80.0 * rng.normal(size=(32, 8))
    errors = {"heun": [], "euler": []}
    for n in (8, 16, 32, 64):
        sigmas = np.asarray(karras_sigmas(n))[:-1]  # stop at sigma_min: only ODE discretization error remains
        exact = gaussian_trajectory(g, x_T, 80.0, sigmas[-1])
        errors["heun"].append(float(jnp.max(jnp.abs(heun_sampler(g, x_T, sigmas).x - exact))))
        errors["euler"].append(float(jnp.max(jnp.abs(euler_sampler(g, x_T, sigmas).x - exact))))
    heun_ratios = np.array(errors["heun"][:-1]) / np.array(errors["heun"][1:])
    euler_ratios = np.array(errors["euler"][:-1]) / np.array(errors["euler"][1:])
    assert np.all((heun_ratios > 3.0) & (heun_ratios < 5.5)), heun_ratios
    assert np.all((euler_ratios > 1.6) & (euler_ratios < 2.6)), euler_ratios
    # with the trailing 0 the result approaches the exact map x_T -> x_0 (Eq. 17)
    final = heun_sampler(g, x_T, karras_sigmas(64)).x
    np.testing.assert_allclose(final, gaussian_final_state(g, x_T, 80.0), atol=1e-2)


def test_dpmpp_2m_beats_euler_at_equal_nfe(x64):
    g, rng = random_gaussian(2)
    x_T = 80.0 * rng.normal(size=(32, 8))
    for n in (10, 20, 40):
        sigmas = karras_sigmas(n)
        exact = gaussian_denoiser_trajectory(g, x_T, 80.0, float(sigmas[-2]))  # final denoise at sigma_min
        dpm, euler = dpmpp_2m_sampler(g, x_T, sigmas), euler_sampler(g, x_T, sigmas)
        assert dpm.nfe == euler.nfe == n
        dpm_error, euler_error = (float(jnp.max(jnp.abs(out.x - exact))) for out in (dpm, euler))
        assert dpm_error < euler_error
    assert dpm_error < 0.25 * euler_error  # second order pulls away at 40 steps


def test_ddim_converges_to_the_vp_closed_form(x64):
    g, rng = random_gaussian(3)
    schedule = ddpm_linear_schedule()
    x_T = rng.normal(size=(16, 8))
    errors = []
    for n in (10, 20, 40, 80):
        grid = schedule.sampling_grid(n)
        out = ddim_sampler(g, x_T, grid)
        grid = np.asarray(grid.alphas_cumprod)
        alpha_T = np.sqrt(grid[0])
        exact = gaussian_final_state(g, x_T, np.sqrt(1 - grid[0]), alpha_T=alpha_T)
        errors.append(float(jnp.max(jnp.abs(out.x - exact))))
        assert out.nfe == n
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.7) & (ratios < 2.5)), errors  # first order, like Euler in EDM coordinates


def test_stochastic_ddim_samples_the_data_distribution(key):
    g, _ = random_gaussian(4, dim=3, rank=3)
    schedule = ddpm_linear_schedule()
    grid = schedule.sampling_grid(200)
    a_T = float(grid.alphas_cumprod[0])
    start, noise = jax.random.split(key)
    x_T = np.sqrt(a_T) * np.asarray(g.mean) + np.sqrt(1 - a_T) * np.asarray(jax.random.normal(start, (20000, 3)))
    samples = np.asarray(ddim_sampler(g, x_T, grid, eta=1.0, key=noise).x)
    np.testing.assert_allclose(samples.mean(0), g.mean, atol=0.05)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), g.covariance, atol=0.1)


def test_hybrid_sampler(x64):
    g, rng = random_gaussian(5)
    x_T = 80.0 * rng.normal(size=(8, 8))
    sigmas = karras_sigmas(18)
    plain = heun_sampler(g, x_T, sigmas)
    np.testing.assert_array_equal(hybrid_sampler(g, g, x_T, sigmas, 0).x, plain.x)
    hybrid = hybrid_sampler(g, g, x_T, sigmas, 6, return_trajectory=True)
    started = gaussian_trajectory(g, x_T, 80.0, float(sigmas[6]))  # closed-form state at sigma_6
    np.testing.assert_allclose(hybrid.trajectory[0], started, rtol=1e-12)
    np.testing.assert_allclose(hybrid.x, heun_sampler(g, started, sigmas[6:]).x, rtol=1e-12)
    assert plain.nfe - hybrid.nfe == 2 * 6
    # for the Gaussian "network" teleportation is exact, so skipping steps costs no accuracy
    exact = gaussian_final_state(g, x_T, 80.0)
    assert float(jnp.max(jnp.abs(hybrid.x - exact))) <= float(jnp.max(jnp.abs(plain.x - exact))) + 1e-6
    dpm = hybrid_sampler(g, g, x_T, sigmas, 4, sampler=dpmpp_2m_sampler)
    assert dpm.nfe == 18 - 4


def test_trajectory_outputs_and_compile_once():
    g, rng = random_gaussian(6)
    x_T = 80.0 * rng.normal(size=(2, 3, 8)).astype(np.float32)
    out = heun_sampler(g, x_T, karras_sigmas(10), return_trajectory=True)
    chex.assert_shape([out.trajectory, out.denoised], [(11, 2, 3, 8), (10, 2, 3, 8)])
    np.testing.assert_array_equal(out.trajectory[0], x_T)
    np.testing.assert_array_equal(out.trajectory[-1], out.x)
    traces = []

    class CountingTraces:  # not a pytree: accepted, and compiled once per instance
        dim = 8

        def denoise(self, x, sigma):
            traces.append(1)  # runs when the sampler is traced, not on every call of the compiled scan
            return g.denoise(x, sigma)

    model = CountingTraces()
    first = heun_sampler(model, x_T, karras_sigmas(10), return_trajectory=True)
    count = len(traces)
    again = heun_sampler(model, x_T, karras_sigmas(10, sigma_max=60.0), return_trajectory=True)  # new values
    assert len(traces) == count > 0
    np.testing.assert_allclose(first.x, out.x, rtol=1e-6, atol=1e-5)
    assert not np.allclose(again.x, first.x)


def test_errors(key):
    g, _ = random_gaussian(7)
    x_T = np.zeros((2, 8))
    with pytest.raises(ValueError, match="strictly decreasing"):
        heun_sampler(g, x_T, [1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match=">= 0"):
        euler_sampler(g, x_T, [1.0, -0.5])
    with pytest.raises(ValueError, match="at least 2"):
        dpmpp_2m_sampler(g, x_T, [1.0])
    with pytest.raises(ValueError, match="D = 8"):
        heun_sampler(g, np.zeros((2, 7)), karras_sigmas(4))
    with pytest.raises(ValueError, match=r"`n_skip` must be in \[0, len\(sigmas\) - 2\] = \[0, 3\]"):
        hybrid_sampler(g, g, x_T, karras_sigmas(4), 4)
    with pytest.raises(TypeError, match="`key` is required"):
        heun_sampler(g, x_T, karras_sigmas(4), S_churn=10.0)
    with pytest.raises(TypeError, match="needs a gaussjax.Gaussian"):
        hybrid_sampler(g, gj.Isotropic(np.zeros(8)), x_T, karras_sigmas(4), 2)
    with pytest.raises(ValueError, match="noise decreasing"):
        ddim_sampler(g, x_T, gj.VPSchedule(np.array([0.5, 0.2])))
    with pytest.raises(TypeError, match="must be a gaussjax.VPSchedule"):
        ddim_sampler(g, x_T, [0.2, 0.5])
    with pytest.raises(ValueError, match="jax_enable_x64"):
        heun_sampler(g, x_T, karras_sigmas(4), dtype=jnp.float64)


def test_teleport_then_sampler_keeps_float64(x64):
    g, rng = random_gaussian(8)
    out = heun_sampler(g, teleport(g, 80.0 * rng.normal(size=8), 80.0, 5.0), karras_sigmas(10, sigma_max=5.0))
    chex.assert_type(out.x, jnp.float64)


class _WrongShape:
    """A "denoiser" that drops coordinates."""

    def denoise(self, x, sigma):
        return x[..., :2]


@pytest.mark.parametrize("sampler", [gj.euler_sampler, gj.heun_sampler, gj.dpmpp_2m_sampler])
def test_a_denoiser_of_the_wrong_output_shape_is_named(sampler):
    with pytest.raises(ValueError, match=r"`model.denoise` returned shape \(3, 2\) for states of shape \(3, 4\)"):
        sampler(_WrongShape(), 80.0 * jnp.ones((3, 4)), gj.karras_sigmas(3))
