"""Building blocks against direct NumPy formulas: resampling, group norm, embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.nn._conv import conv2d, resolve_conv_impl
from gaussjax.nn._embedding import PositionalEmbedding
from gaussjax.nn._norm import GroupNorm
from gaussjax.nn._resample import downsample, upsample
from gaussjax.nn._rng import bit_generator_key


def _depthwise_reference(x, f2, stride, pad, dilate):
    """Plain-loop NHWC depthwise correlation with zero padding and optional input dilation (conv_transpose)."""
    n, h, w, c = x.shape
    if dilate > 1:
        d = np.zeros((n, (h - 1) * dilate + 1, (w - 1) * dilate + 1, c), x.dtype)
        d[:, ::dilate, ::dilate] = x
        x = d
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = f2.shape[0]
    oh, ow = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, i, j] = np.einsum("nabc,ab->nc", patch, f2)
    return out


@pytest.mark.parametrize("taps", [(1, 1), (1, 3, 3, 1)])
def test_resampling_matches_torch_semantics(taps):
    """EDM: conv2d(f, stride 2, pad (L-1)//2) down; conv_transpose2d(4 f, stride 2, same pad) up."""
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype(np.float32)
    f = np.asarray(taps, np.float64)
    f2 = np.outer(f, f) / f.sum() ** 2
    pad = (len(taps) - 1) // 2
    down = downsample(jnp.asarray(x), taps)
    np.testing.assert_allclose(down, _depthwise_reference(x, f2, 2, pad, 1), atol=1e-6)
    assert down.shape == (2, 3, 2, 3)
    # conv_transpose2d(stride 2, pad p) = correlation of the 2x-dilated input, padded k - 1 - p, with the flipped kernel
    up = upsample(jnp.asarray(x), taps)
    np.testing.assert_allclose(up, _depthwise_reference(x, 4 * f2[::-1, ::-1], 1, len(taps) - 1 - pad, 2), atol=1e-6)
    assert up.shape == (2, 12, 8, 3)


def test_box_filter_fast_path_equals_general_path():
    """(1, 1): average pooling / nearest upsampling by reshapes, same as the depthwise convolutions."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 5))
    np.testing.assert_allclose(downsample(x, (1, 1)), downsample(x, (1.0, 1.0 + 1e-12)), atol=1e-6)
    np.testing.assert_allclose(upsample(x, (1, 1)), upsample(x, (1.0, 1.0 + 1e-12)), atol=1e-6)
    np.testing.assert_array_equal(upsample(x, (1, 1))[:, 1::2, ::2], x)


@pytest.mark.parametrize("channels", [4, 24, 64, 96])
def test_group_norm(channels):
    x = np.random.default_rng(channels).normal(2.0, 3.0, size=(2, 4, 4, channels)).astype(np.float32)
    module = GroupNorm(eps=1e-6)
    variables = module.init(jax.random.key(0), x)
    scale = np.linspace(0.5, 1.5, channels, dtype=np.float32)
    bias = np.linspace(-1, 1, channels, dtype=np.float32)
    out = module.apply({"params": {"scale": scale, "bias": bias}}, jnp.asarray(x))
    groups = min(32, channels // 4)
    xg = x.astype(np.float64).reshape(2, 4, 4, groups, channels // groups)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    expected = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * scale + bias
    np.testing.assert_allclose(out, expected, atol=2e-5)
    assert variables["params"]["scale"].shape == (channels,)


def test_positional_embedding():
    x = jnp.asarray([-1.5, 0.0, 2.0])
    out = PositionalEmbedding(8, endpoint=True).apply({}, x)
    freqs = (1 / 10000) ** (np.arange(4) / 3)  # endpoint: the last frequency is exactly 1 / max_positions
    angles = np.asarray(x)[:, None] * freqs[None, :]
    np.testing.assert_allclose(out, np.concatenate([np.cos(angles), np.sin(angles)], axis=1), atol=1e-6)


def test_bit_generator_key():
    key = jax.random.key(3)
    a = bit_generator_key(key)
    assert jax.random.key_impl(a) == "rbg" and bit_generator_key(a) is a
    same = bit_generator_key(jax.random.key_data(key))  # legacy uint32 key data
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(same))
    bits = [np.asarray(jax.random.bits(bit_generator_key(jax.random.key(k)), (64,))) for k in (3, 3, 4)]
    np.testing.assert_array_equal(bits[0], bits[1])
    assert not np.array_equal(bits[0], bits[2])


@pytest.mark.parametrize("k, padding", [(3, 1), (3, 0), (3, 2), (1, 1)])
@pytest.mark.slow
def test_matmul_convolution_equals_xla_convolution(k, padding):
    """im2col (`conv_impl='matmul'`) is the same convolution as lax.conv_general_dilated, gradients included."""
    x = jax.random.normal(jax.random.key(0), (3, 6, 5, 4))
    w = jax.random.normal(jax.random.key(1), (k, k, 4, 7))
    cot = jax.random.normal(jax.random.key(2), conv2d(x, w, padding, "xla").shape)

    def pullback(impl):
        out, vjp = jax.vjp(lambda x, w: conv2d(x, w, padding, impl), x, w)
        return (out, *vjp(cot))

    for a, b in zip(pullback("matmul"), pullback("xla"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert resolve_conv_impl("auto") == ("matmul" if jax.default_backend() == "cpu" else "xla")
