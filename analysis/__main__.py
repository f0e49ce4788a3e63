"""`python -m analysis COMMAND ...`: reproduce the paper's figures on a training run or a dataset.

    python -m analysis dataset digits                       # dataset summary and covariance spectrum
    python -m analysis gaussian-theory --dataset digits     # Fig. 3: psi, xi, d xi / d sigma, amplification
    python -m analysis score-agreement --run runs/digits    # Fig. 6: network vs analytic scores over sigma

Every checkpoint command takes `--run RUN_DIR [--step N|latest] [--weights ema|raw] [--out DIR]
[--seed S] [--num-queries Q]`, writes a tidy CSV and a PNG into `--out` and prints a short
summary (docs/analysis.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from train.errors import TrainingError

# command modules, in the order of the paper's figures; each defines NAME, HELP, NEEDS_NETWORK, OUTPUTS (the
# files it writes in --out), add_arguments(parser), check(context, args) (its options and their memory, before
# any work; run calls it first) and run(context, args) -> summary lines
COMMAND_MODULES = tuple(
    f"analysis.{name}"
    for name in ("gaussian_theory", "score_agreement", "trajectories", "samples", "gmm_sweep", "score_field",
                 "learning_dynamics", "teleport", "report")
)


# What a user's options, paths and files cause, printed as one `error:` line (exit 2) instead of a traceback:
# options and file contents refused by name (ValueError, TypeError, KeyError), paths that cannot be read or
# written (OSError), and run directories that cannot be used, e.g. unreadable checkpoints (TrainingError).
USAGE_ERRORS = (ValueError, TypeError, KeyError, OSError, TrainingError)


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
    for line in args.module.run(context, args):
        print(line)


def build_parser() -> argparse.ArgumentParser:
    from analysis.context import add_common_arguments
    from gaussjax.data import DATASETS

    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset", help="summarize a dataset and its covariance spectrum")
    dataset.add_argument("name", nargs="?", default="digits", choices=DATASETS, help="dataset (default: digits)")
    dataset.add_argument("--root", type=Path, default=None, help="where the files are (file-based datasets)")
    dataset.add_argument("--split", default="train", choices=("train", "test", "all"))
    dataset.add_argument("--out", type=Path, default=None, help="directory for sample and spectrum PNGs")
    dataset.set_defaults(handler=_dataset_command)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        command = commands.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_arguments(command, needs_network=module.NEEDS_NETWORK,
                             num_queries=getattr(module, "NUM_QUERIES", 256))
        module.add_arguments(command)
        command.set_defaults(handler=_analysis_command, module=module)
    return parser


def _message(error: Exception) -> str:
    """`error`'s message on one line (a KeyError's without the quotes of its repr)."""
    text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else error
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USAGE_ERRORS as error:
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
