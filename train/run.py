"""One training run: data, network, resume, the loop, checkpoints and probes, in a run directory.

Files in the run directory:
    config.json          the resolved config (a different config is refused)
    network.json         the SongUNet arguments (`NetworkConfig`, for `load_denoiser`)
    checkpoints/<step>/  Orbax checkpoints of the full training state
    loss.csv             mean loss per `log_every` steps, overall and per sigma bin
    probes.csv           step, sigma, reference, weights, queries (train / test), fuv_score, fuv_denoiser,
                         r2_denoiser, mse_denoiser (`train.probes`)
    analytic_models.npz  the fitted isotropic / Gaussian / mixture models (cached)
    .jax_cache/          compiled programs, written by `python -m train` only, so a resumed run
                         does not compile again (unless $JAX_COMPILATION_CACHE_DIR points elsewhere)
    .lock                locked by the training process while it runs (`train.lock`; holds its pid)

`train` is setup (`open_run`, `resume`), the loop (`run_steps`) and the callback at each
checkpoint (`CheckpointAndProbe`), which runs outside the jitted steps.

In a job of several processes (`train.distributed`) every process runs `train` with the same
arguments over one mesh of every process's devices: each places its share of every global batch
(`train.batches`), all write their shards of each checkpoint, all take part in each probe; process
0 alone holds the lock and writes the other files, the log and the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from gaussjax.checks import InputError, InputValueError
from gaussjax.data import Dataset, load_dataset
from gaussjax.fit import fit_gaussian
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet, gaussian_design
from gaussjax.runs import Checkpointer, NonFiniteError, TrainConfig
from train import probes
from train.batches import Batches, make_mesh
from train.checkpoints import checkpoint_steps
from train.distributed import agree, barrier, is_primary
from train.errors import TrainingError
from train.lock import lock_run_dir
from train.step import TrainState, bin_labels, init_state, make_optimizer, make_train_loop, metrics_row, replicate

LOSS_COLUMNS = ["step", "loss", *bin_labels()]


def train(config: TrainConfig, run_dir, *, data_dir=None, progress: bool = True, log=print) -> Path:
    """Train (or resume) `config` in `run_dir`; returns the run directory.

    Raises `RunDirectoryInUseError` if another process is training in `run_dir`, and
    `NonFiniteError` if the loss becomes NaN or infinite (the run stops at the `loss.csv` row
    where it does, nothing of it saved: the newest checkpoint stays the last good one).
    Global JAX configuration is left as it is (`python -m train` also turns on the
    persistent compilation cache). In a multi-process job every process calls it with the same
    arguments (and raises the same errors); `log` and the progress bar are process 0's only.
    """
    primary = is_primary()
    if not primary:
        log, progress = _quiet, False
    with open_run(config, Path(run_dir), data_dir) as run:
        state = resume(run, log)
        callback = CheckpointAndProbe(run, log, data_dir)
        if int(state.step) in checkpoint_steps(config):
            callback(state)  # step 0, or a checkpoint whose probe a crash cut short
            callback.reset_timers()  # its time (and the probe's compilation) is not counted
        train_time = run_steps(run, state, callback, progress=progress)

    if primary:  # the writer of probes.csv (the others may get here before its last rows)
        log(probes.summary_table(run.run_dir / "probes.csv"))
    share = lambda t: f"{100 * t / max(train_time, 1e-9):.1f}% of training"  # noqa: E731
    seconds = callback.seconds
    log(f"training {train_time:.1f} s; checkpoints {seconds['checkpoints']:.1f} s ({share(seconds['checkpoints'])}), "
        f"probes {seconds['probes']:.1f} s ({share(seconds['probes'])})")
    log(f"run directory: {run.run_dir} (config.json, checkpoints/, loss.csv, probes.csv)")
    return run.run_dir


def _quiet(*args, **kwargs) -> None:
    """The log of every process but process 0."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What the setup of a run gives its loop and callbacks (everything but the training state)."""

    config: TrainConfig
    run_dir: Path
    dataset: Dataset
    precond: EDMPrecond  # with `bypass` / `whiten`: its `gaussian_design` subclass
    optimizer: optax.GradientTransformation
    mesh: Mesh | None  # over every process's devices; None on a single device
    batches: Batches  # step -> the global batch of that step
    checkpointer: Checkpointer


