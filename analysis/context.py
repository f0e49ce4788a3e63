"""What every checkpoint-analysis command starts from: a network, its data, and where to write.

`add_common_arguments` gives each command the same options (`--run`, `--step`, `--weights`,
`--network`, `--dataset`, `--out`, `--seed`, `--num-queries`), and `load_context` turns them
into an `AnalysisContext`, failing early with a clear message for an `--out` that cannot take
the command's files, a missing run, a step without a checkpoint, or a dataset that is not the
one the run was trained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np

from analysis.output import prepare_out
from gaussjax.data import Dataset, load_dataset

DEFAULT_OUT = Path("analysis_out")


@dataclasses.dataclass(frozen=True)
class AnalysisContext:
    """A trained network with its training and held-out data.

    Attributes:
        network: the denoiser (a `NeuralDenoiser`), or None for commands that need only data.
        train: the training split `Dataset` (what the analytic models are fitted to).
        test: the held-out split, or None if the dataset has none.
        run_dir: the run directory, or None for `--network` files.
        step: the checkpoint step analysed (None when not from a run).
        weights: `'ema'` or `'raw'`.
        out: directory for CSV and PNG files (created and checked: `prepare_out`).
        seed: seed of every random draw (queries, noise, `x_T`).
        num_queries: query points per noise level (or samples, for sampling commands).
        source: what is analysed, in words (the run, step and weights, or the network file).
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

    @property
    def flat(self) -> np.ndarray:
        """Training images as flat vectors `(N, D)`."""
        return np.asarray(self.train.flat)

    def path(self, name: str) -> Path:
        """`out / name`."""
        return self.out / name


def add_common_arguments(parser: argparse.ArgumentParser, *, num_queries: int = 256, needs_network: bool = True):
    """The options every analysis command shares."""
    source = parser.add_argument_group("what to analyse")
    source.add_argument("--run", type=Path, default=None, help="a python -m train run directory")
    source.add_argument("--network", type=Path, default=None,
                        help="instead of --run: a network file, an NVlabs/edm snapshot (.pkl) or a gaussjax "
                             ".safetensors export (needs --dataset)")
    source.add_argument("--step", default="latest", help="checkpoint step, or 'latest' (default)")
    source.add_argument("--weights", default="ema", choices=("ema", "raw"), help="EMA (default) or raw weights")
    source.add_argument("--dataset", default=None,
                        help="dataset name (default: the run's; required without --run)")
    source.add_argument("--data-dir", type=Path, default=None, help="where file-based datasets are")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--num-queries", type=int, default=num_queries,
                        help=f"query points (or samples) per noise level (default {num_queries})")
    parser.set_defaults(needs_network=needs_network)


def parse_step(text) -> int | None:
    """`--step` as an int, or None for 'latest'."""
    if text is None or str(text) == "latest":
        return None
    try:
        step = int(str(text))
    except ValueError:
        raise ValueError(f"`--step` must be a non-negative integer or 'latest', got {text!r}") from None
    if step < 0:
        raise ValueError(f"`--step` must be >= 0, got {step}")
    return step


NETWORK_SUFFIXES = (".pkl", ".safetensors")


def load_network_file(path: Path):
    """A `NeuralDenoiser` from an EDM snapshot `.pkl` (`load_edm_pickle`) or a `.safetensors` export."""
    from gaussjax.nn import load_edm_pickle, load_safetensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`--network` {path} is not a file")
    loaders = dict(zip(NETWORK_SUFFIXES, (load_edm_pickle, load_safetensors)))
    if path.suffix not in loaders:
        raise ValueError(f"`--network` must be a {' or '.join(NETWORK_SUFFIXES)} file, got {path.name!r}")
    return loaders[path.suffix](path)


def load_context(args: argparse.Namespace) -> AnalysisContext:
    """Check and create `--out`, then load the run's network (unless the command needs none) and data.

    `--out` is checked first (`prepare_out` with the command module's `OUTPUTS`), before anything
    is read. With `--step latest`, the step analysed is the checkpoint actually read: a damaged
    newer one is skipped, and the fallback is announced on stderr.
    """
    if args.num_queries < 2:
        raise ValueError(f"`--num-queries` must be >= 2, got {args.num_queries}")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"`--seed` must be in [0, 2**32), got {args.seed}")
    step, network, run_dir, dataset_name, options = parse_step(args.step), None, None, args.dataset, {}
    if args.run is not None and args.network is not None:
        raise ValueError("pass either `--run RUN_DIR` or `--network FILE`, not both")
    out = prepare_out(args.out, args.module.OUTPUTS)
    if args.network is not None:
        if dataset_name is None:
            raise ValueError("`--network` needs `--dataset NAME` (the data the network was trained on)")
        if args.step != "latest":
            raise ValueError("`--step` selects a run's checkpoint; a `--network` file holds one network")
        network = load_network_file(args.network)
    elif args.run is not None:
        from train.configs import read_run_files

        run_dir = Path(args.run)
        config_file = run_dir / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory ({config_file} is "
                                    f"{'not a file' if config_file.exists() else 'missing'}): pass `--run` a python -m "
                                    "train output directory")
        config, _ = read_run_files(run_dir)
        if dataset_name is not None and dataset_name != config.dataset:
            raise ValueError(f"`--dataset` {dataset_name!r} does not match the run's dataset {config.dataset!r}")
        dataset_name, options = config.dataset, dict(config.dataset_options)
        if args.needs_network:
            network, step = load_run_network(run_dir, step, args.weights)
    elif args.needs_network:
        raise ValueError("this command analyses a network: pass `--run RUN_DIR` or `--network FILE`")
    if dataset_name is None:
        raise ValueError("pass `--run RUN_DIR` or `--dataset NAME`")
    train = load_dataset(dataset_name, root=args.data_dir, split="train", **options)
    try:
        test = load_dataset(dataset_name, root=args.data_dir, split="test", **options)
    except ValueError:
        test = None  # (folder and array datasets have no test split)
    if network is not None and tuple(network.image_shape) != train.images.shape[1:]:
        raise ValueError(f"the network takes images of shape {tuple(network.image_shape)}, but dataset "
                         f"{dataset_name!r} has images of shape {train.images.shape[1:]}")
    if run_dir is not None:
        source = f"{run_dir} (step {step}, {args.weights} weights)" if args.needs_network else str(run_dir)
    else:
        source = str(args.network) if network is not None else f"dataset {dataset_name!r}"
    return AnalysisContext(network, train, test, run_dir, step, args.weights, out, args.seed, args.num_queries, source)


def load_run_network(run_dir: Path, step: int | None, weights: str) -> tuple[object, int]:
    """`(network, step read)` of a run's checkpoint `step` (None: the newest readable one).

    Warnings (an unreadable newer checkpoint skipped) are printed on stderr as one `warning:`
    line each, followed by the step analysed instead of the newest.
    """
    from train.checkpoints import Checkpointer, load_checkpoint

    steps = Checkpointer(run_dir, read_only=True).steps()
    if step is not None and step not in steps:
        raise ValueError(f"`--step` {step} has no checkpoint in {run_dir}; checkpoints: {steps}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        loaded = load_checkpoint(run_dir, step=step, weights=weights)
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    if step is None and loaded.step != steps[-1]:
        print(f"warning: analysing step {loaded.step}, the newest readable checkpoint of {run_dir} (newer: "
              f"{', '.join(str(s) for s in steps if s > loaded.step)})", file=sys.stderr)
    return loaded.denoiser, loaded.step
