"""edm_loss against a direct computation with the same random draws; sigma distribution; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import B, train_apply

from gaussjax.nn import edm_loss
from gaussjax.nn._rng import bit_generator_key

loss_fn = jax.jit(edm_loss, static_argnums=0)  # P_mean, P_std, sigma_data are traced: one compilation


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(5), (B, 8, 8, 1), minval=-1, maxval=1)


@pytest.mark.slow
def test_loss_matches_direct_computation(tiny_random, images):
    precond, params = tiny_random
    key = jax.random.key(42)
    loss, sigma = loss_fn(precond, params, images, key, P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    assert loss.shape == sigma.shape == (B,) and loss.dtype == sigma.dtype == jnp.float32

    # The documented use of the key: split into sigma, noise and dropout keys.
    key_sigma, key_noise, key_dropout = jax.random.split(key, 3)
    log_sigma = -1.2 + 1.2 * np.asarray(jax.random.normal(key_sigma, (B,)), np.float64)
    np.testing.assert_allclose(sigma, np.exp(log_sigma), rtol=1e-6)
    y = np.asarray(images, np.float64)
    noise = np.asarray(jax.random.normal(key_noise, images.shape), np.float64)
    x = (y + np.asarray(sigma, np.float64)[:, None, None, None] * noise).astype(np.float32)
    D = train_apply(precond, params, x, sigma, bit_generator_key(key_dropout))
    s = np.asarray(sigma, np.float64)
    weight = (s**2 + 0.25) / (s * 0.5) ** 2
    expected = weight * np.mean((np.asarray(D, np.float64) - y) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(loss, expected, rtol=2e-5)


@pytest.mark.slow
def test_sigma_is_lognormal(tiny_precond, images):
    """ln sigma ~ N(P_mean, P_std^2) over many keys; at initialization the loss is of order one."""
    precond, params = tiny_precond
    draws = [loss_fn(precond, params, images, jax.random.key(k), P_mean=-1.2, P_std=1.2, sigma_data=0.5)
             for k in range(64)]
    loss = np.concatenate([d[0] for d in draws])
    logs = np.log(np.concatenate([d[1] for d in draws]))
    assert abs(logs.mean() + 1.2) < 4 * 1.2 / np.sqrt(logs.size)
    assert abs(logs.std() - 1.2) < 0.1
    # D ~ c_skip x at init: the weighted error is (c_skip^2 sigma^2 + (1 - c_skip)^2 y^2) weight, O(1).
    assert np.all(np.isfinite(loss)) and 0.3 < loss.mean() < 3.0


def test_loss_options_and_determinism(tiny_precond, images):
    precond, params = tiny_precond
    a = loss_fn(precond, params, images, jax.random.key(0), P_mean=0.5, P_std=0.1, sigma_data=1.0)
    b = loss_fn(precond, params, images, jax.random.key(0), P_mean=0.5, P_std=0.1, sigma_data=1.0)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(np.abs(np.log(np.asarray(a[1])) - 0.5) < 0.5)
    c = loss_fn(precond, params, images, jax.random.key(1), P_mean=0.5, P_std=0.1, sigma_data=1.0)
    assert not np.allclose(a[0], c[0])


@pytest.mark.slow
def test_gradients_are_finite(tiny_precond, images):
    precond, params = tiny_precond

    def objective(p):
        return edm_loss(precond, p, images, jax.random.key(3))[0].mean()

    value, grads = jax.jit(jax.value_and_grad(objective))(params)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    # The zero-initialized output layer gets a gradient (it is what learning starts from).
    assert float(jnp.abs(grads["params"]["net"]["dec_8x8_aux_conv"]["kernel"]).max()) > 0


def test_bad_arguments(tiny_precond):
    precond, params = tiny_precond
    with pytest.raises(ValueError, match=r"images.*\(N, H, W, C\)"):
        edm_loss(precond, params, jnp.zeros((8, 64)), jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        edm_loss(precond, params, jnp.zeros((2, 8, 8, 1)), None)
