"""`python -m analysis dataset NAME`: what a dataset looks like to the Gaussian model.

Prints its size, pixel statistics, class counts, and the spectrum of its covariance:
the top eigenvalues and how many principal components carry 50/90/99% of the
variance. A concentrated spectrum is what makes the Gaussian score approximation of
the paper (Sec. 3-4) accurate at high noise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from gaussjax.data import Dataset

VARIANCE_LEVELS = (0.5, 0.9, 0.99)


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    name: str
    split: str
    num_images: int
    image_shape: tuple[int, int, int]
    pixel_mean: float
    pixel_std: float
    class_counts: dict[int, int] | None
    eigvals: np.ndarray  # (D,) covariance eigenvalues, descending
    components_for: dict[float, int]  # variance fraction -> number of principal components

    @property
    def total_variance(self) -> float:
        return float(self.eigvals.sum())


def summarize(dataset: Dataset) -> DatasetSummary:
    """Statistics of `dataset`, including its covariance spectrum (computed in float64)."""
    flat = dataset.flat.astype(np.float64)
    centered = flat - flat.mean(axis=0)
    eigvals = np.linalg.eigvalsh(centered.T @ centered / len(flat))[::-1].clip(min=0.0)
    explained = np.cumsum(eigvals) / eigvals.sum()
    components_for = {level: int(np.searchsorted(explained, level) + 1) for level in VARIANCE_LEVELS}
    class_counts = None
    if dataset.labels is not None:
        values, counts = np.unique(dataset.labels, return_counts=True)
        class_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    return DatasetSummary(
        name=dataset.name,
        split=dataset.split,
        num_images=len(dataset),
        image_shape=dataset.image_shape,
        pixel_mean=float(flat.mean()),
        pixel_std=float(flat.std()),
        class_counts=class_counts,
        eigvals=eigvals,
        components_for=components_for,
    )


def format_summary(summary: DatasetSummary, *, top: int = 8) -> str:
    """A human-readable report of `summary`."""
    dim = int(np.prod(summary.image_shape))
    lines = [
        f"dataset {summary.name!r} ({summary.split}): {summary.num_images} images of "
        f"{'x'.join(map(str, summary.image_shape))} (D = {dim})",
        f"pixels: mean {summary.pixel_mean:+.3f}, std {summary.pixel_std:.3f} (range [-1, 1])",
    ]
    if summary.class_counts is not None:
        counts = ", ".join(f"{k}: {v}" for k, v in summary.class_counts.items())
        lines.append(f"classes: {counts}")
    head = ", ".join(f"{v:.3f}" for v in summary.eigvals[:top])
    lines.append(f"covariance: trace {summary.total_variance:.2f}; top eigenvalues {head}")
    for level, count in summary.components_for.items():
        lines.append(f"  {level:.0%} of the variance lies in the top {count} of {dim} principal components")
    return "\n".join(lines)


def figure_names(name: str) -> tuple[str, str]:
    """The PNG files `save_figures` writes for dataset `name`: sample images, covariance spectrum."""
    return f"{name}_samples.png", f"{name}_spectrum.png"


def save_figures(dataset: Dataset, summary: DatasetSummary, out: Path) -> list[Path]:
    """Save a grid of sample images and the eigenvalue spectrum as PNGs in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    count = min(64, len(dataset))
    side = int(np.ceil(np.sqrt(count)))
    figure, axes = plt.subplots(side, side, figsize=(side, side))
    for axis, image in zip(axes.ravel(), dataset.images[:count], strict=False):
        image = (image + 1) / 2
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    for axis in axes.ravel():
        axis.axis("off")
    samples_name, spectrum_name = figure_names(summary.name)
    samples = out / samples_name
    figure.savefig(samples, dpi=80, bbox_inches="tight")
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.loglog(np.arange(1, len(summary.eigvals) + 1), np.maximum(summary.eigvals, 1e-12))
    axis.set(xlabel="principal component k", ylabel="eigenvalue $\\lambda_k$", title=f"{summary.name} spectrum")
    spectrum = out / spectrum_name
    figure.savefig(spectrum, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return [samples, spectrum]
