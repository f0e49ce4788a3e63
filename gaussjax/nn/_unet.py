"""DDPM++ / NCSN++ U-Net (Song et al. 2021) as reimplemented in NVlabs/edm, in Flax, NHWC."""

from __future__ import annotations

import dataclasses
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_choice, check_nonnegative_int, check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.nn._block import INIT_ZERO, UNetBlock
from gaussjax.nn._conv import CONV_IMPLS, Conv2d
from gaussjax.nn._embedding import FourierEmbedding, PositionalEmbedding
from gaussjax.nn._init import xavier_uniform
from gaussjax.nn._norm import GroupNorm, check_group_norm_channels
from gaussjax.nn._resample import downsample, upsample


@dataclasses.dataclass(frozen=True)
class _Step:
    """One layer of the encoder or decoder, in execution order (EDM's ModuleDict entries)."""

    kind: str  # 'conv', 'block', 'aux_down', 'aux_skip', 'aux_residual', 'aux_up', 'aux_norm', 'aux_conv'
    name: str
    in_channels: int = 0
    out_channels: int = 0
    up: bool = False
    down: bool = False
    attention: bool = False
    concat_skip: bool = False  # decoder blocks that take the next encoder skip connection


class SongUNet(nn.Module):
    """The DDPM++ (default) / NCSN++ U-Net of NVlabs/edm's `SongUNet`, same arguments and parameters.

    `F(x, noise_labels) -> (N, H, W, out_channels)` for `x (N, H, W, in_channels)` (NHWC),
    `H = W = img_resolution`, `noise_labels (N,)` (EDM's `c_noise = ln(sigma) / 4`). The
    structure, layer names, parameter shapes and initialization follow EDM layer for
    layer (see `_plan`), so parameter counts match exactly; kernels are `(k, k, C_in,
    C_out)` and the attention `qkv` channels keep EDM's (head, channel, q/k/v) order.

    `conv_impl` (not an EDM argument) picks the formulation of the 3x3 convolutions
    without changing parameters or results: see `gaussjax.nn._conv`.

    The constant Fourier frequencies of `embedding_type='fourier'` (an EDM buffer) are
    not parameters here either: `fourier_freqs` (see `FourierEmbedding`). Dropout, and label dropout,
    draw from the `'dropout'` PRNG stream when `train=True`.
    """

    img_resolution: int                  # Image resolution at input/output.
    in_channels: int                     # Number of color channels at input.
    out_channels: int                    # Number of color channels at output.
    label_dim: int = 0                   # Number of class labels, 0 = unconditional.
    augment_dim: int = 0                 # Augmentation label dimensionality, 0 = no augmentation.

    model_channels: int = 128            # Base multiplier for the number of channels.
    channel_mult: tuple = (1, 2, 2, 2)   # Per-resolution multipliers for the number of channels.
    channel_mult_emb: int = 4            # Multiplier for the dimensionality of the embedding vector.
    num_blocks: int = 4                  # Number of residual blocks per resolution.
    attn_resolutions: tuple = (16,)      # Resolutions with self-attention.
    dropout: float = 0.10                # Dropout probability of intermediate activations.
    label_dropout: float = 0.0           # Dropout probability of class labels (classifier-free guidance).

    embedding_type: str = "positional"   # 'positional' for DDPM++, 'fourier' for NCSN++.
    channel_mult_noise: int = 1          # Timestep embedding size: 1 for DDPM++, 2 for NCSN++.
    encoder_type: str = "standard"       # 'standard' for DDPM++, 'residual' for NCSN++, or 'skip'.
    decoder_type: str = "standard"       # 'standard' for both DDPM++ and NCSN++, or 'skip'.
    resample_filter: tuple = (1, 1)      # Resampling filter: (1, 1) for DDPM++, (1, 3, 3, 1) for NCSN++.
    conv_impl: str = "auto"              # 3x3 convolutions: 'xla', 'matmul' (im2col) or 'auto' (matmul on CPU).
    fourier_freqs: tuple = ()            # 'fourier' only: the frequencies (EDM's map_noise.freqs); () draws them.

    def __post_init__(self):
        for name in ("channel_mult", "attn_resolutions", "resample_filter", "fourier_freqs"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(np.asarray(value).tolist()))
        _validate(self)
        super().__post_init__()

    @property
    def emb_channels(self) -> int:
        return self.model_channels * self.channel_mult_emb

    @property
    def noise_channels(self) -> int:
        return self.model_channels * self.channel_mult_noise

    @nn.compact
    def __call__(self, x, noise_labels, class_labels=None, augment_labels=None, *, train: bool = False):
        n = check_network_inputs(self, x, noise_labels, class_labels, augment_labels)
        encoder, decoder = _plan(self)
        block_kwargs = {
            "num_heads": 0, "dropout": self.dropout, "skip_scale": float(np.sqrt(0.5)), "eps": 1e-6,
            "resample_filter": self.resample_filter, "resample_proj": True, "adaptive_scale": False,
            "conv_impl": self.conv_impl,
        }
        dense = {"kernel_init": xavier_uniform()}

        # Mapping.
        if self.embedding_type == "positional":
            emb = PositionalEmbedding(self.noise_channels, endpoint=True, name="map_noise")(noise_labels)
        else:
            emb = FourierEmbedding(self.noise_channels, freqs=self.fourier_freqs, name="map_noise")(noise_labels)
        emb = jnp.flip(emb.reshape(n, 2, -1), axis=1).reshape(emb.shape)  # swap sin/cos
        if self.label_dim:
            labels = class_labels.astype(emb.dtype)
            if train and self.label_dropout:
                keep = jax.random.uniform(self.make_rng("dropout"), (n, 1)) >= self.label_dropout
                labels = labels * keep.astype(labels.dtype)
            emb = emb + nn.Dense(self.noise_channels, name="map_label", **dense)(labels * np.sqrt(self.label_dim))
        if self.augment_dim:
            # Without augment labels EDM skips this layer; it has no bias, so zeros are the same.
            if augment_labels is None:
                augment_labels = jnp.zeros((n, self.augment_dim), emb.dtype)
            emb = emb + nn.Dense(self.noise_channels, use_bias=False, name="map_augment", **dense)(
                augment_labels.astype(emb.dtype))
        emb = jax.nn.silu(nn.Dense(self.emb_channels, name="map_layer0", **dense)(emb))
        emb = jax.nn.silu(nn.Dense(self.emb_channels, name="map_layer1", **dense)(emb))

        # Encoder.
        skips: list[jax.Array] = []
        aux = x
        for step in encoder:
            if step.kind == "aux_down":
                aux = downsample(aux, self.resample_filter)
            elif step.kind == "aux_skip":
                x = skips[-1] = x + Conv2d(step.out_channels, 1, name=step.name)(aux)
            elif step.kind == "aux_residual":
                residual = Conv2d(step.out_channels, 3, down=True, resample_filter=self.resample_filter,
                                  fused_resample=True, conv_impl=self.conv_impl, name=step.name)(aux)
                x = skips[-1] = aux = (x + residual) / np.sqrt(2)
            elif step.kind == "conv":
                x = Conv2d(step.out_channels, 3, conv_impl=self.conv_impl, name=step.name)(x)
                skips.append(x)
            else:
                x = self._block(step, block_kwargs)(x, emb, train=train)
                skips.append(x)

        # Decoder.
        aux = None
        tmp = None
        for step in decoder:
            if step.kind == "aux_up":
                assert aux is not None  # `_plan` puts an aux_conv before every aux_up
                aux = upsample(aux, self.resample_filter)
            elif step.kind == "aux_norm":
                tmp = GroupNorm(eps=1e-6, name=step.name)(x)
            elif step.kind == "aux_conv":
                assert tmp is not None  # `_plan` puts an aux_norm before every aux_conv
                tmp = Conv2d(self.out_channels, 3, init_weight=INIT_ZERO, conv_impl=self.conv_impl,
                             name=step.name)(jax.nn.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if step.concat_skip:
                    x = jnp.concatenate([x, skips.pop()], axis=-1)
                x = self._block(step, block_kwargs)(x, emb, train=train)
        return aux

    def _block(self, step: _Step, block_kwargs: dict) -> UNetBlock:
        kwargs = dict(block_kwargs, num_heads=1 if step.attention else 0)
        return UNetBlock(step.out_channels, up=step.up, down=step.down, name=step.name, **kwargs)


def _plan(config: SongUNet) -> tuple[list[_Step], list[_Step]]:
    """The encoder and decoder layers in execution order, mirroring EDM's construction loops."""
    mc, r = config.model_channels, config.img_resolution
    levels = len(config.channel_mult)
    encoder = []
    cout = caux = config.in_channels
    for level, mult in enumerate(config.channel_mult):
        res = r >> level
        tag = f"enc_{res}x{res}"
        if level == 0:
            cin, cout = cout, mc
            encoder.append(_Step("conv", f"{tag}_conv", cin, cout))
        else:
            encoder.append(_Step("block", f"{tag}_down", cout, cout, down=True))
            if config.encoder_type == "skip":
                encoder.append(_Step("aux_down", f"{tag}_aux_down", caux, caux))
                encoder.append(_Step("aux_skip", f"{tag}_aux_skip", caux, cout))
            if config.encoder_type == "residual":
                encoder.append(_Step("aux_residual", f"{tag}_aux_residual", caux, cout))
                caux = cout
        for idx in range(config.num_blocks):
            cin, cout = cout, mc * mult
            encoder.append(_Step("block", f"{tag}_block{idx}", cin, cout, attention=res in config.attn_resolutions))
    skips = [s.out_channels for s in encoder if not s.kind.startswith("aux")]

    decoder = []
    for level, mult in reversed(list(enumerate(config.channel_mult))):
        res = r >> level
        tag = f"dec_{res}x{res}"
        if level == levels - 1:
            decoder.append(_Step("block", f"{tag}_in0", cout, cout, attention=True))
            decoder.append(_Step("block", f"{tag}_in1", cout, cout))
        else:
            decoder.append(_Step("block", f"{tag}_up", cout, cout, up=True))
        for idx in range(config.num_blocks + 1):
            cin, cout = cout + skips.pop(), mc * mult
            attention = idx == config.num_blocks and res in config.attn_resolutions
            decoder.append(_Step("block", f"{tag}_block{idx}", cin, cout, attention=attention, concat_skip=True))
        if config.decoder_type == "skip" or level == 0:
            if config.decoder_type == "skip" and level < levels - 1:
                decoder.append(_Step("aux_up", f"{tag}_aux_up", config.out_channels, config.out_channels))
            decoder.append(_Step("aux_norm", f"{tag}_aux_norm", cout, cout))
            decoder.append(_Step("aux_conv", f"{tag}_aux_conv", cout, config.out_channels))
    return encoder, decoder


def _check_probability(name: str, value) -> None:
    # (typeshed's numbers.Real, unlike float, supports neither `int <= Real` nor np.isfinite)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:  # type: ignore[operator]
        raise InputValueError(f"`{name}` must be a probability in [0, 1), got {value!r}")


def _check_int_tuple(name: str, value, *, nonempty: bool) -> None:
    if not isinstance(value, tuple) or (nonempty and not value):
        raise InputTypeError(f"`{name}` must be a{' non-empty' if nonempty else ''} tuple of integers, got {value!r}")
    for i, item in enumerate(value):
        check_positive_int(f"{name}[{i}]", item)


def check_network_inputs(net, x, noise_labels, class_labels, augment_labels) -> int:
    """Validate the inputs of a U-Net `net` (SongUNet or DhariwalUNet) and return the batch size N."""
    r, c = net.img_resolution, net.in_channels
    if x.ndim != 4 or x.shape[1:] != (r, r, c):
        raise InputValueError(f"`x` must have shape (N, {r}, {r}, {c}) (NHWC), got {x.shape}")
    n = x.shape[0]
    if noise_labels.shape != (n,):
        raise InputValueError(f"`noise_labels` must have shape (N,) = ({n},), got {noise_labels.shape}")
    if net.label_dim:
        if class_labels is None:
            raise InputValueError(f"`class_labels` (N, {net.label_dim}) are required: label_dim = {net.label_dim}")
        if class_labels.shape != (n, net.label_dim):
            raise InputValueError(f"`class_labels` must have shape ({n}, {net.label_dim}), got {class_labels.shape}")
    if augment_labels is not None and net.augment_dim and augment_labels.shape != (n, net.augment_dim):
        raise InputValueError(f"`augment_labels` must have shape ({n}, {net.augment_dim}), got {augment_labels.shape}")
    return n


def check_unet_fields(config) -> None:
    """The arguments SongUNet and DhariwalUNet share: types, ranges, and a resolution that halves evenly."""
    r = check_positive_int("img_resolution", config.img_resolution)
    check_positive_int("in_channels", config.in_channels)
    check_positive_int("out_channels", config.out_channels)
    check_nonnegative_int("label_dim", config.label_dim)
    check_nonnegative_int("augment_dim", config.augment_dim)
    check_positive_int("model_channels", config.model_channels)
    _check_int_tuple("channel_mult", config.channel_mult, nonempty=True)
    check_positive_int("channel_mult_emb", config.channel_mult_emb)
    check_nonnegative_int("num_blocks", config.num_blocks)
    _check_int_tuple("attn_resolutions", config.attn_resolutions, nonempty=False)
    _check_probability("dropout", config.dropout)
    _check_probability("label_dropout", config.label_dropout)
    check_choice("conv_impl", config.conv_impl, CONV_IMPLS)
    factor = 2 ** (len(config.channel_mult) - 1)
    if r % factor:
        raise InputValueError(
            f"`img_resolution` ({r}) must be divisible by 2**(len(channel_mult) - 1) = {factor} "
            f"(channel_mult = {config.channel_mult} has {len(config.channel_mult)} resolutions)"
        )


def _validate(config: SongUNet) -> None:
    """Raise a clear error for a configuration EDM would reject or that cannot run."""
    check_unet_fields(config)
    check_choice("embedding_type", config.embedding_type, ("positional", "fourier"))
    check_positive_int("channel_mult_noise", config.channel_mult_noise)
    if config.fourier_freqs and (config.embedding_type != "fourier"
                                 or len(config.fourier_freqs) != config.noise_channels // 2):
        raise InputValueError(
            f"`fourier_freqs` must be empty or, with embedding_type='fourier', hold model_channels * "
            f"channel_mult_noise / 2 = {config.noise_channels // 2} numbers; got {len(config.fourier_freqs)} "
            f"with embedding_type={config.embedding_type!r}"
        )
    bad = [v for v in config.fourier_freqs
           if not (isinstance(v, numbers.Real) and np.isfinite(v))]  # type: ignore[call-overload]  # see _check_probability
    if bad:
        raise InputValueError(f"`fourier_freqs` must be finite numbers, got {bad[0]!r}")
    check_choice("encoder_type", config.encoder_type, ("standard", "skip", "residual"))
    check_choice("decoder_type", config.decoder_type, ("standard", "skip"))
    f = config.resample_filter
    if (not isinstance(f, tuple) or len(f) < 2 or len(f) % 2
            or not all(isinstance(v, numbers.Real) and v > 0 for v in f)):  # type: ignore[operator]  # see _check_probability
        raise InputValueError(f"`resample_filter` must be a tuple of an even number (>= 2) of positive taps, got {f!r}")
    if config.noise_channels % 2:
        raise InputValueError(
            f"the noise embedding needs an even number of channels; model_channels * channel_mult_noise = "
            f"{config.noise_channels}"
        )
    encoder, decoder = _plan(config)
    for step in encoder + decoder:
        if step.kind == "block":
            check_group_norm_channels(step.in_channels, f"{step.name} (input)")
            check_group_norm_channels(step.out_channels, f"{step.name} (output)")
        elif step.kind == "aux_norm":
            check_group_norm_channels(step.in_channels, step.name)
