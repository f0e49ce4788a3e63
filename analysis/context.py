"""What every analysis command starts from: a network, its data, and where to write.

`add_common_arguments` gives each command the same options (`--run`, `--step`, `--weights`,
`--network`, `--dataset`, `--out`, `--seed`, `--num-queries`), and `load_context` turns them into
an `AnalysisContext` in the order that fails cheapest first: the options themselves, then `--out`,
the run's files and the data, the command's own checks against the data (`Command.validate`), and only
then the network (a checkpoint restore or a network file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

from analysis._common import Command, command_key
from analysis.output import prepare_out
from gaussjax.checks import InputFileNotFoundError, InputValueError, check_int
from gaussjax.data import Dataset, load_dataset
from gaussjax.nn import SamplingStart, sampling_start

DEFAULT_OUT = Path("analysis_out")
NETWORK_SUFFIXES = (".pkl", ".safetensors")


@dataclasses.dataclass(frozen=True)
class AnalysisContext:
    """A trained network with its training and held-out data.

    Attributes:
        network: the denoiser (a `NeuralDenoiser`); None for commands that need only data, and while
            `Command.validate` runs.
        train: the training split `Dataset` (what the analytic models are fitted to).
        test: the held-out split, or None if the dataset has none.
        run_dir: the run directory, or None for `--network` files and datasets.
        step: the checkpoint step analysed (None when not from a run); for commands without a network, the
            `--step` given (None: the latest).
        weights: `'ema'` or `'raw'`.
        out: directory for CSV and PNG files (created and checked: `prepare_out`).
        seed: `--seed`, the seed of every random draw (`key`).
        num_queries: query points per noise level (or samples, for sampling commands).
        source: what is analysed, in words (the run, step and weights, or the network file).
        reference_rank: the rank of the reference mixtures' components (`analysis._common.references`): the
            run's `probe_gmm_rank`, so they are the run's probes' models (None: full rank).
        warm_start: the run's `TrainConfig.warm_start` (the largest noise level it was trained on), or None.
    """

    network: object
    train: Dataset
    test: Dataset | None
    run_dir: Path | None
    step: int | None
    weights: str
    out: Path
    seed: int
    num_queries: int
    source: str = ""
    reference_rank: int | None = None
    warm_start: float | None = None

    @property
    def flat(self) -> np.ndarray:
        """Training images as flat vectors `(N, D)`."""
        return np.asarray(self.train.flat)

    def path(self, name: str) -> Path:
        """`out / name`."""
        return self.out / name

    def key(self, purpose: str) -> jax.Array:
        """The key of the draws of `purpose` under `--seed` (`analysis._common.command_key`)."""
        return command_key(self.seed, purpose)

    def network_start(self, noise, sigmas, gaussian, *, warm_start: float | None = None) -> SamplingStart:
        """Where a sampler of the network starts for `noise (M, D)` on `sigmas` (`gaussjax.nn.sampling_start`):
        `sigmas[0] noise`, whitened for a whitened run and teleported by `gaussian` to the run's warm start
        (or to `warm_start`, when given)."""
        limit = self.warm_start if warm_start is None else warm_start
        return sampling_start(self.network, noise, sigmas, warm_start=limit, gaussian=gaussian)


def add_common_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """The options every analysis command shares."""
    source = parser.add_argument_group("what to analyse")
    source.add_argument("--run", type=Path, default=None, help="a python -m train run directory")
    source.add_argument("--network", type=Path, default=None,
                        help="instead of --run: a network file, an NVlabs/edm snapshot (.pkl) or a gaussjax "
                             ".safetensors export (needs --dataset)")
    source.add_argument("--step", type=step_option, default=None, help="checkpoint step, or 'latest' (default)")
    source.add_argument("--weights", default="ema", choices=("ema", "raw"), help="EMA (default) or raw weights")
    source.add_argument("--dataset", default=None,
                        help="dataset name (default: the run's; required without --run)")
    source.add_argument("--data-dir", type=Path, default=None, help="where file-based datasets are")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--num-queries", type=int, default=command.num_queries,
                        help=f"query points (or samples) per noise level (default {command.num_queries})")
    parser.set_defaults(command=command)


def step_option(text: str) -> int | None:
    """`--step` as an int, or None for 'latest'."""
    if str(text) == "latest":
        return None
    try:
        step = int(str(text))
    except ValueError:
        step = -1
    if step < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer or 'latest', got {text!r}")
    return step


def check_shared_options(args: argparse.Namespace) -> None:
    """The shared options alone, before anything is read."""
    check_int("--num-queries", args.num_queries, minimum=2)
    check_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    if args.run is not None and args.network is not None:
        raise InputValueError("pass either `--run RUN_DIR` or `--network FILE`, not both")
    if args.network is not None:
        if args.dataset is None:
            raise InputValueError("`--network` needs `--dataset NAME` (the data the network was trained on)")
        if args.step is not None:
            raise InputValueError("`--step` selects a run's checkpoint; a `--network` file holds one network")
        if not Path(args.network).is_file():
            raise InputFileNotFoundError(f"`--network` {args.network} is not a file")
        if Path(args.network).suffix not in NETWORK_SUFFIXES:
            raise InputValueError(f"`--network` must be a {' or '.join(NETWORK_SUFFIXES)} file, got "
                                  f"{Path(args.network).name!r}")
    elif args.run is None and args.command.needs_network:
        raise InputValueError("this command analyses a network: pass `--run RUN_DIR` or `--network FILE`")
    elif args.run is None and args.dataset is None:
        raise InputValueError("pass `--run RUN_DIR` or `--dataset NAME`")


def load_network_file(path: Path):
    """A `NeuralDenoiser` from an EDM snapshot `.pkl` (`load_edm_pickle`) or a `.safetensors` export."""
    from gaussjax.nn import load_edm_pickle, load_safetensors

    path = Path(path)
    return (load_edm_pickle if path.suffix == ".pkl" else load_safetensors)(path)


def _read_run(run_dir: Path, dataset_name: str | None):
    """The run's config (`gaussjax.runs.read_run_files`), after checking that `run_dir` is one."""
    from gaussjax.runs import read_run_files

    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise InputFileNotFoundError(
            f"{run_dir} is not a run directory ({config_file} is {'not a file' if config_file.exists() else 'missing'}"
            "): pass `--run` a python -m train output directory")
    config, _ = read_run_files(run_dir)
    if dataset_name is not None and dataset_name != config.dataset:
        raise InputValueError(f"`--dataset` {dataset_name!r} does not match the run's dataset {config.dataset!r}")
    return config


