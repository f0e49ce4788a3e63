"""The named training settings (paper Table 3, App. A.6): one `TrainConfig` each."""

from __future__ import annotations

import dataclasses

from gaussjax.checks import InputValueError
from gaussjax.runs import NetworkConfig, TrainConfig

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
        raise InputValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}")
    return CONFIGS[name]


def with_overrides(config: TrainConfig, **overrides) -> TrainConfig:
    """`config` with the non-None (command-line) overrides applied."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


