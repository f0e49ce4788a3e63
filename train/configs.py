"""Training configurations: frozen dataclasses, one per named setting (paper Table 3, App. A.6)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

PROBE_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 80.0, 16))  # the paper's MNIST probe grid


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (written to `DIR/config.json`)."""

    name: str                                   # config name (`--config`)
    dataset: str                                # gaussjax.data name
    network: dict                               # SongUNet arguments (resolution and channels come from the data)
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

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

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
    # The default: scikit-learn's 8x8 digits, sized for about 10 minutes on a 2-core CPU: the 715k-parameter
    # DDPM++ net (~540 images/s there), 2,000 steps of 128 (~180 epochs of the 1,442 training images).
    "digits": TrainConfig(
        name="digits",
        dataset="digits",
        network=dict(model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0),
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
        network=dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(), dropout=0.0),
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
        network=dict(model_channels=16, channel_mult=(1, 2, 3, 4), num_blocks=1, attn_resolutions=(), dropout=0.0),
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
        network=dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13),
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
        network=dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0),
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


def network_kwargs(config: TrainConfig, image_shape: tuple[int, int, int], label_dim: int = 0) -> dict[str, Any]:
    """SongUNet arguments for `config` on images of `image_shape (H, W, C)`."""
    return dict(img_resolution=image_shape[0], in_channels=image_shape[2], out_channels=image_shape[2],
                label_dim=label_dim, **module_kwargs(config.network))


def module_kwargs(mapping: dict) -> dict[str, Any]:
    """Module arguments as read from JSON: lists back to the tuples Flax modules hash."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()}


def with_overrides(config: TrainConfig, **overrides) -> TrainConfig:
    """`config` with the non-None (command-line) overrides applied."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