def load_context(args: argparse.Namespace) -> AnalysisContext:
    """Check the options, create `--out`, read the data, run the command's checks, then load the network.

    With `--step latest`, the step analysed is the checkpoint actually read: a damaged newer one is
    skipped, and the fallback is announced on stderr.
    """
    command: Command = args.command
    check_shared_options(args)
    out = prepare_out(args.out, command.outputs)
    run_dir = None if args.run is None else Path(args.run)
    dataset_name, options, reference_rank, warm_start = args.dataset, {}, None, None
    if run_dir is not None:
        config = _read_run(run_dir, dataset_name)
        dataset_name, options = config.dataset, dict(config.dataset_options)
        reference_rank, warm_start = config.probe_gmm_rank, config.warm_start
    train = load_dataset(dataset_name, root=args.data_dir, split="train", **options)
    try:
        test = load_dataset(dataset_name, root=args.data_dir, split="test", **options)
    except InputValueError:
        test = None  # (folder and array datasets have no test split)
    context = AnalysisContext(None, train, test, run_dir, args.step, args.weights, out, args.seed, args.num_queries,
                              f"dataset {dataset_name!r}" if run_dir is None else str(run_dir), reference_rank,
                              warm_start)
    command.validate(context, args)
    if not command.needs_network:
        return context
    if args.network is not None:
        network, step, source = load_network_file(args.network), None, str(args.network)
    else:
        network, step = load_run_network(run_dir, args.step, args.weights)
        source = f"{run_dir} (step {step}, {args.weights} weights)"
    if tuple(network.image_shape) != train.images.shape[1:]:
        raise InputValueError(f"the network takes images of shape {tuple(network.image_shape)}, but dataset "
                              f"{dataset_name!r} has images of shape {train.images.shape[1:]}")
    return dataclasses.replace(context, network=network, step=step, source=source)


def load_run_network(run_dir: Path, step: int | None, weights: str) -> tuple[object, int]:
    """`(network, step read)` of a run's checkpoint `step` (None: the newest readable one).

    Warnings (an unreadable newer checkpoint skipped) are printed on stderr as one `warning:`
    line each, followed by the step analysed instead of the newest.
    """
    from gaussjax.runs import Checkpointer, load_checkpoint

    steps = Checkpointer(run_dir, read_only=True).steps()
    if step is not None and step not in steps:
        raise InputValueError(f"`--step` {step} has no checkpoint in {run_dir}; checkpoints: {steps}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        loaded = load_checkpoint(run_dir, step=step, weights=weights)
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    if step is None and loaded.step != steps[-1]:
        print(f"warning: analysing step {loaded.step}, the newest readable checkpoint of {run_dir} (newer: "
              f"{', '.join(str(s) for s in steps if s > loaded.step)})", file=sys.stderr)
    return loaded.denoiser, loaded.step