@contextlib.contextmanager
def open_run(config: TrainConfig, run_dir: Path, data_dir=None) -> Iterator[Run]:
    """Validate `config`, load the data, lock and claim `run_dir` (config.json, network.json), build the network.

    `run_dir` stays locked (`train.lock`) until the block ends; everything that can be refused
    (the config, the path, missing data files, a run directory in use or holding another
    configuration) is refused before anything is written. In a multi-process job process 0 takes
    the lock and writes the files; a refusal on any process is raised on every process (`agree`).
    """
    with contextlib.ExitStack() as claimed:
        refused = None
        try:
            config.validate(jax.device_count())
            check_run_dir_path(run_dir)
            dataset = load_dataset(config.dataset, root=data_dir, **config.dataset_options)  # missing files fail here
            if is_primary():
                run_dir.mkdir(parents=True, exist_ok=True)
                claimed.enter_context(lock_run_dir(run_dir))
                check_run_dir(run_dir, config)
        except (InputError, TrainingError, OSError) as error:
            refused = error
        agree(refused)
        network = config.network.for_images(dataset.image_shape)
        if is_primary():
            (run_dir / "config.json").write_text(config.to_json())
            (run_dir / "network.json").write_text(network.to_json())
        # The train step runs outside any compiled loop, where XLA's own convolutions are the fastest
        # formulation on every backend (see gaussjax.nn._conv).
        precond = EDMPrecond(net=SongUNet(**network.kwargs(), conv_impl="xla"), sigma_data=config.sigma_data)
        if config.holds_gaussian:  # the paper's Sec. 8 options (docs/training.md)
            precond = gaussian_design(precond, bypass=config.bypass, whiten=config.whiten)
        mesh = make_mesh()
        yield Run(config, run_dir, dataset, precond, make_optimizer(config), mesh,
                  Batches(config, dataset.images, mesh), Checkpointer(run_dir))


def resume(run: Run, log=print) -> TrainState:
    """The newest readable checkpoint's state, else a fresh one; drops CSV rows written after it."""
    gaussian = fit_gaussian(np.asarray(run.dataset.flat)) if run.config.holds_gaussian else None
    state = init_state(run.config, run.precond, run.dataset.image_shape, run.optimizer, gaussian=gaussian)
    if run.mesh is not None:  # everything replicated on every device; the batches come sharded
        state = replicate(state, run.mesh)
    restored = run.checkpointer.restore_latest(state)
    if restored is not None:
        state = restored
        log(f"resuming {run.config.name} from step {int(state.step)} in {run.run_dir}")
    if is_primary():
        probes.truncate_rows(run.run_dir / "loss.csv", int(state.step), LOSS_COLUMNS)
        probes.truncate_rows(run.run_dir / "probes.csv", int(state.step), probes.PROBE_COLUMNS)
    barrier("train.run.resume")  # the other processes read probes.csv next (`CheckpointAndProbe`)
    return state


