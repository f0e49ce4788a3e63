"""Writing an analysis command's results: the checked `--out` directory, a tidy CSV, a PNG."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

from gaussjax.checks import InputValueError

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    """Rows (dicts with at least `columns`) to a CSV with a header; floats keep full precision (`repr`)."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts; a file that is not UTF-8 CSV is a ValueError naming it."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputValueError(f"{path} is not a CSV text file: {error}") from None


def prepare_out(out: Path, names: Iterable[str]) -> Path:
    """Create the output directory `out` and check that the files `names` can be written in it.

    Called before any computation, so that a bad `--out` fails at once, not after the work.

    Args:
        out: the `--out` directory (created with its parents if missing).
        names: the names of the files the command writes in `out`.

    Returns:
        `out`.

    Raises:
        ValueError: naming `--out` and the offending path, if `out` is not a directory or cannot be
            created or written to, or if a file to write exists and is a directory (or another
            non-file) or read-only.
    """
    out = Path(out)
    for path in (out, *out.parents):  # the nearest existing one must be a directory
        if path.exists():
            if not path.is_dir():
                raise InputValueError(f"`--out` {out} cannot be a directory: {path} is a file; pass a directory (it is "
                                      "created if missing)")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputValueError(f"`--out` {out} cannot be created: {error.strerror} ({error.filename})") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise InputValueError(f"`--out` {out} is not writable: {error.strerror}") from None
    for path in (out / name for name in names):
        if path.exists() and not path.is_file():
            raise InputValueError(f"`--out` {out}: {path} is a directory or another non-file, and the command writes a "
                                  "file there; remove it or choose another `--out`")
        if path.exists() and not os.access(path, os.W_OK):
            raise InputValueError(f"`--out` {out}: {path} exists and is not writable")
    return out


def save_figure(fig, path: Path) -> Path:
    """Save and close a matplotlib figure."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.2, 3.2)):
    """A figure with `nrows x ncols` axes of `size` inches each (axes always a 2-D array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes
