"""Noise-level embeddings: positional (DDPM++) and random Fourier features (NCSN++)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class PositionalEmbedding(nn.Module):
    """`(N,) -> (N, num_channels)`: `[cos(x w), sin(x w)]`, `w_i = max_positions^(-i / (num_channels/2 - endpoint))`.

    The transformer sinusoidal embedding as in EDM; `endpoint=True` (DDPM++) makes the
    lowest frequency exactly `1 / max_positions`.
    """

    num_channels: int
    max_positions: int = 10000
    endpoint: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        half = self.num_channels // 2
        freqs = np.arange(half, dtype=np.float64) / (half - (1 if self.endpoint else 0))
        freqs = jnp.asarray((1.0 / self.max_positions) ** freqs, dtype=x.dtype)
        x = x[:, None] * freqs[None, :]
        return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
    """`(N,) -> (N, num_channels)`: `[cos(2 pi x w), sin(2 pi x w)]` with fixed `w ~ N(0, scale^2)`.

    EDM draws `w` once at construction and keeps it as a non-trainable buffer; here it
    is a constant of the architecture, so it is not a parameter (parameter counts match
    EDM's) and never changes: `freqs` if given (the `num_channels / 2` values of a
    network imported from EDM, its `map_noise.freqs` buffer), else drawn from
    `jax.random.key(seed)`.
    """

    num_channels: int
    scale: float = 16.0
    seed: int = 0
    freqs: tuple = ()

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.freqs:
            freqs = jnp.asarray(self.freqs, jnp.float32)
        else:
            freqs = jax.random.normal(jax.random.key(self.seed), (self.num_channels // 2,), jnp.float32) * self.scale
        x = x[:, None] * (2 * np.pi * freqs).astype(x.dtype)[None, :]
        return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)
