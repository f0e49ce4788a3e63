"""The InceptionV3 of FID (pytorch-fid's `InceptionV3`, `use_fid_inception=True`) in Flax, NHWC.

FID compares statistics of the 2048-d "pool3" features of one particular network: the
2015-12-05 TensorFlow Inception graph, ported to PyTorch by pytorch-fid. That port is
torchvision's `Inception3` with four patched block types (TensorFlow's graph differs):

- `Mixed_5b/5c/5d` (InceptionA), `Mixed_6b..6e` (InceptionC) and `Mixed_7b` (InceptionE):
  the 3x3 average pool of the pool branch ignores the zero padding
  (`count_include_pad=False`);
- `Mixed_7c` (InceptionE): the pool branch max-pools instead.

`InceptionV3` below is that network up to the global average pool, with torchvision's
layer names, so a state-dict entry `Mixed_6b.branch7x7_2.conv.weight` is the Flax variable
`Mixed_6b/branch7x7_2/conv/kernel` (see `gaussjax._torch._to_flax`). Every
convolution is a `BasicConv2d`: convolution without bias, batch norm (eps 0.001, running
statistics) and ReLU. Images are first resized to 299x299 exactly as pytorch-fid does
(`torch.nn.functional.interpolate`, bilinear, `align_corners=False`, no antialiasing).

`load_inception(path)` reads pytorch-fid's weight file; `inception_from_state_dict` builds
the same `InceptionFeatures` from arrays already in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_images as _check_images
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._torch import inception_shapes as torch_shapes
from gaussjax._torch import inception_variables as variables_from_torch
from gaussjax._torch import read_torch_state_dict

__all__ = ["FEATURES", "INPUT_SIZE", "InceptionFeatures", "InceptionV3", "expected_state_dict_shapes",
           "inception_from_state_dict", "load_inception", "resize_bilinear", "resize_matrix"]

INPUT_SIZE = 299   # pytorch-fid resizes every image to 299x299
FEATURES = 2048    # pool3 features
BN_EPSILON = 1e-3  # BasicConv2d's BatchNorm2d(eps=0.001)


# ---------------------------------------------------------------------------------------------------------------
# Resizing.


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The `(out_size, in_size)` float32 matrix of torch's 1-D bilinear resize (`align_corners=False`).

    Output sample `i` reads the input at `src = (i + 0.5) * in_size / out_size - 0.5`, clamped
    at 0, and mixes samples `floor(src)` and `min(floor(src) + 1, in_size - 1)` with weights
    `1 - frac(src)` and `frac(src)`. No antialiasing when shrinking (torch's default), so
    downsampling skips samples exactly as `F.interpolate` does. The arithmetic is torch's
    CPU kernel's: the scale in float32, `src` rounded once to float32 (a fused multiply-add),
    the weights in float32, so the matrix equals torch's weights bitwise (they differ from
    a float64 evaluation by up to a float32 ulp of `src`, ~`in_size * 6e-8`).
    """
    if in_size < 1 or out_size < 1:
        raise InputValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)  # exact in float64, rounded once
    src = np.maximum(src, np.float32(0))
    low = np.minimum(src.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low.astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), np.float32(1) - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def resize_bilinear(images: jax.Array, size: tuple[int, int], precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """Resize `(B, H, W, C)` images to `(B, *size, C)` as `F.interpolate(mode='bilinear', align_corners=False)`.

    Two small matrix products (`resize_matrix` along H, then W); an axis already at its
    target size is left untouched (torch's kernel is the identity there too).
    """
    _, height, width, _ = images.shape
    out_h, out_w = size
    if height != out_h:
        images = jnp.einsum("oh,bhwc->bowc", jnp.asarray(resize_matrix(height, out_h)), images, precision=precision)
    if width != out_w:
        images = jnp.einsum("pw,bhwc->bhpc", jnp.asarray(resize_matrix(width, out_w)), images, precision=precision)
    return images


# ---------------------------------------------------------------------------------------------------------------
# The network.


class BatchNorm(nn.Module):
    """Inference batch norm over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias`.

    Parameters `scale`, `bias` and the `batch_stats` `mean`, `var` (torch's `weight`, `bias`,
    `running_mean`, `running_var`), all `(C,)`.
    """

    epsilon: float = BN_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32).value
        gain = scale * jax.lax.rsqrt(var + self.epsilon)
        shape = (1,) * (x.ndim - 1) + (channels,)
        return x * gain.reshape(shape) + (bias - mean * gain).reshape(shape)


