"""Convolution with optional 2x up/down-sampling (EDM's `Conv2d`), NHWC activations, HWIO kernels.

Two formulations of the same stride-1 convolution (`conv_impl`):

- `'xla'`: `lax.conv_general_dilated` (cuDNN on a GPU, a library kernel on a CPU); use it
  for networks evaluated outside compiled loops, e.g. a training step;
- `'matmul'`: im2col, the `k^2` shifted copies of the padded input side by side and one
  `(N H W, k^2 C_in) @ (k^2 C_in, C_out)` product (its gradients are products and slices
  too); use it for networks evaluated inside rolled loops (`lax.scan`, `fori_loop`,
  `while_loop`: samplers, diffrax solves) on a CPU, where XLA:CPU's convolutions are slow;
- `'auto'` (default): `'matmul'` on a CPU backend, `'xla'` elsewhere.

Both give the same result up to float rounding (tested). The measurements behind the
choice: docs/training.md, "Performance notes", and `bench/train_step.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gaussjax._errors import InputValueError
from gaussjax.nn._init import xavier_uniform
from gaussjax.nn._resample import downsample, resample_padding, upsample

CONV_IMPLS = ("auto", "xla", "matmul")


def resolve_conv_impl(conv_impl: str) -> str:
    """`'auto'` -> `'matmul'` on the CPU backend, `'xla'` on others; other values unchanged."""
    if conv_impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return conv_impl


def conv2d(x: jax.Array, kernel: jax.Array, padding: int, conv_impl: str = "xla") -> jax.Array:
    """Stride-1 cross-correlation `(N, H, W, C_in) * (k, k, C_in, C_out)` with symmetric zero padding."""
    k = kernel.shape[0]
    if k == 1 and padding == 0:
        return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])
    if resolve_conv_impl(conv_impl) == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(1, 1), padding=[(padding, padding), (padding, padding)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    oh, ow = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    # Patches in the kernel's (row, column, channel) order, so the HWIO kernel reshapes to (k^2 C_in, C_out).
    patches = jnp.concatenate([xp[:, i:i + oh, j:j + ow, :] for i in range(k) for j in range(k)], axis=-1)
    out = patches.reshape(n * oh * ow, k * k * c) @ kernel.reshape(k * k * c, -1)
    return out.reshape(n, oh, ow, -1)


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
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up and self.down:
            raise InputValueError("Conv2d cannot both upsample and downsample")
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
            x = conv2d(x, w, max(w_pad - f_pad, 0), self.conv_impl)
        elif self.fused_resample and self.down and w is not None:
            x = conv2d(x, w, w_pad + f_pad, self.conv_impl)
            x = downsample(x, self.resample_filter, 0)
        else:
            if self.up:
                x = upsample(x, self.resample_filter, f_pad)
            if self.down:
                x = downsample(x, self.resample_filter, f_pad)
            if w is not None:
                x = conv2d(x, w, w_pad, self.conv_impl)
        if b is not None:
            x = x + b[None, None, None, :]
        return x
