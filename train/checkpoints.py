"""Orbax checkpoints of the training state: schedule, save, resume with fallback, and load as a denoiser."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from gaussjax._checks import check_choice
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet
from train.configs import NetworkConfig, TrainConfig


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
        # The whole state is saved and resumed as a StandardSave tree; single subtrees are read
        # back by the PyTree handler's partial restore (the same format on disk).
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        standard = ocp.StandardCheckpointHandler()
        registry.add("default", ocp.args.StandardSave, standard)
        registry.add("default", ocp.args.StandardRestore, standard)
        registry.add("default", ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
        self.manager = ocp.CheckpointManager(self.run_dir / "checkpoints", options=options, handler_registry=registry)

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

    def restore_params(self, step: int, weights: str = "ema"):
        """The network variables saved at `step` (`{'params': ...}` of NumPy arrays), nothing else read.

        `weights`: `'ema'` (the EMA of the parameters, what EDM samples with) or `'raw'`.
        """
        check_choice("weights", weights, ("ema", "raw"))
        steps = self.steps()
        if step not in steps:
            raise ValueError(f"`step` = {step} has no checkpoint in {self.run_dir}; checkpoints: {steps}")
        name = "ema_params" if weights == "ema" else "params"
        saved = {name: self.manager.item_metadata(step).tree[name]}
        item = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), saved)
        as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
        args = ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True)
        return self.manager.restore(step, args=args)[name]

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


def load_denoiser(run_dir, *, step: int | None = None, weights: str = "ema") -> NeuralDenoiser:
    """The network of a `python -m train` run as a `NeuralDenoiser`, for samplers, ODE solves and metrics.

    Args:
        run_dir: the run directory.
        step: the checkpoint to load; default the newest.
        weights: `'ema'` (the EMA of the parameters, what EDM samples with) or `'raw'`.
    """
    run_dir = Path(run_dir)
    check_choice("weights", weights, ("ema", "raw"))
    files = [run_dir / "config.json", run_dir / "network.json"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found: `run_dir` must be a directory written by python -m train")
    config = TrainConfig.from_json(files[0].read_text())
    network = NetworkConfig.from_json(files[1].read_text())
    checkpointer = Checkpointer(run_dir)
    steps = checkpointer.steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    params = checkpointer.restore_params(steps[-1] if step is None else step, weights)
    precond = EDMPrecond(net=SongUNet(**network.kwargs()), sigma_data=config.sigma_data)
    return NeuralDenoiser(module=precond, params=jax.tree_util.tree_map(jax.numpy.asarray, params))
