"""Regression tests of issue 15's defects in the library core (one per defect; data and train ones live
beside their modules): each failed before the fix, by returning NaN, a silently wrong value, or an
internal error instead of a clear one naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return np.asarray(load_dataset("digits").flat)


@pytest.fixture(scope="module")
def models(digits):
    return {
        "isotropic": gj.Isotropic(digits.mean(0)),
        "gaussian": gj.fit_gaussian(digits),
        "gmm": gj.fit_gmm(digits, 5, key=jax.random.key(0)),
        "gmm-rank8": gj.fit_gmm(digits, 5, rank=8, key=jax.random.key(0)),
        "delta": gj.DeltaMixture(digits),
    }


def nearest_points(points, x):
    return points[np.argmin(((x[:, None] - points[None]) ** 2).sum(-1), axis=1)]


@pytest.mark.parametrize("sigma", [1e-4, 1e-6, 1e-9, 1e-12, 2e-19])
def test_2_delta_denoiser_is_the_nearest_point_at_any_small_sigma(digits, models, sigma):
    """(2) DeltaMixture returned NaN rows at sigma <= 1e-4 (every row at 1e-6)."""
    for offset in (0.01, 1.0):
        x = digits[:4] + offset
        np.testing.assert_array_equal(models["delta"].denoise(x, sigma), nearest_points(digits, x))


@pytest.mark.slow
def test_2_samplers_and_solves_reach_tiny_sigma(digits, models):
    """(2) heun_sampler with sigma_min = 1e-5 gave NaN samples; solve_pf_ode to 1e-5 hit max_steps."""
    x_T = 80.0 * np.asarray(jax.random.normal(jax.random.key(0), (4, 64)))
    sigmas = gj.karras_sigmas(18, sigma_min=1e-5)
    samples = gj.heun_sampler(models["delta"], x_T, sigmas).x
    np.testing.assert_allclose(samples, nearest_points(digits, np.asarray(samples)), atol=1e-6)  # training images
    states = gj.solve_pf_ode(models["delta"], x_T, sigmas[:-1]).states
    assert np.all(np.isfinite(states))


@pytest.mark.parametrize("name", ["isotropic", "gaussian", "gmm", "gmm-rank8", "delta"])
def test_16_every_model_is_finite_or_refuses_at_extremes(digits, models, name):
    """(16) NaN / inf at sigma 1e20 or 1e-20 or x ~ 1e30; now a finite result or a clear ValueError."""
    model = models[name]
    for x in (digits[:3] + 0.01, digits[:3] + 3.0, digits[:3] * 1e9):
        for sigma in (1.1e-19, 1e-12, 1e-3, 1e3, 1e12, 9e18):
            for method in (model.denoise, model.score, model.log_density):
                try:
                    out = np.asarray(method(x, sigma))
                except ValueError as error:
                    assert "sigma" in str(error) or "overflow" in str(error)
                else:
                    assert np.all(np.isfinite(out)), (method.__name__, sigma)
    for sigma in (1e-20, 1e20):
        with pytest.raises(ValueError, match="`sigma` must be in"):
            model.denoise(digits[:2], sigma)
    with pytest.raises(ValueError, match="too large for float32"):
        model.denoise(digits[:2] * 1e30, 1.0)


def test_16_far_field_mixture_denoiser_is_the_mean_weighted_by_distance(models, digits):
    """(16) GaussianMixture.denoise was NaN at sigma = 1e20; at huge sigma every model denoises to the mean."""
    for name in ("gaussian", "gmm", "delta"):
        np.testing.assert_allclose(models[name].denoise(digits[:2], 1e15), np.broadcast_to(digits.mean(0), (2, 64)),
                                   atol=1e-4)


def test_4_nan_grids_and_levels_are_refused(models):
    """(4) NaN grids passed `<=` checks; teleport of NaN states and NaN / negative alphas were accepted."""
    g, x_T = models["gaussian"], np.zeros((2, 64))
    with pytest.raises(ValueError, match="finite"):
        gj.heun_sampler(g, x_T, [1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="finite"):
        gj.ddim_sampler(g, x_T, gj.VPSchedule(np.array([0.1, np.nan, 1.0])))
    with pytest.raises(ValueError, match="`x_T` contains NaN"):
        gj.teleport(g, x_T * np.nan, 80.0, 10.0)
    with pytest.raises(ValueError, match="`x_T` contains NaN"):
        gj.gaussian_final_state(g, x_T * np.nan, 80.0)
    for bad in (np.nan, -0.5):
        with pytest.raises(ValueError, match="`alpha` must be finite"):
            gj.gaussian_trajectory(g, x_T, 1.0, 0.5, alpha=bad)
        with pytest.raises(ValueError, match="`alpha_T` must be finite"):
            gj.gaussian_trajectory(g, x_T, 1.0, 0.5, alpha_T=bad)


def test_5_complex_inputs_are_refused(digits, models):
    """(5) Complex inputs silently lost their imaginary part."""
    with pytest.raises(TypeError, match="`x` must be real"):
        models["delta"].denoise(digits[:1] + 5j, 1.0)
    with pytest.raises(TypeError, match="`X` must be real"):
        gj.fit_gaussian(digits + 1j)
    with pytest.raises(TypeError, match="`X` must be real"):
        gj.kmeans(digits + 1j, 3, key=jax.random.key(0))
    with pytest.raises(TypeError, match="`points` must be real"):
        gj.DeltaMixture(digits + 1j)
    with pytest.raises(TypeError, match="`mean` must be real"):
        gj.Gaussian(np.zeros(3, complex), np.ones(1), np.eye(3)[:, :1])
    with pytest.raises(TypeError, match="`x_T` must be real"):
        gj.heun_sampler(models["gaussian"], np.zeros((1, 64), complex), gj.karras_sigmas(3))


def test_8_chunk_size_is_capped_at_the_number_of_points(digits):
    """(8) DeltaMixture(X, chunk_size=10**9) with N = 50 allocated the padding of a 1e9-point chunk."""
    model = gj.DeltaMixture(digits[:50], chunk_size=10**9)
    assert model.chunks.shape == (1, 50, 64)
    np.testing.assert_allclose(model.denoise(digits[:3], 0.5), gj.DeltaMixture(digits[:50]).denoise(digits[:3], 0.5),
                               rtol=1e-6)


def test_13_sampler_state_dtype_is_checked(models):
    """(13) dtype=float16 or int32 failed inside lax.scan with an internal carry-type message."""
    for dtype in (jnp.float16, jnp.int32, "bogus"):
        with pytest.raises(TypeError, match="`dtype` must be float32 or float64"):
            gj.heun_sampler(models["gaussian"], np.zeros((1, 64)), gj.karras_sigmas(3), dtype=dtype)


def test_14_teleport_to_the_start_is_the_identity(models):
    """(14) teleport(g, x_T, 0.1, 0.1) was refused because of float32 rounding."""
    x_T = 0.1 * np.asarray(jax.random.normal(jax.random.key(1), (2, 64)), np.float32)
    np.testing.assert_allclose(gj.teleport(models["gaussian"], x_T, 0.1, 0.1), x_T, rtol=1e-5, atol=1e-6)


def test_15_named_errors_instead_of_internal_ones(digits, models):
    """(15) ZeroDivisionError, MLIRError and misreadings where a named-argument error belongs."""
    with pytest.raises(ValueError, match="`mean` must have shape \\(D,\\) with D >= 1"):
        gj.Isotropic(np.zeros(0))
    with pytest.raises(ValueError, match="`points` has dimension D = 0"):
        gj.DeltaMixture(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="K >= 1"):
        gj.GaussianMixture(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 1)), np.zeros((0, 4, 1)))
    with pytest.raises(ValueError, match="`shape` must hold sizes >= 0"):
        gj.gaussian_warm_start(models["gaussian"], jax.random.key(0), (-1,), 1.0)
    with pytest.raises(ValueError, match="`sigma_T` must be a scalar"):
        gj.teleport(models["gaussian"], np.zeros((2, 64)), np.array([80.0, 40.0]), 1.0)


def test_17_churn_window_is_checked(models):
    """(17) S_min > S_max, or NaN, was accepted."""
    for S_min, S_max in ((2.0, 1.0), (np.nan, 1.0), (0.0, np.nan)):
        with pytest.raises(ValueError, match="S_m"):
            gj.heun_sampler(models["gaussian"], np.zeros((1, 64)), gj.karras_sigmas(3), S_churn=5.0, S_min=S_min,
                            S_max=S_max, key=jax.random.key(0))


def test_16_kmeans_refuses_data_whose_squared_norms_overflow(digits):
    """(16) kmeans(X * 1e20) left a cluster empty (squared distances overflow float32)."""
    with pytest.raises(ValueError, match="too large for float32"):
        gj.kmeans(digits * 1e20, 3, key=jax.random.key(0))


def test_16_fraction_unexplained_variance_of_a_zero_nan_or_empty_reference():
    """(16) The FUV was NaN for a zero, NaN or empty reference; now a clear error (documented)."""
    with pytest.raises(ValueError, match="`reference` is zero"):
        gj.fraction_unexplained_variance(np.zeros((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="`reference` contains NaN"):
        gj.fraction_unexplained_variance(np.full((3, 4), np.nan), np.ones((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        gj.fraction_unexplained_variance(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="zero in some samples"):
        gj.per_sample_unexplained_variance(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((2, 2)))
