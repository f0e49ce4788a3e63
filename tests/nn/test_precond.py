"""EDM preconditioning: Table 1 formulas and the composed denoiser D = c_skip x + c_out F(c_in x, c_noise)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import TINY, B, evaluate

from gaussjax.nn import EDMPrecond, SongUNet, edm_preconditioning


def test_preconditioning_formulas(x64):
    sigma = np.geomspace(1e-4, 100.0, 13)
    sd = 0.7
    c_skip, c_out, c_in, c_noise = edm_preconditioning(jnp.asarray(sigma), sd)
    np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sd**2 + sigma**2), rtol=1e-14)
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-14)
    # Unit-variance identities: c_skip + (c_out / sd)^2 = 1 and c_in^2 (sigma^2 + sd^2) = 1.
    np.testing.assert_allclose(c_skip + (c_out / sd) ** 2, 1, rtol=1e-14)
    np.testing.assert_allclose(np.square(c_in) * (sigma**2 + sd**2), 1, rtol=1e-14)
    assert c_skip.dtype == jnp.float64
    tiny = edm_preconditioning(1e-8)
    assert float(tiny[0]) == pytest.approx(1.0) and float(tiny[1]) == pytest.approx(0.0, abs=1e-8)


def test_default_sigma_data_is_half():
    np.testing.assert_allclose(edm_preconditioning(0.5)[0], 0.5)  # sd^2 / (sd^2 + sd^2)


SIGMAS = jnp.geomspace(0.01, 80.0, B)


def test_denoiser_composes_the_network(tiny_random):
    precond, variables = tiny_random
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, SIGMAS, None)
    c_skip, c_out, c_in, c_noise = (np.asarray(c)[:, None, None, None] for c in edm_preconditioning(SIGMAS))
    F = jax.jit(precond.net.apply)({"params": variables["params"]["net"]}, c_in * x, c_noise[:, 0, 0, 0])
    np.testing.assert_allclose(D, c_skip * x + c_out * F, rtol=1e-5, atol=1e-5)
    assert np.abs(F).mean() > 0.01  # a non-trivial F, so the check above means something
    # A scalar sigma is accepted and broadcast over the batch.
    assert jax.eval_shape(precond.apply, variables, x, 2.0).shape == x.shape


def test_denoiser_tends_to_identity_as_sigma_vanishes(tiny_random):
    precond, variables = tiny_random
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, jnp.full((B,), 1e-6), None)
    np.testing.assert_allclose(D, x, atol=1e-4)


def test_initial_denoiser_is_the_skip_connection(tiny_precond):
    """The output layer starts at 1e-5 scale (EDM's init_zero), so D(x; sigma) ~ c_skip x, |F| << 1, at init."""
    precond, variables = tiny_precond
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, SIGMAS, None)
    c_skip, c_out = (np.asarray(c)[:, None, None, None] for c in edm_preconditioning(SIGMAS)[:2])
    F = (np.asarray(D, np.float64) - c_skip * np.asarray(x)) / c_out
    assert 0 < np.abs(F).max() < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_channels == net.in_channels"):
        EDMPrecond(SongUNet(**dict(TINY, out_channels=2)))
    with pytest.raises(TypeError, match="SongUNet"):
        EDMPrecond(net=None)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(SongUNet(**TINY), sigma_data=0.0)
    precond = EDMPrecond(SongUNet(**TINY))
    x = jnp.zeros((2, 8, 8, 1))
    variables = jax.eval_shape(precond.init, jax.random.key(0), x, jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"sigma.*\(N,\) = \(2,\)"):
        jax.eval_shape(precond.apply, variables, x, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        jax.eval_shape(precond.apply, variables, jnp.zeros((8, 8, 1)), 1.0)
