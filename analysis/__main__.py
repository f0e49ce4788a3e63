"""`python -m analysis COMMAND ...`: reproduce the paper's figures on a training run or a dataset.

    python -m analysis dataset digits                       # dataset summary and covariance spectrum
    python -m analysis gaussian-theory --dataset digits     # Fig. 3: psi, xi, d xi / d sigma, amplification
    python -m analysis score-agreement --run runs/digits    # Fig. 6: network vs analytic scores over sigma
    python -m analysis compare-runs runs/a runs/b --out cmp # runs against each other: loss, FD, FUV vs step

Every checkpoint command takes `--run RUN_DIR [--step N|latest] [--weights ema|raw] [--out DIR]
[--seed S] [--num-queries Q]`, writes a tidy CSV and a PNG into `--out` and prints a short
summary (docs/analysis.md); `compare-runs` takes run directories instead (`RUN [RUN ...]`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from gaussjax import InputError

# the command modules, in the order of the paper's figures; each defines COMMAND, an `analysis._common.Command`
COMMAND_MODULES = ("gaussian_theory", "score_agreement", "trajectories", "samples", "gmm_sweep", "score_field",
                   "learning_dynamics", "teleport", "compare_runs", "report")

# What a user's options, paths and files cause, printed as one `error:` line (exit 2) instead of a traceback:
# gaussjax's input-error family (options, file contents and run directories refused by name, unreadable
# checkpoints), options argparse refuses, and paths the system cannot read or write (OSError). Anything else is
# a bug: its traceback shows.
USAGE_ERRORS = (InputError, argparse.ArgumentError, OSError)


def commands() -> list:
    """The registry: every analysis command's `Command`, in the order of the paper's figures."""
    return [importlib.import_module(f"analysis.{name}").COMMAND for name in COMMAND_MODULES]


def _dataset_command(args: argparse.Namespace) -> None:
    from analysis.dataset_summary import figure_names, format_summary, save_figures, summarize
    from analysis.output import prepare_out
    from gaussjax.data import load_dataset

    if args.out is not None:
        prepare_out(args.out, figure_names(args.name))
    dataset = load_dataset(args.name, root=args.root, split=args.split)
    summary = summarize(dataset)
    print(format_summary(summary))
    if args.out is not None:
        for path in save_figures(dataset, summary, args.out):
            print(f"wrote {path}")


def _analysis_command(args: argparse.Namespace) -> None:
    from analysis.context import load_context

    context = load_context(args)
    for line in args.command.run(context, args).lines():
        print(line)


def _multi_run_command(args: argparse.Namespace) -> None:
    for line in args.command.run(None, args).lines():
        print(line)


def build_parser() -> argparse.ArgumentParser:
    from analysis.context import add_common_arguments
    from gaussjax.data import DATASETS

    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__, exit_on_error=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command_name", required=True)
    dataset = subparsers.add_parser("dataset", help="summarize a dataset and its covariance spectrum",
                                    exit_on_error=False)
    dataset.add_argument("name", nargs="?", default="digits", choices=DATASETS, help="dataset (default: digits)")
    dataset.add_argument("--root", type=Path, default=None, help="where the files are (file-based datasets)")
    dataset.add_argument("--split", default="train", choices=("train", "test", "all"))
    dataset.add_argument("--out", type=Path, default=None, help="directory for sample and spectrum PNGs")
    dataset.set_defaults(handler=_dataset_command)
    for command in commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter, exit_on_error=False)
        if command.multi_run:
            command.add_arguments(sub)
            sub.set_defaults(command=command, handler=_multi_run_command)
            continue
        add_common_arguments(sub, command)
        command.add_arguments(sub)
        sub.set_defaults(handler=_analysis_command)
    return parser


def _message(error: Exception) -> str:
    """`error`'s message on one line; an option argparse refused is named as the library names arguments."""
    if isinstance(error, argparse.ArgumentError) and error.argument_name is not None:
        return " ".join(f"`{error.argument_name}` {error.message}".split())
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
    except USAGE_ERRORS as error:
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
