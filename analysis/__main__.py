"""`python -m analysis dataset [NAME] [--root DIR] [--split S] [--out DIR]`: summarize a dataset.

`dataset`, the one command so far, prints a dataset's size, pixel statistics, class
counts and the covariance spectrum its Gaussian model is built from (top eigenvalues,
components for 50/90/99% of the variance); with --out it also writes sample and
spectrum figures (PNG). NAME defaults to the embedded `digits`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _dataset_command(args: argparse.Namespace) -> None:
    from analysis.dataset_summary import format_summary, save_figures, summarize
    from gaussjax.data import load_dataset

    dataset = load_dataset(args.name, root=args.root, split=args.split)
    summary = summarize(dataset)
    print(format_summary(summary))
    if args.out is not None:
        for path in save_figures(dataset, summary, args.out):
            print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    from gaussjax.data import DATASETS

    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset", help="summarize a dataset and its covariance spectrum")
    dataset.add_argument("name", nargs="?", default="digits", choices=DATASETS, help="dataset (default: digits)")
    dataset.add_argument("--root", type=Path, default=None, help="where the files are (file-based datasets)")
    dataset.add_argument("--split", default="train", choices=("train", "test", "all"))
    dataset.add_argument("--out", type=Path, default=None, help="directory for sample and spectrum PNGs")
    dataset.set_defaults(run=_dataset_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
