"""A run directory's Orbax checkpoints: save, restore with fallback past damaged ones, and load as a denoiser.

In a job of several JAX processes (`jax.distributed`) a `Checkpointer` is a collective: every process
makes the same calls, each writes the shards its devices hold (Orbax), and a state restores onto
any mesh, whatever the process count that wrote it. Orbax writes each checkpoint into a temporary
directory and renames it when every process has finished (its atomic commit), so a crash or a lost
process never leaves a half-written checkpoint among the steps; a trainer's `Checkpointer` removes
such temporary directories when it opens.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gaussjax._checks import check_choice, check_nonnegative_int, summarize
from gaussjax._errors import InputFileNotFoundError, InputValueError
from gaussjax._orbax import without_read_only_notice
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet, gaussian_design
from gaussjax.runs import _quiet_restore
from gaussjax.runs._agree import agree
from gaussjax.runs._config import read_run_files


class UnreadableCheckpointError(InputValueError):
    """A checkpoint that cannot be read back (damaged or partly written); the message names its step and path."""


class NonFiniteError(InputValueError):
    """A training state holding NaN or infinite values, refused by `Checkpointer.save`."""


class Checkpointer:
    """Saves `TrainState` pytrees under `run_dir / "checkpoints"`, one directory per step.

    Every restore of a step that cannot be read raises `UnreadableCheckpointError`, naming the
    step and its directory. `read_only=True` (for loaders) creates and writes nothing. In a
    multi-process job every process must make the same calls (see the module docstring).
    """

    def __init__(self, run_dir: Path, *, read_only: bool = False):
        self.run_dir = Path(run_dir).absolute()
        self.read_only = read_only
        self.manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, create=not self.read_only, read_only=self.read_only,
            save_interval_steps=int(not self.read_only), enable_async_checkpointing=False,
            cleanup_tmp_directories=not self.read_only,  # what a crash left of an unfinished save
        )
        # The whole state is saved and resumed as a StandardSave tree; single subtrees are read
        # back by the PyTree handler's partial restore (the same format on disk).
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        standard = ocp.StandardCheckpointHandler()
        registry.add("default", ocp.args.StandardSave, standard)
        registry.add("default", ocp.args.StandardRestore, standard)
        registry.add("default", ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
        with without_read_only_notice():
            return ocp.CheckpointManager(self.run_dir / "checkpoints", options=options, handler_registry=registry)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state) -> None:
        """Write the state at its step; returns when the checkpoint is complete on disk.

        A state holding NaN or infinite values is refused (`NonFiniteError`), so the newest
        checkpoint is always one a run can continue from.
        """
        step = int(state.step)
        if step in self.manager.all_steps():
            return
        bad = non_finite_leaves(state)
        if bad:
            raise NonFiniteError(f"the training state at step {step} holds NaN or infinite values (in "
                                 f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); not saving it")
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def restore(self, step: int, like):
        """The state saved at `step`, with the structure (and shardings) of `like`."""
        step = self._existing_step(step)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        with self._reading(step):
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_params(self, step: int, weights: str = "ema"):
        """The network variables saved at `step` (`{'params': ...}` of NumPy arrays), nothing else read.

        `weights`: `'ema'` (the EMA of the parameters, what EDM samples with) or `'raw'`.
        """
        check_choice("weights", weights, ("ema", "raw"))
        step = self._existing_step(step)
        name = "ema_params" if weights == "ema" else "params"
        with self._reading(step):
            saved = {name: self.manager.item_metadata(step).tree[name]}
            item = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), saved)
            as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
            args = ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True)
            return self.manager.restore(step, args=args)[name]

    def restore_newest(self, read, *, set_aside: bool = False) -> tuple[int, object] | None:
        """`(step, read(step))` of the newest checkpoint `read` succeeds on, or `None` if there is none.

        An unreadable checkpoint (damaged or partly written) is skipped with a warning naming its
        step and path. With `set_aside` (the trainer) it is also moved to
        `run_dir/corrupt_checkpoints/`, so that a resumed run saves that step afresh. In a
        multi-process job a checkpoint that any process cannot read is skipped by all, with that
        process's error (process 0 moves it).
        """
        for step in reversed(self.steps()):
            try:
                found, error = (step, read(step)), None
            except UnreadableCheckpointError as unreadable:
                found, error = None, unreadable
            error = agree(error, (UnreadableCheckpointError,))  # every process skips a step any cannot read
            if error is None:
                return found
            if jax.process_count() > 1:  # a failed read reopens the manager, a collective in a job
                self._reopen()
            where = f"moved to {self._set_aside(step)}, " if set_aside else ""
            warnings.warn(f"{error}; {where}falling back to the previous checkpoint", stacklevel=3)
        return None

    def restore_latest(self, like):
        """The newest readable checkpoint's state (unreadable ones set aside: `restore_newest`), or `None`."""
        found = self.restore_newest(lambda step: self.restore(step, like), set_aside=True)
        return None if found is None else found[1]

    def _existing_step(self, step) -> int:
        step = check_nonnegative_int("step", step)
        steps = self.steps()
        if step not in steps:
            raise InputValueError(f"`step` = {step} has no checkpoint in {self.run_dir}; checkpoints: {steps}")
        return step

    @contextlib.contextmanager
    def _reading(self, step: int):
        """Any failure to read `step` becomes an `UnreadableCheckpointError` naming the step and its directory.

        The manager is then closed and opened afresh: a failed read can leave it misjudging the
        layout of every other checkpoint (a step without its `default` item makes it look for
        several items from then on).
        """
        _quiet_restore.install()  # a failed read leaves others in flight on a closed event loop
        try:
            yield
        except Exception as error:  # Orbax and TensorStore raise bare Exception, ValueError, KeyError, ...
            if jax.process_count() == 1:  # in a job, every process reopens it together (`restore_newest`)
                self._reopen()
            cause = error
            while cause.__cause__ is not None:  # TensorStore's own message, where Orbax wraps it
                cause = cause.__cause__
            message = " ".join(str(cause).split())
            raise UnreadableCheckpointError(
                f"checkpoint at step {step} is unreadable ({self.run_dir / 'checkpoints' / str(step)}: "
                f"{type(cause).__name__}: {message[:300]})"
            ) from error

    def _reopen(self) -> None:
        """Drop the manager and open a fresh one."""
        with contextlib.suppress(Exception):  # the old manager is dropped either way
            self.manager.close()
        self.manager = self._open_manager()

    def _set_aside(self, step: int) -> Path:
        """Move checkpoint `step` to `run_dir/corrupt_checkpoints/` (process 0; every process then forgets it)."""
        aside = self.run_dir / "corrupt_checkpoints" / str(step)
        if jax.process_index() == 0:
            aside.parent.mkdir(exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            shutil.move(str(self.run_dir / "checkpoints" / str(step)), aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"gaussjax.runs.Checkpointer set aside step {step}")
        self.manager.reload()  # forget the step moved away
        return aside


def non_finite_leaves(tree) -> list[str]:
    """Paths of the floating-point leaves of `tree` that hold NaN or infinite values.

    Leaves that span processes are checked on their devices, with the same answer on every process.
    """
    leaves = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
              if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    if not leaves:
        return []
    finite = summarize(_each_finite, *(leaf for _, leaf in leaves))
    return [jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, finite, strict=True) if not ok]


