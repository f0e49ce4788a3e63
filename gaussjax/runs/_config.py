"""A run directory's configuration files: `config.json` (`TrainConfig`) and `network.json` (`NetworkConfig`).

Both are frozen dataclasses validated on construction or by `validate`, whose errors name the field
(and, read from a file, the file).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from gaussjax._checks import check_int, check_real
from gaussjax._errors import InputError, InputTypeError, InputValueError
from gaussjax.scores.local_spec import check_local_spec

PROBE_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 80.0, 16))  # the paper's MNIST probe grid
MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits of a seed (without x64): larger seeds would collide
# `precision`: the train step's activation dtype ('bf16': the network runs in bfloat16 on float32 master weights)
PRECISIONS = {"float32": None, "bf16": "bfloat16"}  # -> EDMPrecond(compute_dtype=...)
DESIGN_FIELDS = ("bypass", "whiten", "warm_start")  # the paper's Sec. 8 options (absent from older config.json)
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
        self._check_with_songunet()

    def _check_with_songunet(self) -> None:
        """The fields are SongUNet's arguments: SongUNet's own checks judge them (with placeholder image
        fields where the data has not set them yet), and their errors name `NetworkConfig.<field>`."""
        from gaussjax.nn import SongUNet

        levels = len(self.channel_mult) if isinstance(self.channel_mult, tuple) else 1
        placeholders = {"img_resolution": 2 ** max(levels - 1, 0), "in_channels": 1, "out_channels": 1}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        try:
            SongUNet(**{name: placeholders[name] if value is None and name in placeholders else value
                        for name, value in fields.items()})
        except InputError as error:
            message = str(error)
            raise type(error)("`NetworkConfig." + message[1:] if message.startswith("`") else message) from None

    def for_images(self, image_shape: tuple[int, int, int], label_dim: int = 0) -> NetworkConfig:
        """This architecture on square images of `image_shape (H, W, C)`, output channels = input channels."""
        height, width, channels = image_shape
        if height != width:
            raise InputValueError(f"SongUNet needs square images; `image_shape` is {tuple(image_shape)}")
        return dataclasses.replace(self, img_resolution=height, in_channels=channels, out_channels=channels,
                                   label_dim=label_dim)

    def kwargs(self) -> dict:
        """Keyword arguments of `gaussjax.nn.SongUNet` (the image fields must be set: see `for_images`)."""
        missing = [name for name in ("img_resolution", "in_channels", "out_channels") if getattr(self, name) is None]
        if missing:
            raise InputValueError(f"NetworkConfig fields {', '.join(missing)} are not set; call `for_images` first")
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
            raise InputValueError(f"unknown NetworkConfig field(s): {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}")
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
                raise InputValueError(f"missing field(s): {', '.join(missing)}")
            return network

        return _read_json(path, parse)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _read_json(path, parse):
    """`parse(fields)` of the JSON object in the file `path`; errors name the file (and, from `parse`, the field)."""
    try:
        fields = json.loads(Path(path).read_text())
    except ValueError as error:  # not JSON, not UTF-8, or an integer of more digits than Python converts
        raise InputValueError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise InputValueError(f"{path} is not valid JSON: its values are nested too deeply") from None
    try:
        if not isinstance(fields, dict):
            raise InputTypeError(f"it must hold a JSON object, got {type(fields).__name__}")
        return parse(fields)
    except (TypeError, ValueError) as error:
        kind = InputTypeError if isinstance(error, TypeError) else InputValueError
        raise kind(f"invalid {path}: {error}") from None


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
    # The paper's Sec. 8 design options (docs/training.md); written to config.json only when not the default.
    bypass: bool = False                        # D = D_gauss + c_out F: the network learns the Gaussian's residual
    whiten: float | None = None                 # train on W (x - mu), W = (Sigma + whiten max(lambda) I)^(-1/2)
    warm_start: float | None = None             # train on noise levels <= warm_start only (truncated log-normal)

    def __post_init__(self):
        if isinstance(self.network, dict):  # the architecture fields, as in config.json
            object.__setattr__(self, "network", NetworkConfig.from_dict(self.network))
        if not isinstance(self.network, NetworkConfig):
            raise InputTypeError(f"`network` must be a NetworkConfig, got {type(self.network).__name__}")
        given = [name for name in IMAGE_FIELDS if getattr(self.network, name)]
        if given:
            raise InputValueError(f"`network.{given[0]}` must be left unset in a TrainConfig (the data sets it)")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def holds_gaussian(self) -> bool:
        """Whether the network holds the training set's fitted Gaussian (`bypass` or `whiten`:
        `gaussjax.nn.gaussian_design`); `warm_start` changes only the noise levels drawn."""
        return self.bypass or self.whiten is not None

    def to_json(self) -> str:
        """Every field, except design options left at their default (so older runs' files stay as they were)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not (f.name in DESIGN_FIELDS and getattr(self, f.name) == f.default)}
        return json.dumps(dict(fields, network=self.network.architecture()), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, fields: dict) -> TrainConfig:
        """From `to_json`'s mapping (lists for tuples); unknown and missing required keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InputValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}")
        missing = [name for name in ("name", "dataset", "network") if name not in fields]
        if missing:
            raise InputValueError(f"missing TrainConfig field(s): {', '.join(missing)}")
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
                           ("probe_delta", bool), ("bypass", bool), ("probe_sigmas", tuple),
                           ("probe_gmm_components", tuple), ("probe_local", tuple)):
            if not isinstance(getattr(self, name), kind):
                raise InputTypeError(f"`{name}` must be a {kind.__name__}, got {type(getattr(self, name)).__name__} "
                                     f"{getattr(self, name)!r:.80}")
        for name in ("steps", "batch_size", "num_checkpoints", "log_every", "probe_queries"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("checkpoint_every", "probe_gmm_rank"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.precision not in PRECISIONS:
            raise InputValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check_int("lr_warmup_steps", self.lr_warmup_steps, minimum=0)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        for name in ("lr", "ema_halflife_images", "ema_rampup_ratio", "P_std", "sigma_data"):
            check_real(name, getattr(self, name), minimum=0, strict=True)
        check_real("P_mean", self.P_mean)
        for name in ("grad_clip", "whiten", "warm_start"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), minimum=0, strict=True)
        if not self.probe_sigmas:
            raise InputValueError("`probe_sigmas` must not be empty")
        for sigma in self.probe_sigmas:
            check_real("probe_sigmas", sigma, minimum=0, strict=True)
        for count in self.probe_gmm_components:
            check_int("probe_gmm_components", count, minimum=1)
        for spec in self.probe_local:
            try:
                check_local_spec(spec)
            except ValueError as error:
                raise InputValueError(f"`probe_local`: {error}") from None
        if self.batch_size % device_count:
            raise InputValueError(f"`batch_size` = {self.batch_size} must be divisible by the device count "
                                  f"{device_count}")


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
        raise InputValueError(f"invalid {run_dir / 'network.json'}: it differs from the network of "
                              f"{run_dir / 'config.json'} in: {', '.join(differing)}")
    return config, network
