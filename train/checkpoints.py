"""Orbax checkpoints of the training state: schedule, save, and resume with fallback."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from train.configs import TrainConfig


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


class Checkpointer:
    """Saves `TrainState` pytrees under `run_dir / "checkpoints"`, one directory per step."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.run_dir / "checkpoints", options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state) -> None:
        """Write the state at its step; returns when the checkpoint is complete on disk."""
        step = int(state.step)
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def restore(self, step: int, like):
        """The state saved at `step`, with the structure (and shardings) of `like`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, like):
        """The newest readable checkpoint, or `None`.

        An unreadable (corrupt or partial) checkpoint is moved to `run_dir/corrupt_checkpoints/`
        with a warning, and the previous one is tried.
        """
        for step in reversed(self.steps()):
            try:
                return self.restore(step, like)
            except Exception as error:  # any unreadable checkpoint: set it aside, try the previous one
                aside = self.run_dir / "corrupt_checkpoints" / str(step)
                aside.parent.mkdir(exist_ok=True)
                shutil.rmtree(aside, ignore_errors=True)
                shutil.move(str(self.run_dir / "checkpoints" / str(step)), aside)
                self.manager.reload()
                warnings.warn(
                    f"checkpoint at step {step} is unreadable ({type(error).__name__}: {str(error)[:200]}); "
                    f"moved to {aside}, falling back to the previous one",
                    stacklevel=2,
                )
        return None
