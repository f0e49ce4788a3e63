"""Keys for XLA's bit generator: cheap random bits for weight initialization and dropout on a CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bit_generator_key(key) -> jax.Array:
    """An `rbg` PRNG key seeded from `key`'s data; its random bits come from XLA's RngBitGenerator.

    JAX's default threefry generator is a large kernel that XLA compiles anew at every
    call site (one per weight tensor with Flax initializers, and per dropout layer); the
    bit generator is one XLA operation (the compile time this saves: docs/training.md,
    "Performance notes"). The bit generator is deterministic for a given key and backend,
    but, unlike threefry, not bit-identical across backends.
    `key` may be a typed key of any implementation or legacy `uint32` key data.
    """
    data = key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) == "rbg":
            return key
        data = jax.random.key_data(key)
    data = data.reshape(-1).astype(jnp.uint32)
    words = jnp.concatenate([data] * (-(-4 // data.shape[0])))[:4]
    return jax.random.wrap_key_data(words, impl="rbg")
