"""Training configurations: frozen dataclasses, one per named setting (paper Table 3, App. A.6)."""

from __future__ import annotations

import dataclasses
import json
import numbers

import numpy as np

PROBE_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 80.0, 16))  # the paper's MNIST probe grid
IMAGE_FIELDS = ("img_resolution", "in_channels", "out_channels", "label_dim")  # NetworkConfig fields set by the data


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The `SongUNet` (DDPM++) arguments of a run, written to `DIR/network.json`.

    A `TrainConfig` holds the architecture only (the `IMAGE_FIELDS` unset); `for_images`
    fills in the resolution and channels of the data. `kwargs()` gives the keyword
    arguments of `gaussjax.nn.SongUNet`. Values are checked on construction, and
    errors name the field.
    """

    img_resolution: int | None = None           # H = W of the images (from the data)
    in_channels: int | None = None              # C (from the data)
    out_channels: int | None = None             # C (from the data)
    label_dim: int = 0                          # class labels, 0 = unconditional
    model_channels: int = 128                   # base multiplier for the number of channels
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # per-resolution multipliers for the number of channels
    num_blocks: int = 4                         # residual blocks per resolution
    attn_resolutions: tuple[int, ...] = (16,)   # resolutions with self-attention
    dropout: float = 0.10                       # dropout probability of intermediate activations (training)

    def __post_init__(self):
        for name in ("channel_mult", "attn_resolutions"):  # JSON lists back to the tuples Flax modules hash
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("img_resolution", "in_channels", "out_channels"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("label_dim", self.label_dim, 0)
        _check_int("model_channels", self.model_channels, 1)
        _check_int("num_blocks", self.num_blocks, 0)
        for name, nonempty in (("channel_mult", True), ("attn_resolutions", False)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or (nonempty and not value):
                raise TypeError(f"`NetworkConfig.{name}` must be a {'non-empty ' * nonempty}tuple of positive "
                                f"integers, got {value!r}")
            for item in value:
                _check_int(name, item, 1)
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"`NetworkConfig.dropout` must be a probability in [0, 1), got {dropout!r}")

    def for_images(self, image_shape: tuple[int, int, int], label_dim: int = 0) -> NetworkConfig:
        """This architecture on square images of `image_shape (H, W, C)`, output channels = input channels."""
        height, width, channels = image_shape
        if height != width:
            raise ValueError(f"SongUNet needs square images; `image_shape` is {tuple(image_shape)}")
        return dataclasses.replace(self, img_resolution=height, in_channels=channels, out_channels=channels,
                                   label_dim=label_dim)

    def kwargs(self) -> dict:
        """Keyword arguments of `gaussjax.nn.SongUNet` (the image fields must be set: see `for_images`)."""
        missing = [name for name in ("img_resolution", "in_channels", "out_channels") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"NetworkConfig fields {', '.join(missing)} are not set; call `for_images` first")
        return dataclasses.asdict(self)

    def architecture(self) -> dict:
        """The data-independent fields, JSON-ready (how `TrainConfig.to_json` writes `network`)."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in IMAGE_FIELDS]
        return {name: _jsonable(getattr(self, name)) for name in names}

    def to_json(self) -> str:
        """`network.json`: every field, lists for tuples."""
        return json.dumps({k: _jsonable(v) for k, v in self.kwargs().items()}, indent=2)

    @classmethod
    def from_dict(cls, fields: dict) -> NetworkConfig:
        """From `to_json`'s or `architecture`'s mapping; unknown keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown NetworkConfig field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> NetworkConfig:
        return cls.from_dict(json.loads(text))


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`NetworkConfig.{name}` must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`NetworkConfig.{name}` must be >= {minimum}, got {value}")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (written to `DIR/config.json`)."""

    name: str                                   # config name (`--config`)
    dataset: str                                # gaussjax.data name
    network: NetworkConfig                      # SongUNet architecture (resolution and channels come from the data)
    dataset_options: dict = dataclasses.field(default_factory=dict)
    steps: int = 10_000                         # optimizer steps
    batch_size: int = 128                       # images per step (over all devices)
    lr: float = 2e-4                            # Adam learning rate
    lr_warmup_steps: int = 200                  # linear warm-up from 0 (EDM's lr_rampup)
    ema_halflife_images: float = 500_000.0      # EMA half-life in images (EDM: ema_halflife_kimg * 1000)
    ema_rampup_ratio: float = 0.05              # EMA half-life <= this fraction of images seen (EDM)
    grad_clip: float | None = None              # global-norm gradient clipping
    xflip: bool = False                         # random horizontal flips
    P_mean: float = -1.2                        # EDM lognormal training noise: ln sigma ~ N(P_mean, P_std^2)
    P_std: float = 1.2
    sigma_data: float = 0.5
    seed: int = 0
    num_checkpoints: int = 16                   # log-spaced checkpoints (plus step 0) unless checkpoint_every
    checkpoint_every: int | None = None
    log_every: int = 50                         # optimizer steps per loss.csv row (the host syncs once per row)
    probe_sigmas: tuple = PROBE_SIGMAS
    probe_queries: int = 256                    # query points per sigma (noised training images)
    probe_gmm_components: tuple = (2, 5, 10, 50)  # k-means GMMs compared with the network
    probe_gmm_rank: int | None = None           # rank of each GMM component (None: full)
    probe_delta: bool = True                    # also the exact training-set score

    def __post_init__(self):
        if isinstance(self.network, dict):  # the architecture fields, as in config.json
            object.__setattr__(self, "network", NetworkConfig.from_dict(self.network))
        if not isinstance(self.network, NetworkConfig):
            raise TypeError(f"`network` must be a NetworkConfig, got {type(self.network).__name__}")
        given = [name for name in IMAGE_FIELDS if getattr(self.network, name)]
        if given:
            raise ValueError(f"`network.{given[0]}` must be left unset in a TrainConfig (the data sets it)")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps(dict(fields, network=self.network.architecture()), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        fields = json.loads(text)
        for name in ("probe_sigmas", "probe_gmm_components"):
            fields[name] = tuple(fields[name])
        return cls(**fields)

    def validate(self, device_count: int = 1) -> None:
        """Refuse invalid values before any work starts."""
        for name in ("steps", "batch_size", "num_checkpoints", "log_every", "probe_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if self.batch_size % device_count:
            raise ValueError(f"`batch_size` = {self.batch_size} must be divisible by the device count {device_count}")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ValueError(f"`checkpoint_every` must be a positive integer, got {self.checkpoint_every}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"`grad_clip` must be > 0 or None, got {self.grad_clip}")
        if self.lr_warmup_steps < 0 or self.ema_halflife_images <= 0:
            raise ValueError("`lr_warmup_steps` must be >= 0 and `ema_halflife_images` > 0")


CONFIGS: dict[str, TrainConfig] = {
    # The default: scikit-learn's 8x8 digits, sized for about 10 minutes on a 2-core CPU (docs/training.md): the
    # 715k-parameter DDPM++ net, 2,000 steps of 128 (~180 epochs of the 1,442 training images).
    "digits": TrainConfig(
        name="digits",
        dataset="digits",
        network=NetworkConfig(
            model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0
        ),
        steps=2000,
        batch_size=128,
        lr=1e-3,
        lr_warmup_steps=100,
        ema_halflife_images=25_000.0,
        probe_queries=128,
    ),
    # RGB patches of natural photographs (embedded), 16x16x3.
    "patches": TrainConfig(
        name="patches",
        dataset="patches",
        network=NetworkConfig(
            model_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(), dropout=0.0
        ),
        steps=6000,
        batch_size=64,
        lr=1e-3,
        xflip=True,
        ema_halflife_images=50_000.0,
    ),
    # Paper Table 3, MNIST (mini-EDM): 32x32x1 (zero-padded), 25k steps, batch 128, Adam 2e-4.
    "mnist": TrainConfig(
        name="mnist",
        dataset="mnist",
        dataset_options={"pad_to": 32},
        network=NetworkConfig(
            model_channels=16, channel_mult=(1, 2, 3, 4), num_blocks=1, attn_resolutions=(), dropout=0.0
        ),
        steps=25_000,
        batch_size=128,
        lr=2e-4,
        lr_warmup_steps=1000,
        checkpoint_every=None,
    ),
    # Paper Table 3, CIFAR-10 (EDM config F, DDPM++): 20k steps of batch 256, Adam 1e-3 (GPU-sized).
    "cifar10": TrainConfig(
        name="cifar10",
        dataset="cifar10",
        network=NetworkConfig(
            model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13
        ),
        steps=20_000,
        batch_size=256,
        lr=1e-3,
        lr_warmup_steps=10_000_000 // 256,  # EDM lr_rampup_kimg = 10000
        ema_halflife_images=500_000.0,
        xflip=True,
        probe_gmm_components=(10, 100),
        probe_gmm_rank=256,
        probe_queries=128,
    ),
    # A tiny digits run for tests and smoke checks (seconds).
    "digits-tiny": TrainConfig(
        name="digits-tiny",
        dataset="digits",
        network=NetworkConfig(
            model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0
        ),
        steps=60,
        batch_size=32,
        lr=2e-3,
        lr_warmup_steps=5,
        ema_halflife_images=500.0,
        checkpoint_every=20,
        log_every=10,
        probe_sigmas=(0.05, 0.5, 5.0),
        probe_queries=32,
        probe_gmm_components=(2,),
    ),
}


def get_config(name: str) -> TrainConfig:
    """The named config; unknown names list the known ones."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}")
    return CONFIGS[name]


def with_overrides(config: TrainConfig, **overrides) -> TrainConfig:
    """`config` with the non-None (command-line) overrides applied."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