class CheckpointAndProbe:
    """The callback at each checkpoint step: save the state, then append its probe rows to probes.csv.

    Built once per run (fits or loads the analytic models and the probes' train and held-out
    queries); a step already in probes.csv is not probed again. `seconds` sums the time spent in
    each part. In a multi-process job process 0 fits and caches the models and the others read
    them; each probe is one program over the mesh (the network's replicated parameters, the
    queries and the analytic models' outputs sharded over the query axis where it divides), and
    process 0 writes its rows.
    """

    def __init__(self, run: Run, log=print, data_dir=None):
        self.run = run
        started = time.perf_counter()
        flat = np.asarray(run.dataset.flat)
        fit = lambda: probes.fit_analytic_models(run.config, flat, run.dataset.labels, run.run_dir,  # noqa: E731
                                                 image_shape=run.dataset.images.shape[1:])
        models = fit() if is_primary() else None  # fits and caches them, or reads the cache
        barrier("train.run.analytic_models")
        if models is None:
            models = fit()  # the other processes read process 0's cache
        test_flat = probes.load_test_flat(run.config, data_dir)
        self.probes = probes.place_probes(probes.build_probes(run.config, flat, models, test_flat), run.mesh)
        self.probed = probes.probed_steps(run.run_dir / "probes.csv")  # the same on every process (`resume`)
        log(f"analytic models ({', '.join(models)}) and probe queries ({', '.join(self.probes)}) "
            f"ready in {time.perf_counter() - started:.1f} s")
        self.reset_timers()

    def reset_timers(self) -> None:
        self.seconds = {"checkpoints": 0.0, "probes": 0.0}

    def __call__(self, state: TrainState) -> None:
        tick = time.perf_counter()
        self.run.checkpointer.save(state)
        self.seconds["checkpoints"] += time.perf_counter() - tick
        step = int(state.step)
        if step in self.probed:
            return
        tick = time.perf_counter()
        denoisers = {
            weights: NeuralDenoiser(module=self.run.precond, params=params, image_shape=self.run.dataset.image_shape)
            for weights, params in (("raw", state.params), ("ema", state.ema_params))
        }
        rows = probes.probe_rows(self.probes, step, denoisers)
        if is_primary():
            probes.append_rows(self.run.run_dir / "probes.csv", rows, probes.PROBE_COLUMNS)
        self.probed.add(step)
        self.seconds["probes"] += time.perf_counter() - tick


def run_steps(run: Run, state: TrainState, on_checkpoint, *, progress: bool = True) -> float:
    """Train from `state.step` to `config.steps`; returns the seconds spent in the steps.

    Appends a loss.csv row per `log_every` steps (rows also end at checkpoints) and calls
    `on_checkpoint(state)` after each step of `checkpoint_steps(config)`. A NaN or infinite
    row loss raises `NonFiniteError` before that row is written or its state saved.
    """
    config, schedule = run.config, checkpoint_steps(run.config)
    train_loop = make_train_loop(config, run.precond, run.optimizer, run.mesh)
    step = int(state.step)
    train_time = 0.0
    with tqdm(total=config.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        while step < config.steps:
            target = next(s for s in schedule if s > step)
            count = min(config.log_every, target - step)
            tick = time.perf_counter()
            state, metrics = train_loop(state, map(run.batches, range(step, step + count)))
            row = metrics_row(step + count, metrics)  # blocks until the steps are done
            train_time += time.perf_counter() - tick
            check_loss(run, step, row)
            step += count
            if is_primary():
                probes.append_rows(run.run_dir / "loss.csv", [row], LOSS_COLUMNS)
            bar.update(count)
            bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            if step == target:
                on_checkpoint(state)
    return train_time


def check_loss(run: Run, step: int, row: dict) -> None:
    """Stop the run if the mean loss of the steps after `step` (a `loss.csv` row) is NaN or infinite."""
    if math.isfinite(row["loss"]):
        return
    saved = run.checkpointer.steps()
    last = f"step {saved[-1]} in {run.run_dir / 'checkpoints'}" if saved else "none"
    raise NonFiniteError(
        f"the training loss became {row['loss']} in steps {step + 1}-{row['step']}; the run stopped at step "
        f"{row['step']} without saving or probing it (last good checkpoint: {last}); "
        "lower `lr` or set `grad_clip`"
    )


def check_run_dir_path(run_dir: Path) -> None:
    """Refuse a run directory path that is a file, or that cannot be created (under a file, or not writable)."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise InputValueError(f"run directory {run_dir} exists and is not a directory; choose another --out")
        existing = run_dir
    else:
        existing = next(parent for parent in run_dir.absolute().parents if parent.exists())
        if not existing.is_dir():
            raise InputValueError(f"run directory {run_dir} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputValueError(f"run directory {run_dir} cannot be written: {existing} is not writable")


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a run directory that belongs to another configuration (only `steps` may change).

    Its config.json is validated like a config (`TrainConfig.from_file`): a damaged or
    hand-edited file is refused, naming the file and the field.
    """
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = TrainConfig.from_file(path)
    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name != "steps"]
    differing = sorted(name for name in names if getattr(saved, name) != getattr(config, name))
    if differing:
        raise InputValueError(
            f"run directory {run_dir} holds a run of another configuration (differs in: {', '.join(differing)}); "
            "choose another --out or delete it"
        )
