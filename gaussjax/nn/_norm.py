"""Group normalization over NHWC activations (EDM's `GroupNorm`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gaussjax._errors import InputValueError


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """EDM's group count: `min(32, C // 4)`."""
    return min(max_groups, channels // min_channels_per_group)


def check_group_norm_channels(channels: int, where: str) -> None:
    """Raise unless `channels` split into `num_groups(channels)` equal groups (at least one)."""
    groups = num_groups(channels)
    if groups < 1 or channels % groups:
        raise InputValueError(
            f"GroupNorm at {where} gets {channels} channels, which do not split into min(32, C // 4) = "
            f"{groups} equal groups; choose model_channels and channel_mult so that every channel count is "
            "at least 4 and divisible by its group count"
        )


class GroupNorm(nn.Module):
    """`y = (x - mean_g) / sqrt(var_g + eps) * scale + bias` with statistics per example and group.

    Groups are `min(32, C // 4)` contiguous channel blocks; statistics are taken over
    height, width and the channels of the group, in float32 (two-pass variance).
    Parameters: `scale (C,)` (ones) and `bias (C,)` (zeros).
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        groups = num_groups(c)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        xg = x.astype(jnp.float32).reshape(n, h, w, groups, c // groups)
        mean = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
        centered = xg - mean
        var = jnp.mean(jnp.square(centered), axis=(1, 2, 4), keepdims=True)
        y = (centered * jax.lax.rsqrt(var + self.eps)).reshape(n, h, w, c)
        y = y * scale.astype(jnp.float32)[None, None, None, :] + bias.astype(jnp.float32)[None, None, None, :]
        return y.astype(x.dtype)
