"""Writing an analysis command's results: a tidy CSV, a PNG, and the lines of its summary."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

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
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def save_figure(fig, path: Path) -> Path:
    """Save and close a matplotlib figure."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.2, 3.2)):
    """A figure with `nrows x ncols` axes of `size` inches each (axes always a 2-D array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes
