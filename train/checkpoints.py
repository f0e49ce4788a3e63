"""When a run checkpoints (and probes): the schedule of steps."""

from __future__ import annotations

import numpy as np

from gaussjax.runs import TrainConfig


def checkpoint_steps(config: TrainConfig) -> list[int]:
    """Steps to checkpoint (and probe) at: 0, then dense early and sparse late, and the last step.

    By default `num_checkpoints` steps log-spaced from `steps / 200` to `steps` (learning
    dynamics change fastest early; cf. the paper's MNIST run: every 500 steps up to 5k,
    then every 1k-2.5k). `checkpoint_every = K` gives every K steps instead.
    """
    if config.checkpoint_every is not None:
        steps = list(range(config.checkpoint_every, config.steps, config.checkpoint_every))
    else:
        first = max(config.steps / 200, 1)
        steps = np.unique(np.round(np.geomspace(first, config.steps, config.num_checkpoints))).astype(int).tolist()
    return sorted({0, *steps, config.steps})