class BasicConv2d(nn.Module):
    """torchvision's `BasicConv2d`: `conv` (no bias) -> `bn` -> ReLU; NHWC, explicit zero padding."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad_h, pad_w = self.padding
        x = nn.Conv(self.features, self.kernel_size, self.strides, padding=((pad_h, pad_h), (pad_w, pad_w)),
                    use_bias=False, precision=self.precision, name="conv")(x)
        return nn.relu(BatchNorm(name="bn")(x))


def _max_pool_3x3(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=pad)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3x3, stride 1, pad 1 average over the window's in-image pixels only (`count_include_pad=False`)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
    """`Mixed_5b/5c/5d` (pytorch-fid's `FIDInceptionA`): 64 + 64 + 96 + `pool_features` channels."""

    pool_features: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, name="branch1x1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(conv(48, name="branch5x5_1")(x))
        b3 = conv(64, name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """`Mixed_6a` (torchvision's `InceptionB`): stride-2 reduction, 384 + 96 + C_in channels."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
    """`Mixed_6b..6e` (pytorch-fid's `FIDInceptionC`): factorized 7x7 branches, 4 x 192 channels."""

    channels_7x7: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        row, col = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        b1 = conv(192, name="branch1x1")(x)
        b7 = conv(c7, name="branch7x7_1")(x)
        b7 = conv(c7, **row, name="branch7x7_2")(b7)
        b7 = conv(192, **col, name="branch7x7_3")(b7)
        bd = conv(c7, name="branch7x7dbl_1")(x)
        bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = conv(192, **row, name="branch7x7dbl_5")(bd)
        bp = conv(192, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """`Mixed_7a` (torchvision's `InceptionD`): stride-2 reduction, 320 + 192 + C_in channels."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(conv(192, name="branch3x3_1")(x))
        b7 = conv(192, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
    """`Mixed_7b` (`FIDInceptionE_1`, `pool='avg'`) and `Mixed_7c` (`FIDInceptionE_2`, `pool='max'`).

    320 + 2 x 384 + 2 x 384 + 192 = 2048 channels; the pool branch pools 3x3 with stride 1
    and padding 1, averaging in-image pixels only (`'avg'`) or taking their maximum (`'max'`).
    """

    pool: str = "avg"
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        row, col = {"kernel_size": (1, 3), "padding": (0, 1)}, {"kernel_size": (3, 1), "padding": (1, 0)}
        b1 = conv(320, name="branch1x1")(x)
        b3 = conv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3), conv(384, **col, name="branch3x3_2b")(b3)],
                             axis=-1)
        bd = conv(448, name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(bd),
                              conv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3_same(x)
        elif self.pool == "max":
            pooled = _max_pool_3x3(x, 1, padding=1)
        else:
            raise InputValueError(f"InceptionE pool must be 'avg' or 'max', got {self.pool!r}")
        bp = conv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID's InceptionV3 up to the pool3 features: `(B, H, W, 3)` in [-1, 1] -> `(B, 2048)` float32.

    The input is resized to 299x299 first (`resize_bilinear`, as pytorch-fid's
    `resize_input=True`; pytorch-fid's `2x - 1` input scaling is already done: gaussjax
    images are in [-1, 1]). Then torchvision's stem (`Conv2d_1a_3x3` ... `Conv2d_4a_3x3`
    with two stride-2 3x3 max pools), `Mixed_5b` ... `Mixed_7c`, and the global average
    pool over the final 8x8 map. Variables: `params` (conv `kernel (kh, kw, C_in, C_out)`,
    bn `scale`, `bias`) and `batch_stats` (bn `mean`, `var`).

    `precision` is the precision of the convolutions and the resize: HIGHEST by default
    (true float32 also on GPU/TPU, whose default rounds inputs to TF32/bfloat16).
    """

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputValueError(f"images must be (B, H, W, 3), got shape {images.shape}")
        p = self.precision
        x = resize_bilinear(images.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE), precision=p)
        x = BasicConv2d(32, (3, 3), strides=(2, 2), precision=p, name="Conv2d_1a_3x3")(x)   # 149
        x = BasicConv2d(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)                    # 147
        x = BasicConv2d(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)    # 147
        x = _max_pool_3x3(x, 2)                                                               # 73
        x = BasicConv2d(80, precision=p, name="Conv2d_3b_1x1")(x)                            # 73
        x = BasicConv2d(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)                   # 71
        x = _max_pool_3x3(x, 2)                                                               # 35
        x = InceptionA(32, precision=p, name="Mixed_5b")(x)                                  # 256
        x = InceptionA(64, precision=p, name="Mixed_5c")(x)                                  # 288
        x = InceptionA(64, precision=p, name="Mixed_5d")(x)                                  # 288
        x = InceptionB(precision=p, name="Mixed_6a")(x)                                      # 17, 768
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels, precision=p, name=name)(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)                                      # 8, 1280
        x = InceptionE("avg", precision=p, name="Mixed_7b")(x)                               # 2048
        x = InceptionE("max", precision=p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ---------------------------------------------------------------------------------------------------------------
# Loading.


def expected_state_dict_shapes(module: InceptionV3 | None = None) -> dict[str, tuple[int, ...]]:
    """torch name -> torch shape of every entry FID's Inception state dict must hold (bn buffers included).

    Names as torchvision's `Inception3.state_dict()` (e.g. `Conv2d_1a_3x3.conv.weight`
    `(32, 3, 3, 3)`, `Conv2d_1a_3x3.bn.running_var (32,)`), without the ignored extras
    (`fc.*`, `*.num_batches_tracked`).
    """
    return torch_shapes(_variable_shapes(module or InceptionV3()))


@functools.lru_cache(maxsize=4)
def _variable_shapes(module: InceptionV3) -> dict:
    images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), images)


@dataclasses.dataclass(frozen=True, eq=False)
class InceptionFeatures:
    """FID's Inception network with its weights: `features(images) -> (B, 2048)` float32 pool3 features.

    Attributes:
        module: the Flax `InceptionV3`.
        variables: `{'params': ..., 'batch_stats': ...}` as JAX arrays.

    Call it on batches, `(B, H, W, 3)` float images in [-1, 1] (gaussjax's convention; any
    H, W: each image is resized to 299x299 as pytorch-fid does), or `(B, H, W, 1)`
    grayscale, repeated to 3 channels. Stream a data set through it batch by batch; each
    new batch shape compiles once. NaN or infinite values are refused (when concrete); the range is
    not checked.
    """

    module: InceptionV3
    variables: Mapping = dataclasses.field(repr=False)

    def __call__(self, images) -> jax.Array:
        """`(B, H, W, 3)` (or `(B, H, W, 1)`) float images in [-1, 1] -> `(B, 2048)` float32 features."""
        return _features(self.module, self.variables, check_images(images))


@functools.partial(jax.jit, static_argnums=0)
def _features(module: InceptionV3, variables: Mapping, images: jax.Array) -> jax.Array:
    """One compilation per (module, image shape), shared by every `InceptionFeatures` with equal modules."""
    return cast(jax.Array, module.apply(variables, images))


def check_images(images) -> jax.Array:
    """`images` as a float32 `(B, H, W, 3)` array; 1 channel is repeated to 3. Errors name `images`.

    `gaussjax._checks.check_images` (finite when concrete, no empty axis), on a float dtype
    (integer images are refused: their range is not gaussjax's [-1, 1]) with 1 or 3 channels.

    Raises:
        InputTypeError: a non-float dtype.
        InputValueError: not `(B, H, W, C)` with `B, H, W >= 1` and `C` 1 or 3, or NaN or infinite values.
    """
    dtype = getattr(images, "dtype", None)
    if dtype is None:
        images = np.asarray(images)
        dtype = images.dtype
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InputTypeError(f"`images` must be a float array in [-1, 1], got dtype {np.dtype(dtype)} "
                             "(convert uint8 images with x / 127.5 - 1)")
    images = _check_images("images", images)
    if images.shape[-1] not in (1, 3):
        raise InputValueError(f"`images` must be (B, H, W, 3) (or (B, H, W, 1) grayscale), NHWC, got shape "
                              f"{images.shape}")
    images = images.astype(jnp.float32)
    if images.shape[-1] == 1:
        images = jnp.broadcast_to(images, (*images.shape[:3], 3))
    return images


def inception_from_state_dict(state: Mapping[str, np.ndarray], *, precision=jax.lax.Precision.HIGHEST,
                              source: str = "the state dict") -> InceptionFeatures:
    """`InceptionFeatures` from FID Inception weights given as torch name -> array.

    Args:
        state: torchvision `Inception3` names as pytorch-fid's weight file holds them
            (`Conv2d_1a_3x3.conv.weight`, `Mixed_7c.branch_pool.bn.running_var`, ...), arrays
            in torch's layout (conv `(C_out, C_in, kh, kw)`), float16/32/64. `fc.weight`,
            `fc.bias` and `*.num_batches_tracked` are accepted and ignored.
        precision: of the convolutions and the resize (see `InceptionV3`).
        source: how errors name where `state` came from.

    Raises:
        ValueError: entries missing, unknown, of the wrong shape or dtype, not finite in
            float32, or running variances below 0 (all named).
    """
    module = InceptionV3(precision=precision)
    variables = variables_from_torch(state, _variable_shapes(module), source=source)
    return InceptionFeatures(module, jax.tree_util.tree_map(jnp.asarray, variables))


def load_inception(path: str | os.PathLike, *, precision=jax.lax.Precision.HIGHEST) -> InceptionFeatures:
    """Load FID's InceptionV3 from pytorch-fid's weight file, as `InceptionFeatures`.

    The file is pytorch-fid's release `pt_inception-2015-12-05-6726825d.pth`
    (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth),
    which you download yourself: nothing here downloads anything. Any `torch.save` of an
    equivalent state dict works (legacy or zip format). The file is read as data by
    `gaussjax._torch.read_torch_state_dict`: torch is not needed and no code
    from the file is executed (anything but tensors is refused).

    Input convention: `features(images)` takes `(B, H, W, 3)` NHWC float images in
    [-1, 1] (gaussjax's convention, not pytorch-fid's NCHW [0, 1]) of any size, resizes
    them to 299x299 exactly as pytorch-fid (bilinear, `align_corners=False`, no
    antialiasing) and returns the `(B, 2048)` float32 pool3 features pytorch-fid's
    `InceptionV3()` returns for the same images in [0, 1].

    Args:
        path: the `.pth` file.
        precision: of the convolutions and the resize (see `InceptionV3`).

    Raises:
        FileNotFoundError: `path` does not exist.
        UnsafePickleError: the file names a global outside the allow-list or holds non-tensors.
        ValueError: the file is not a torch state dict, or its entries do not fit the network
            (missing, unknown, mis-shaped or non-finite entries and negative running variances
            are listed); the message names `path`.
    """
    state = read_torch_state_dict(path)
    return inception_from_state_dict(state, precision=precision, source=f"{os.fspath(path)!r}")
