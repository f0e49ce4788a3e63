"""2x up/down-sampling with a separable FIR filter (EDM's `resample_filter`), NHWC.

The 2-D filter is the outer product `f f^T / (sum f)^2`. Downsampling is a depthwise
stride-2 correlation with it; upsampling is the transposed (stride-2) depthwise
convolution with `4 f f^T / (sum f)^2`, both with symmetric zero padding `pad`, as
`torch.nn.functional.conv2d` / `conv_transpose2d` in NVlabs/edm. For DDPM++'s filter
`(1, 1)` with `pad = 0` these are exactly 2x2 average pooling and nearest-neighbour
upsampling, which are computed by reshapes instead of convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def resample_padding(resample_filter) -> int:
    """EDM's padding for a filter of length L: `(L - 1) // 2`."""
    return (len(resample_filter) - 1) // 2


def _filter_2d(resample_filter, dtype) -> np.ndarray:
    f = np.asarray(resample_filter, dtype=np.float64)
    return (np.outer(f, f) / np.square(f.sum())).astype(dtype)


def _is_box(resample_filter, pad: int) -> bool:
    return len(resample_filter) == 2 and resample_filter[0] == resample_filter[1] and pad == 0


def downsample(x: jax.Array, resample_filter=(1, 1), pad: int | None = None) -> jax.Array:
    """`(N, H, W, C) -> (N, H', W', C)` depthwise stride-2 filtering (`H' = H / 2` with EDM's padding)."""
    pad = resample_padding(resample_filter) if pad is None else pad
    n, h, w, c = x.shape
    if _is_box(resample_filter, pad) and h % 2 == 0 and w % 2 == 0:
        return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))
    f = _filter_2d(resample_filter, np.float32)
    kernel = jnp.broadcast_to(jnp.asarray(f, x.dtype)[:, :, None, None], f.shape + (1, c))
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(2, 2), padding=[(pad, pad), (pad, pad)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
    )


def upsample(x: jax.Array, resample_filter=(1, 1), pad: int | None = None) -> jax.Array:
    """`(N, H, W, C) -> (N, H', W', C)` transposed depthwise stride-2 filtering (`H' = 2H` with EDM's padding)."""
    pad = resample_padding(resample_filter) if pad is None else pad
    n, h, w, c = x.shape
    if _is_box(resample_filter, pad):
        return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)
    f = 4 * _filter_2d(resample_filter, np.float32)
    k = f.shape[0]
    # conv_transpose2d(stride 2, padding p) == correlation of the 2x-dilated input with the
    # flipped kernel and padding k - 1 - p (the filter is symmetric, so no flip is needed).
    kernel = jnp.broadcast_to(jnp.asarray(f[::-1, ::-1].copy(), x.dtype)[:, :, None, None], f.shape + (1, c))
    edge = k - 1 - pad
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=[(edge, edge), (edge, edge)], lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
    )
