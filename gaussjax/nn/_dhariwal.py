"""ADM U-Net (Dhariwal & Nichol 2021) as reimplemented in NVlabs/edm (`DhariwalUNet`), in Flax, NHWC."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._errors import InputValueError
from gaussjax.nn._block import UNetBlock
from gaussjax.nn._conv import Conv2d
from gaussjax.nn._embedding import PositionalEmbedding
from gaussjax.nn._norm import GroupNorm, check_group_norm_channels
from gaussjax.nn._rng import bit_generator_key
from gaussjax.nn._unet import check_network_inputs, check_unet_fields

CHANNELS_PER_HEAD = 64  # ADM's attention head width: a block with C output channels gets C // 64 heads
_ZERO_LAYERS = frozenset({"conv1", "proj"})  # last layer of each residual / attention branch (EDM's init_zero)


@dataclasses.dataclass(frozen=True)
class _Block:
    """One UNetBlock of the encoder or decoder, in execution order (EDM's ModuleDict entries)."""

    name: str
    in_channels: int
    out_channels: int
    up: bool = False
    down: bool = False
    attention: bool = False


class DhariwalUNet(nn.Module):
    """The ADM U-Net of NVlabs/edm's `DhariwalUNet` (its ImageNet-64 network), same arguments and parameters.

    ADM ("Diffusion Models Beat GANs", Dhariwal & Nichol 2021) is a U-Net of residual
    blocks whose noise/label embedding modulates each block through a scale and shift of
    its second group norm (`adaptive_scale`), with multi-head self-attention
    (`C // 64` heads of 64 channels) at `attn_resolutions` and at the lowest resolution,
    and resampling by residual blocks (2x2 mean pooling, nearest-neighbour upsampling).

    `F(x, noise_labels, class_labels, augment_labels) -> (N, H, W, out_channels)` for
    `x (N, H, W, in_channels)` (NHWC), `H = W = img_resolution`, `noise_labels (N,)`,
    `class_labels (N, label_dim)` (required when `label_dim > 0`, e.g. one-hot),
    `augment_labels (N, augment_dim)` (optional; omitted means zeros, as EDM skipping
    the layer). Layer names, parameter shapes and initialization follow EDM layer for
    layer (`enc['32x32_block0']` is `enc_32x32_block0`), so parameter counts match and
    an EDM state dict maps onto the parameters with `variables_from_state_dict`.
    Kernels are `(k, k, C_in, C_out)`; attention `qkv` channels keep EDM's
    (head, channel, q/k/v) order.

    Differences from EDM: `conv_impl` (not an EDM argument) picks the formulation of the
    3x3 convolutions without changing parameters or results (see `gaussjax.nn._conv`);
    dropout and label dropout draw from the `'dropout'` PRNG stream when `train=True`;
    a block at an attention resolution with fewer than 64 channels has no attention
    (EDM's `C // 64 = 0` heads), silently, as in EDM.

    Initialization as EDM's: weights and biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    (EDM's kaiming-uniform times `sqrt(1/3)`), zeros for the last layer of every
    residual and attention branch, the output convolution and `map_augment`, and
    `N(0, 1)` for `map_label`; group norms start at scale 1, bias 0.
    """

    img_resolution: int                  # Image resolution at input/output.
    in_channels: int                     # Number of color channels at input.
    out_channels: int                    # Number of color channels at output.
    label_dim: int = 0                   # Number of class labels, 0 = unconditional.
    augment_dim: int = 0                 # Augmentation label dimensionality, 0 = no augmentation.

    model_channels: int = 192            # Base multiplier for the number of channels.
    channel_mult: tuple = (1, 2, 3, 4)   # Per-resolution multipliers for the number of channels.
    channel_mult_emb: int = 4            # Multiplier for the dimensionality of the embedding vector.
    num_blocks: int = 3                  # Number of residual blocks per resolution.
    attn_resolutions: tuple = (32, 16, 8)  # Resolutions with self-attention.
    dropout: float = 0.10                # Dropout probability of intermediate activations.
    label_dropout: float = 0.0           # Dropout probability of class labels (classifier-free guidance).

    conv_impl: str = "auto"              # 3x3 convolutions: 'xla', 'matmul' (im2col) or 'auto' (matmul on CPU).

    def __post_init__(self):
        for name in ("channel_mult", "attn_resolutions"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(np.asarray(value).tolist()))
        _validate(self)
        super().__post_init__()

    @property
    def emb_channels(self) -> int:
        return self.model_channels * self.channel_mult_emb

    @nn.compact
    def __call__(self, x, noise_labels, class_labels=None, augment_labels=None, *, train: bool = False):
        n = check_network_inputs(self, x, noise_labels, class_labels, augment_labels)
        encoder, decoder = _plan(self)
        init_key = self.make_rng("params") if self.is_initializing() else None

        def layer(cls, name, **kwargs):
            """`cls(name=name, **kwargs)` whose parameters are re-drawn at init with EDM's ADM initialization."""
            wrapped = nn.map_variables(cls, "params", trans_out_fn=functools.partial(
                adm_initialization, key=None if init_key is None else jax.random.fold_in(init_key, _seed(name))),
                init=self.is_initializing())
            return wrapped(name=name, **kwargs)

        # Mapping.
        emb = PositionalEmbedding(self.model_channels, endpoint=False, name="map_noise")(noise_labels)
        if self.augment_dim:
            # Without augment labels EDM skips this layer; it has no bias, so zeros are the same.
            if augment_labels is None:
                augment_labels = jnp.zeros((n, self.augment_dim), emb.dtype)
            emb = emb + nn.Dense(self.model_channels, use_bias=False, kernel_init=nn.initializers.zeros,
                                 name="map_augment")(augment_labels.astype(emb.dtype))
        emb = jax.nn.silu(layer(nn.Dense, "map_layer0", features=self.emb_channels)(emb))
        emb = layer(nn.Dense, "map_layer1", features=self.emb_channels)(emb)
        if self.label_dim:
            labels = class_labels.astype(emb.dtype)
            if train and self.label_dropout:
                keep = jax.random.uniform(self.make_rng("dropout"), (n, 1)) >= self.label_dropout
                labels = labels * keep.astype(labels.dtype)
            # EDM: kaiming-normal times sqrt(label_dim), i.e. N(0, 1).
            emb = emb + nn.Dense(self.emb_channels, use_bias=False, kernel_init=nn.initializers.normal(1.0),
                                 name="map_label")(labels)
        emb = jax.nn.silu(emb)

        # Encoder.
        res = self.img_resolution
        x = layer(Conv2d, f"enc_{res}x{res}_conv", features=self.model_channels * self.channel_mult[0],
                  kernel_size=3, conv_impl=self.conv_impl)(x)
        skips = [x]
        for block in encoder:
            x = self._block(layer, block)(x, emb, train=train)
            skips.append(x)

        # Decoder.
        for block in decoder:
            if x.shape[-1] != block.in_channels:
                x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = self._block(layer, block)(x, emb, train=train)
        x = jax.nn.silu(GroupNorm(eps=1e-5, name="out_norm")(x))
        return Conv2d(self.out_channels, 3, init_weight=0.0, conv_impl=self.conv_impl, name="out_conv")(x)

    def _block(self, layer, block: _Block):
        return layer(UNetBlock, block.name, out_channels=block.out_channels, up=block.up, down=block.down,
                     num_heads=block.out_channels // CHANNELS_PER_HEAD if block.attention else 0,
                     dropout=self.dropout, skip_scale=1.0, eps=1e-5, resample_filter=(1, 1), resample_proj=False,
                     adaptive_scale=True, conv_impl=self.conv_impl)


def _seed(name: str) -> int:
    """A deterministic 31-bit integer from a layer name (to fold into the init key)."""
    return int.from_bytes(name.encode(), "little") % (2**31 - 1)


def adm_initialization(params: dict, key) -> dict:
    """EDM's ADM initialization of one layer's (or block's) parameter tree, re-drawn from `key`.

    Every sub-layer with a `kernel` (shape `(..., fan_in_last, C_out)`, `fan_in` the
    product of all but the last axis) gets kernel and bias `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    (EDM's `kaiming_uniform` with `init_weight = init_bias = sqrt(1/3)`), except the
    zero-initialized `conv1` and `proj` (EDM's `init_zero`); other leaves (group norm
    scale and bias) are kept. `key` is None when not initializing: `params` is returned as is.
    """
    if key is None:
        return params
    key = bit_generator_key(key)

    def draw(tree: Mapping, path: tuple) -> dict:
        out: dict = {}
        for name, value in tree.items():
            if isinstance(value, Mapping):
                out[name] = draw(value, path + (name,))
            else:
                out[name] = value
        if "kernel" in tree:
            kernel = tree["kernel"]
            fan_in = int(np.prod(kernel.shape[:-1]))
            layer_key = jax.random.fold_in(key, _seed("/".join(path)))
            for j, leaf in enumerate(("kernel", "bias")):
                if leaf in tree:
                    if path and path[-1] in _ZERO_LAYERS:
                        out[leaf] = jnp.zeros_like(tree[leaf])
                    else:
                        bound = 1 / np.sqrt(fan_in)
                        out[leaf] = jax.random.uniform(jax.random.fold_in(layer_key, j), tree[leaf].shape,
                                                       tree[leaf].dtype, -bound, bound)
        return out

    return draw(params, ())


def _plan(config: DhariwalUNet) -> tuple[list[_Block], list[_Block]]:
    """The encoder's and decoder's UNetBlocks in execution order, mirroring EDM's construction loops.

    The encoder's first layer, the `enc_{R}x{R}_conv` convolution to
    `model_channels * channel_mult[0]` channels, is not listed.
    """
    mc, r = config.model_channels, config.img_resolution
    levels = len(config.channel_mult)
    encoder = []
    cout = mc * config.channel_mult[0]
    skips = [cout]
    for level, mult in enumerate(config.channel_mult):
        res = r >> level
        tag = f"enc_{res}x{res}"
        if level:
            encoder.append(_Block(f"{tag}_down", cout, cout, down=True))
        for idx in range(config.num_blocks):
            cin, cout = cout, mc * mult
            encoder.append(_Block(f"{tag}_block{idx}", cin, cout, attention=res in config.attn_resolutions))
    skips += [block.out_channels for block in encoder]

    decoder = []
    for level, mult in reversed(list(enumerate(config.channel_mult))):
        res = r >> level
        tag = f"dec_{res}x{res}"
        if level == levels - 1:
            decoder.append(_Block(f"{tag}_in0", cout, cout, attention=True))
            decoder.append(_Block(f"{tag}_in1", cout, cout))
        else:
            decoder.append(_Block(f"{tag}_up", cout, cout, up=True))
        for idx in range(config.num_blocks + 1):
            cin, cout = cout + skips.pop(), mc * mult
            decoder.append(_Block(f"{tag}_block{idx}", cin, cout, attention=res in config.attn_resolutions))
    return encoder, decoder


def _validate(config: DhariwalUNet) -> None:
    """Raise a clear error for a configuration EDM would reject or that cannot run."""
    check_unet_fields(config)
    if config.model_channels % 2:
        raise InputValueError(f"the noise embedding needs an even number of channels; model_channels = "
                              f"{config.model_channels}")
    encoder, decoder = _plan(config)
    for block in encoder + decoder:
        check_group_norm_channels(block.in_channels, f"{block.name} (input)")
        check_group_norm_channels(block.out_channels, f"{block.name} (output)")