def _each_finite(xp, *arrays):
    """Whether each array holds finite values only (`gaussjax._checks.summarize`)."""
    return xp.stack([xp.all(xp.isfinite(array)) for array in arrays])


def _design_precond(config, precond):
    """`precond` with the run's Sec. 8 design options (`TrainConfig.bypass`, `whiten`): `gaussian_design`'s
    module, whose variables hold the run's fitted Gaussian (saved in each checkpoint); else `precond` itself.

    (`warm_start` changes only which noise levels training draws, not the network.)
    """
    if not config.holds_gaussian:
        return precond
    return gaussian_design(precond, bypass=config.bypass, whiten=config.whiten)


class LoadedDenoiser(NamedTuple):
    """A run's network and the checkpoint step it was read from (`load_checkpoint`)."""

    denoiser: NeuralDenoiser
    step: int


def load_checkpoint(run_dir, *, step: int | None = None, weights: str = "ema") -> LoadedDenoiser:
    """The network of a `python -m train` run and the step it was read from.

    Args:
        run_dir: the run directory (its `config.json` and `network.json` are validated).
        step: the checkpoint to load (`UnreadableCheckpointError` if it cannot be read); default the
            newest readable one: a damaged newer one is skipped with a warning naming its step and
            path, and left where it is (the returned `step` says which one was read).
        weights: `'ema'` (the EMA of the parameters, what EDM samples with) or `'raw'`.

    Returns:
        `LoadedDenoiser(denoiser, step)`: a `NeuralDenoiser` and the step whose weights it holds. For a run
        with `bypass` or `whiten` its module is `gaussian_design`'s, in data coordinates, with the run's
        Gaussian read from the checkpoint (see `gaussjax.nn.gaussian_design` for what a whitened
        run's denoiser means: its noise is `sigma^2 (Sigma + eps I)`, not isotropic).
    """
    run_dir = Path(run_dir)
    check_choice("weights", weights, ("ema", "raw"))
    if step is not None:
        check_nonnegative_int("step", step)
    files = [run_dir / "config.json", run_dir / "network.json"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputFileNotFoundError(f"{', '.join(missing)} not found: `run_dir` must be a directory written by "
                                     "python -m train")
    config, network = read_run_files(run_dir)
    checkpointer = Checkpointer(run_dir, read_only=True)
    steps = checkpointer.steps()
    if not steps:
        raise InputFileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    if step is None:
        found = checkpointer.restore_newest(lambda s: checkpointer.restore_params(s, weights))
        if found is None:
            raise UnreadableCheckpointError(f"no checkpoint in {run_dir / 'checkpoints'} is readable (steps {steps})")
        step, params = found
    else:
        params = checkpointer.restore_params(step, weights)
    precond = _design_precond(config, EDMPrecond(net=SongUNet(**network.kwargs()), sigma_data=config.sigma_data))
    return LoadedDenoiser(NeuralDenoiser(module=precond, params=jax.tree_util.tree_map(jax.numpy.asarray, params)),
                          int(step))


def load_denoiser(run_dir, *, step: int | None = None, weights: str = "ema") -> NeuralDenoiser:
    """The network of a `python -m train` run as a `NeuralDenoiser`, for samplers, ODE solves and metrics.

    The denoiser of `load_checkpoint` (same arguments and errors); with `step=None` the newest
    readable checkpoint, a damaged newer one skipped with a warning naming its step and path.
    """
    return load_checkpoint(run_dir, step=step, weights=weights).denoiser
