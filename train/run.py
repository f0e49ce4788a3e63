"""One training run: data, network, resume, the loop, checkpoints and probes, in a run directory.

Files in the run directory:
    config.json          the resolved config (a different config is refused)
    network.json         the SongUNet arguments (for `load_denoiser`)
    checkpoints/<step>/  Orbax checkpoints of the full training state
    loss.csv             mean loss per `log_every` steps, overall and per sigma bin
    probes.csv           step, sigma, reference, weights, fuv_score, fuv_denoiser
    analytic_models.npz  the fitted isotropic / Gaussian / mixture models (cached)
    .jax_cache/          compiled programs, so a resumed run does not compile again
                         (unless $JAX_COMPILATION_CACHE_DIR points elsewhere)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from gaussjax._checks import check_choice
from gaussjax.data import load_dataset
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet
from train import probes
from train.checkpoints import Checkpointer, checkpoint_steps
from train.configs import TrainConfig, module_kwargs, network_kwargs
from train.step import bin_labels, init_state, make_optimizer, make_train_loop, metrics_row

LOSS_COLUMNS = ["step", "loss", *bin_labels()]


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a run directory that belongs to another configuration (only `steps` may change)."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    current = json.loads(config.to_json())
    differing = sorted(k for k in set(saved) | set(current) if k != "steps" and saved.get(k) != current.get(k))
    if differing:
        raise ValueError(
            f"run directory {run_dir} holds a run of another configuration (differs in: {', '.join(differing)}); "
            "choose another --out or delete it"
        )


def make_mesh() -> Mesh | None:
    """A 1-D data-parallel mesh over all local devices (None on a single device)."""
    devices = jax.local_devices()
    return Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None


def use_compilation_cache(run_dir: Path) -> None:
    """Keep JAX's persistent compilation cache in the run directory, unless one is configured already."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(run_dir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def train(config: TrainConfig, run_dir, *, data_dir=None, progress: bool = True, log=print) -> Path:
    """Train (or resume) `config` in `run_dir`; returns the run directory."""
    run_dir = Path(run_dir)
    config.validate(jax.local_device_count())
    dataset = load_dataset(config.dataset, root=data_dir, **config.dataset_options)  # missing files fail here
    check_run_dir(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    use_compilation_cache(run_dir)

    # The train step runs outside any compiled loop, where XLA's own convolutions are the fastest
    # formulation on every backend (see gaussjax.nn._conv and bench/train_step.py).
    kwargs = network_kwargs(config, dataset.image_shape)
    (run_dir / "network.json").write_text(json.dumps(kwargs, indent=2))
    net = SongUNet(**kwargs, conv_impl="xla")
    precond = EDMPrecond(net=net, sigma_data=config.sigma_data)
    optimizer = make_optimizer(config)
    mesh = make_mesh()
    data = jax.numpy.asarray(dataset.images)
    state = init_state(config, precond, dataset.image_shape, optimizer)
    if mesh is not None:  # everything replicated; the batch is sharded inside the step
        replicated = NamedSharding(mesh, PartitionSpec())
        data, state = jax.device_put((data, state), replicated)

    checkpointer = Checkpointer(run_dir)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = restored
        log(f"resuming {config.name} from step {int(state.step)} in {run_dir}")
    step = int(state.step)
    probes.truncate_rows(run_dir / "loss.csv", step, LOSS_COLUMNS)
    probes.truncate_rows(run_dir / "probes.csv", step, probes.PROBE_COLUMNS)

    started = time.perf_counter()
    models = probes.fit_analytic_models(config, np.asarray(dataset.flat), dataset.labels, run_dir)
    probe = probes.build_probe(config, np.asarray(dataset.flat), models)
    log(f"analytic models ({', '.join(models)}) and probe queries ready in {time.perf_counter() - started:.1f} s")

    seconds = {"checkpoints": 0.0, "probes": 0.0}  # spent in the training loop's checkpoints and probes

    def checkpoint_and_probe(state):
        tick = time.perf_counter()
        checkpointer.save(state)
        seconds["checkpoints"] += time.perf_counter() - tick
        step = int(state.step)
        if step not in probes.probed_steps(run_dir / "probes.csv"):
            tick = time.perf_counter()
            denoisers = {
                weights: NeuralDenoiser(module=precond, params=params, image_shape=dataset.image_shape)
                for weights, params in (("raw", state.params), ("ema", state.ema_params))
            }
            probes.append_rows(run_dir / "probes.csv", probes.probe_rows(probe, step, denoisers), probes.PROBE_COLUMNS)
            seconds["probes"] += time.perf_counter() - tick

    schedule = checkpoint_steps(config)
    if step in schedule:
        checkpoint_and_probe(state)  # step 0, or a checkpoint whose probe a crash cut short
        seconds.update(checkpoints=0.0, probes=0.0)  # (and the probe's compilation): not counted
    train_loop = make_train_loop(config, precond, optimizer, mesh)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    train_time = 0.0
    while step < config.steps:
        target = next(s for s in schedule if s > step)
        count = min(config.log_every, target - step)
        tick = time.perf_counter()
        state, metrics = train_loop(state, data, count)
        row = metrics_row(step + count, metrics)  # blocks until the steps are done
        train_time += time.perf_counter() - tick
        step += count
        probes.append_rows(run_dir / "loss.csv", [row], LOSS_COLUMNS)
        bar.update(count)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if step == target:
            checkpoint_and_probe(state)
    bar.close()

    log(probes.summary_table(run_dir / "probes.csv"))
    share = lambda t: f"{100 * t / max(train_time, 1e-9):.1f}% of training"  # noqa: E731
    log(f"training {train_time:.1f} s; checkpoints {seconds['checkpoints']:.1f} s ({share(seconds['checkpoints'])}), "
        f"probes {seconds['probes']:.1f} s ({share(seconds['probes'])})")
    log(f"run directory: {run_dir} (config.json, checkpoints/, loss.csv, probes.csv)")
    return run_dir


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
    kwargs = module_kwargs(json.loads(files[1].read_text()))
    checkpointer = Checkpointer(run_dir)
    steps = checkpointer.steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"`step` = {step} has no checkpoint in {run_dir}; checkpoints: {steps}")
    saved = checkpointer.manager.restore(step)
    params = jax.tree_util.tree_map(jax.numpy.asarray, saved["ema_params" if weights == "ema" else "params"])
    precond = EDMPrecond(net=SongUNet(**kwargs), sigma_data=config.sigma_data)
    return NeuralDenoiser(module=precond, params=params)
