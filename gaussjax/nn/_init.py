"""Weight initialization of the DDPM++ network (NVlabs/edm's `weight_init`, xavier_uniform mode)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gaussjax.nn._rng import bit_generator_key


def xavier_uniform(init_weight: float = 1.0):
    """Glorot-uniform weights scaled by `init_weight`: `U(-a, a)`, `a = init_weight * sqrt(6 / (fan_in + fan_out))`.

    For a convolution kernel `(k, k, C_in, C_out)` the fans are `k^2 C_in` and `k^2 C_out`,
    as in EDM. SongUNet uses `init_weight = 1` for most layers, `1e-5` ("init_zero") for
    the last convolution of each residual branch and the output convolution, and
    `sqrt(0.2)` for the attention `qkv` projection. Biases start at zero. The uniform
    draw uses XLA's bit generator seeded from Flax's per-parameter key (`bit_generator_key`).
    """
    scaling = nn.initializers.variance_scaling(init_weight**2, "fan_avg", "uniform")

    def init(key, shape, dtype=jnp.float32):
        return scaling(bit_generator_key(key), shape, dtype)

    return init
