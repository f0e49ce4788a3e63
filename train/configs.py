"""Training configurations: frozen dataclasses, one per named setting (paper Table 3, App. A.6)."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from pathlib import Path

import numpy as np

from gaussjax.scores.local_spec import check_local_spec

PROBE_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 80.0, 16))  # the paper's MNIST probe grid
MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits of a seed (without x64): larger seeds would collide
# `precision`: the train step's activation dtype ('bf16': the network runs in bfloat16 on float32 master weights)
PRECISIONS = {"float32": None, "bf16": "bfloat16"}  # -> EDMPrecond(compute_dtype=...)
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
                _check_int(f"NetworkConfig.{name}", getattr(self, name), 1)
        _check_int("NetworkConfig.label_dim", self.label_dim, 0)
        _check_int("NetworkConfig.model_channels", self.model_channels, 1)
        _check_int("NetworkConfig.num_blocks", self.num_blocks, 0)
        for name, nonempty in (("channel_mult", True), ("attn_resolutions", False)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or (nonempty and not value):
                raise TypeError(f"`NetworkConfig.{name}` must be a {'non-empty ' * nonempty}tuple of positive "
                                f"integers, got {value!r}")
            for item in value:
                _check_int(f"NetworkConfig.{name}", item, 1)
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

    @classmethod
    def from_file(cls, path) -> NetworkConfig:
        """A run's `network.json` (every field set); errors name the file and the field."""

        def parse(fields: dict) -> NetworkConfig:
            network = cls.from_dict(fields)
            missing = [name for name in IMAGE_FIELDS if getattr(network, name) is None]
            if missing:
                raise ValueError(f"missing field(s): {', '.join(missing)}")
            return network

        return _read_json(path, parse)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    """Raise unless `value` is an integer (bools refused) in [minimum, maximum]; the message names `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"`{name}` must be an integer in [{minimum}, {maximum}], got {value}")
    if value < minimum:
        raise ValueError(f"`{name}` must be {'a positive integer' if minimum == 1 else f'>= {minimum}'}, got {value}")


def _check_real(name: str, value, *, positive: bool = True) -> None:
    """Raise unless `value` is a finite real number (bools refused), and > 0 if `positive`."""
    what = "a finite number > 0" if positive else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {what}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (positive and not value > 0):
        raise ValueError(f"`{name}` must be {what}, got {value!r}")


def _check_type(name: str, value, kind: type) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"`{name}` must be a {kind.__name__}, got {type(value).__name__} {value!r}")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _read_json(path, parse):
    """`parse(fields)` of the JSON object in the file `path`; errors name the file (and, from `parse`, the field)."""
    try:
        fields = json.loads(Path(path).read_text())
    except ValueError as error:  # not JSON, not UTF-8, or an integer of more digits than Python converts
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid JSON: its values are nested too deeply") from None
    try:
        if not isinstance(fields, dict):
            raise TypeError(f"it must hold a JSON object, got {type(fields).__name__}")
        return parse(fields)
    except (TypeError, ValueError) as error:
        raise (TypeError if isinstance(error, TypeError) else ValueError)(f"invalid {path}: {error}") from None


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
    precision: str = "float32"                  # 'bf16': bfloat16 activations; float32 weights, loss, Adam and EMA
    probe_sigmas: tuple = PROBE_SIGMAS
    probe_queries: int = 256                    # query points per sigma (noised training images)
    probe_gmm_components: tuple = (2, 5, 10, 50)  # k-means GMMs compared with the network
    probe_gmm_rank: int | None = None           # rank of each GMM component (None: full)
    probe_delta: bool = True                    # also the exact training-set score
    probe_local: tuple = ()                     # local (patch) models, e.g. ('ls3', 'els3', 'pspc4', 'locality')

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
    def from_dict(cls, fields: dict) -> TrainConfig:
        """From `to_json`'s mapping (lists for tuples); unknown and missing required keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [name for name in ("name", "dataset", "network") if name not in fields]
        if missing:
            raise ValueError(f"missing TrainConfig field(s): {', '.join(missing)}")
        tuples = {name: tuple(fields[name]) for name in ("probe_sigmas", "probe_gmm_components", "probe_local")
                  if isinstance(fields.get(name), list)}
        return cls(**dict(fields, **tuples))

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path) -> TrainConfig:
        """A run's `config.json`, validated (`validate`); errors name the file and the field."""

        def parse(fields: dict) -> TrainConfig:
            config = cls.from_dict(fields)
            config.validate()
            return config

        return _read_json(path, parse)

    def validate(self, device_count: int = 1) -> None:
        """Refuse invalid values before any work starts: each field's type and range, errors naming the field.

        Float hyperparameters must be finite (an infinite `lr` would train to NaN), and the seed
        one that `jax.random.key` keeps whole.
        """
        for name, kind in (("name", str), ("dataset", str), ("dataset_options", dict), ("xflip", bool),
                           ("probe_delta", bool), ("probe_sigmas", tuple), ("probe_gmm_components", tuple),
                           ("probe_local", tuple)):
            _check_type(name, getattr(self, name), kind)
        for name in ("steps", "batch_size", "num_checkpoints", "log_every", "probe_queries"):
            _check_int(name, getattr(self, name), 1)
        for name in ("checkpoint_every", "probe_gmm_rank"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check_int("lr_warmup_steps", self.lr_warmup_steps, 0)
        _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("lr", "ema_halflife_images", "ema_rampup_ratio", "P_std", "sigma_data"):
            _check_real(name, getattr(self, name))
        _check_real("P_mean", self.P_mean, positive=False)
        if self.grad_clip is not None:
            _check_real("grad_clip", self.grad_clip)
        if not self.probe_sigmas:
            raise ValueError("`probe_sigmas` must not be empty")
        for sigma in self.probe_sigmas:
            _check_real("probe_sigmas", sigma)
        for count in self.probe_gmm_components:
            _check_int("probe_gmm_components", count, 1)
        for spec in self.probe_local:
            try:
                check_local_spec(spec)
            except ValueError as error:
                raise ValueError(f"`probe_local`: {error}") from None
        if self.batch_size % device_count:
            raise ValueError(f"`batch_size` = {self.batch_size} must be divisible by the device count {device_count}")


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


def read_run_files(run_dir) -> tuple[TrainConfig, NetworkConfig]:
    """A run directory's `config.json` and `network.json`, validated and consistent with each other.

    Errors name the file and the field (a hand-edited or damaged file is refused, not trained or sampled with).
    """
    run_dir = Path(run_dir)
    config = TrainConfig.from_file(run_dir / "config.json")
    network = NetworkConfig.from_file(run_dir / "network.json")
    saved, expected = network.architecture(), config.network.architecture()
    differing = sorted(name for name in saved if saved[name] != expected[name])
    if differing:
        raise ValueError(f"invalid {run_dir / 'network.json'}: it differs from the network of "
                         f"{run_dir / 'config.json'} in: {', '.join(differing)}")
    return config, network
