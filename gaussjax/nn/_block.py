"""The U-Net residual block with optional 2x resampling and self-attention (EDM's `UNetBlock`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._errors import InputValueError
from gaussjax.nn._conv import Conv2d
from gaussjax.nn._init import xavier_uniform
from gaussjax.nn._norm import GroupNorm

INIT_ZERO = 1e-5  # init_weight of the last layer of each residual branch (EDM's init_zero)
INIT_ATTN = float(np.sqrt(0.2))  # init_weight of the attention qkv projection


class UNetBlock(nn.Module):
    """Residual block `x -> skip_scale * (skip(x) + conv1(drop(silu(norm1(conv0(silu(norm0(x))) + affine(emb))))))`.

    Followed, when `num_heads > 0`, by single-scale self-attention
    `x -> skip_scale * (x + proj(attn(qkv(norm2(x)))))`. The `skip` branch is a 1x1
    convolution (with the block's up/down-sampling) when the channel count changes or the
    block resamples, else the identity. With `adaptive_scale` the embedding gives a
    scale and shift (`silu(shift + norm1(h) * (1 + scale))`, ADM); DDPM++ adds it
    before `norm1`. Attention logits and softmax are float32.
    """

    out_channels: int
    up: bool = False
    down: bool = False
    num_heads: int = 0
    dropout: float = 0.0
    skip_scale: float = 1.0
    eps: float = 1e-5
    resample_filter: tuple = (1, 1)
    resample_proj: bool = False
    adaptive_scale: bool = True
    conv_impl: str = "auto"  # see gaussjax.nn._conv

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool = False) -> jax.Array:
        in_channels, out_channels = x.shape[-1], self.out_channels
        orig = x
        x = GroupNorm(eps=self.eps, name="norm0")(x)
        x = Conv2d(out_channels, 3, up=self.up, down=self.down, resample_filter=self.resample_filter,
                   conv_impl=self.conv_impl, name="conv0")(jax.nn.silu(x))
        params = nn.Dense(out_channels * (2 if self.adaptive_scale else 1), kernel_init=xavier_uniform(),
                          name="affine")(emb)[:, None, None, :].astype(x.dtype)
        if self.adaptive_scale:
            scale, shift = jnp.split(params, 2, axis=-1)
            x = jax.nn.silu(shift + GroupNorm(eps=self.eps, name="norm1")(x) * (scale + 1))
        else:
            x = jax.nn.silu(GroupNorm(eps=self.eps, name="norm1")(x + params))
        x = nn.Dropout(rate=self.dropout)(x, deterministic=not train)
        x = Conv2d(out_channels, 3, init_weight=INIT_ZERO, conv_impl=self.conv_impl, name="conv1")(x)

        if out_channels != in_channels or self.up or self.down:
            kernel = 1 if self.resample_proj or out_channels != in_channels else 0
            orig = Conv2d(out_channels, kernel, up=self.up, down=self.down, resample_filter=self.resample_filter,
                          name="skip")(orig)
        x = (x + orig) * self.skip_scale

        if self.num_heads:
            x = (x + self._attention(x)) * self.skip_scale
        return x

    def _attention(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        heads = self.num_heads
        if c % heads:
            raise InputValueError(f"attention needs channels ({c}) divisible by num_heads ({heads})")
        qkv = Conv2d(3 * c, 1, init_weight=INIT_ATTN, name="qkv")(GroupNorm(eps=self.eps, name="norm2")(x))
        # EDM's channel layout of the qkv projection: (head, channel, {q, k, v}).
        qkv = qkv.reshape(n, h * w, heads, c // heads, 3)
        q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
        logits = jnp.einsum("nqhc,nkhc->nhqk", q.astype(jnp.float32),
                            k.astype(jnp.float32) / np.sqrt(c // heads))
        weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        a = jnp.einsum("nhqk,nkhc->nqhc", weights, v).reshape(n, h, w, c)
        return Conv2d(c, 1, init_weight=INIT_ZERO, name="proj")(a)
