"""Convolution with optional 2x up/down-sampling (EDM's `Conv2d`), NHWC activations, HWIO kernels."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gaussjax.nn._init import xavier_uniform
from gaussjax.nn._resample import downsample, resample_padding, upsample


def conv2d(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Stride-1 cross-correlation `(N, H, W, C_in) * (k, k, C_in, C_out)` with symmetric zero padding."""
    if kernel.shape[:2] == (1, 1) and padding == 0:
        return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=[(padding, padding), (padding, padding)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


class Conv2d(nn.Module):
    """`k x k` convolution to `features` channels, optionally preceded by 2x up/down-sampling.

    `kernel_size = 0` gives a parameter-free resampling layer. With `fused_resample`
    the down-sampling filter runs after a wider-padded convolution (EDM's fused order,
    used by the 'residual' encoder). Parameters: `kernel (k, k, C_in, features)`
    (xavier-uniform times `init_weight`) and `bias (features,)` (zeros).
    """

    features: int
    kernel_size: int
    use_bias: bool = True
    up: bool = False
    down: bool = False
    resample_filter: tuple = (1, 1)
    fused_resample: bool = False
    init_weight: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up and self.down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        k = self.kernel_size
        w = b = None
        if k:
            w = self.param("kernel", xavier_uniform(self.init_weight), (k, k, x.shape[-1], self.features))
            w = w.astype(x.dtype)
            if self.use_bias:
                b = self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        w_pad = k // 2
        f_pad = resample_padding(self.resample_filter) if (self.up or self.down) else 0

        if self.fused_resample and self.up and w is not None:
            x = upsample(x, self.resample_filter, max(f_pad - w_pad, 0))
            x = conv2d(x, w, max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = conv2d(x, w, w_pad + f_pad)
            x = downsample(x, self.resample_filter, 0)
        else:
            if self.up:
                x = upsample(x, self.resample_filter, f_pad)
            if self.down:
                x = downsample(x, self.resample_filter, f_pad)
            if w is not None:
                x = conv2d(x, w, w_pad)
        if b is not None:
            x = x + b[None, None, None, :]
        return x
