"""`python -m analysis learning-dynamics --run RUN_DIR`: the paper's Fig. 12 from a run's probes.

Reads the run's `probes.csv` (written at every checkpoint by `python -m train`, `train.probes`)
and `loss.csv`; needs no network. Plots the fraction of the network's score variance that each
analytic score leaves unexplained (FUV = 1 - EV, Fig. 12's y axis) against training step, for
a few noise levels, on the training queries (solid) and the held-out queries (dashed), beside
the training loss. At low noise the paper finds the Gaussian's FUV dipping and then rising
(Sec. 5: the network learns the Gaussian structure first, then moves to richer models):
for each sigma the step of the Gaussian's minimum FUV is reported, and whether the FUV at the
last step is more than `RISE` (10%) above that minimum.

Writes:
    learning_dynamics.csv  the tidy probe rows of `--weights` (up to `--step`): step, sigma,
                           reference, weights, queries, fuv_score, fuv_denoiser, r2_denoiser
                           (values as in probes.csv; a pre-held-out run has train queries only
                           and no r2_denoiser, written as nan)
    gaussian_minimum.csv   sigma, queries, min_step, min_fuv, final_fuv, rises: per sigma and
                           query set, the first step of the minimum of `--statistic` for
                           `--reference` (default gaussian), its value, the value at the last
                           step, and whether final_fuv > (1 + RISE) min_fuv
    learning_dynamics.png  FUV vs step (log y) at a few sigmas, and the loss curve; the step axis is
                           logarithmic in step + 1 (step 0 at the left edge, the last step at the
                           right), one legend below the panels
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from analysis._common import Command, Result
from analysis.output import figure, read_csv, save_figure, write_csv
from gaussjax.checks import InputFileNotFoundError, InputValueError

OUTPUTS = ("learning_dynamics.csv", "gaussian_minimum.csv", "learning_dynamics.png")
COLUMNS = ["step", "sigma", "reference", "weights", "queries", "fuv_score", "fuv_denoiser", "r2_denoiser"]
MINIMUM_COLUMNS = ["sigma", "queries", "min_step", "min_fuv", "final_fuv", "rises"]
STATISTICS = ("fuv_score", "fuv_denoiser")
RISE = 0.10  # a rise after the minimum counts when the final FUV exceeds the minimum by more than this fraction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", default="gaussian",
                        help="analytic model of the minimum table (default gaussian; any reference in probes.csv)")
    parser.add_argument("--statistic", default="fuv_score", choices=STATISTICS,
                        help="FUV of the score (default, Fig. 12) or of the denoiser")
    parser.add_argument("--panels", type=int, default=4, help="noise levels plotted (default 4, spread over the grid)")


def validate(context, args) -> None:
    """Refuse a context without a run and bad options (named), before reading anything."""
    if context.run_dir is None:
        raise InputValueError("learning-dynamics reads a run's probes.csv and loss.csv: pass `--run RUN_DIR`")
    if args.panels < 1:
        raise InputValueError(f"`--panels` must be >= 1, got {args.panels}")


def run(context, args) -> Result:
    """Read the run's probes and loss, write the CSVs and the PNG, return the dip-then-rise summary."""
    rows = select_rows(read_probes(context.run_dir / "probes.csv"), context.weights, context.step)
    references = list(dict.fromkeys(r["reference"] for r in rows))
    if args.reference not in references:
        raise InputValueError(f"`--reference` {args.reference!r} is not in probes.csv; references: {references}")
    minimum = minimum_table(rows, args.reference, args.statistic)
    loss = read_loss(context.run_dir / "loss.csv", context.step)
    files = [write_csv(context.path("learning_dynamics.csv"), rows, COLUMNS),
             write_csv(context.path("gaussian_minimum.csv"), minimum, MINIMUM_COLUMNS),
             save_figure(plot(rows, loss, args.statistic, args.panels), context.path("learning_dynamics.png"))]
    return Result(summary_lines(minimum, args.reference, args.statistic, context.weights), files)


def read_probes(path: Path) -> list[dict]:
    """probes.csv as typed rows (`COLUMNS`).

    A file that is not a probes table (not UTF-8 CSV, columns missing, values that are not
    numbers) is a ValueError naming the file (and the line).
    """
    if not Path(path).exists():
        raise InputFileNotFoundError(f"{path} not found: the run has not been probed yet (python -m train writes it)")
    rows = read_csv(path)
    missing = {"step", "sigma", "reference", "weights", "queries", "fuv_score", "fuv_denoiser",
               "r2_denoiser"} - set(rows[0] if rows else {})
    if not rows:
        raise InputValueError(f"{path} has no probe rows")
    if missing:
        raise InputValueError(f"{path} lacks the columns {sorted(missing)}: it is not a probes table of this gaussjax "
                              "version (a run from another version needs that version)")
    return [_typed(path, line, row, _probe_row) for line, row in enumerate(rows, start=2)]


def _probe_row(r: dict) -> dict:
    return {"step": int(r["step"]), "sigma": float(r["sigma"]), "reference": r["reference"], "weights": r["weights"],
            "queries": r["queries"], "fuv_score": float(r["fuv_score"]),
            "fuv_denoiser": float(r["fuv_denoiser"]), "r2_denoiser": float(r["r2_denoiser"])}


def _typed(path: Path, line: int, row: dict, convert):
    """`convert(row)`; a value missing or not a number is a ValueError naming `path` and `line`."""
    if None in row.values() or None in row:  # (csv.DictReader: too few or too many fields)
        raise InputValueError(f"{path}, line {line}: expected as many comma-separated values as the header has columns")
    try:
        return convert(row)
    except ValueError as error:
        raise InputValueError(f"{path}, line {line}: {error}") from None


def select_rows(rows: list[dict], weights: str, max_step: int | None) -> list[dict]:
    """The rows of `weights` up to `max_step` (all for None), in file order."""
    chosen = [r for r in rows if r["weights"] == weights and (max_step is None or r["step"] <= max_step)]
    if not chosen:
        raise InputValueError(f"probes.csv has no rows of `--weights` {weights!r}" +
                              ("" if max_step is None else f" up to `--step` {max_step}"))
    return chosen


def read_loss(path: Path, max_step: int | None) -> np.ndarray:
    """loss.csv's `(step, loss)` pairs up to `max_step`, `(L, 2)` (empty if the file is missing)."""
    if not Path(path).exists():
        return np.zeros((0, 2))
    rows = read_csv(path)
    if rows and not {"step", "loss"} <= set(rows[0]):
        raise InputValueError(f"{path} has no columns step and loss")
    pairs = np.array([_typed(path, line, r, lambda r: [float(r["step"]), float(r["loss"])])
                      for line, r in enumerate(rows, start=2)]).reshape(-1, 2)
    return pairs if max_step is None else pairs[pairs[:, 0] <= max_step]


def curve(
    rows: list[dict], reference: str, queries: str, sigma: float, statistic: str
) -> tuple[np.ndarray, np.ndarray]:
    """`statistic` against step `(T,)`, `(T,)` for one reference, query set and sigma, sorted by step."""
    points = sorted((r["step"], r[statistic]) for r in rows
                    if r["reference"] == reference and r["queries"] == queries and r["sigma"] == sigma)
    steps, values = np.array(points, dtype=np.float64).reshape(-1, 2).T
    return steps.astype(int), values


def minimum_table(rows: list[dict], reference: str, statistic: str) -> list[dict]:
    """Per query set and sigma: the first step of the minimum FUV, the minimum, the final FUV, and whether it rose."""
    table = []
    for queries in dict.fromkeys(r["queries"] for r in rows):
        for sigma in sorted({r["sigma"] for r in rows if r["queries"] == queries}):
            steps, values = curve(rows, reference, queries, sigma, statistic)
            if len(steps) == 0:
                continue
            best = int(np.argmin(values))
            table.append({"sigma": sigma, "queries": queries, "min_step": int(steps[best]),
                          "min_fuv": float(values[best]), "final_fuv": float(values[-1]),
                          "rises": bool(values[-1] > (1 + RISE) * values[best])})
    return table


def panel_sigmas(sigmas: list[float], count: int) -> list[float]:
    """`count` noise levels spread evenly (by index) over the sorted grid, ends included."""
    return [sigmas[i] for i in np.unique(np.linspace(0, len(sigmas) - 1, min(count, len(sigmas))).round().astype(int))]


def plot(rows: list[dict], loss: np.ndarray, statistic: str, panels: int):
    """FUV vs step (log y; solid train, dashed held-out queries) per chosen sigma, and the loss curve.

    Every panel's step axis runs from step 0 to the last step (`step_axis`); one legend for the
    figure sits below the panels. Returns the figure.
    """
    sigmas = panel_sigmas(sorted({r["sigma"] for r in rows}), panels)
    references = list(dict.fromkeys(r["reference"] for r in rows))
    fig, axes = figure(ncols=len(sigmas) + 1)
    for axis, sigma in zip(axes[0], sigmas, strict=False):
        for index, reference in enumerate(references):
            for queries, style in (("train", "-"), ("test", "--")):
                steps, values = curve(rows, reference, queries, sigma, statistic)
                if len(steps):
                    axis.plot(steps, np.maximum(values, 1e-12), style, marker=".", color=f"C{index}", clip_on=False)
        axis.set_yscale("log")
        axis.set(title=f"sigma = {sigma:.3g}", ylabel=f"{statistic} (1 - EV)")
    loss_axis = axes[0][-1]
    if len(loss):
        loss_axis.plot(loss[:, 0], loss[:, 1], color="k", clip_on=False)
    loss_axis.set(title="training loss", ylabel="loss", yscale="log")
    last_step = max([r["step"] for r in rows] + loss[:, 0].astype(int).tolist())
    for axis in axes[0]:
        step_axis(axis, last_step)
    handles = [Line2D([], [], color=f"C{i}", marker=".", label=reference) for i, reference in enumerate(references)]
    handles += [Line2D([], [], color="0.4", ls=style, label=f"{queries} queries")
                for queries, style in (("train", "-"), ("held-out", "--"))]
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    return fig


def step_axis(axis, last_step: int) -> None:
    """Training step on a log scale of `step + 1`, from step 0 (left edge) to `last_step` (right edge).

    Major ticks at 0, 1, 10, 100, ... labelled as steps, minor ticks between them.
    """
    axis.set_xscale("function", functions=(lambda step: np.log10(np.maximum(step, 0) + 1),
                                           lambda x: 10.0 ** np.asarray(x) - 1))
    decades = 10 ** np.arange(int(np.log10(max(last_step, 1))) + 1)
    axis.set_xticks([0, *decades], labels=["0", *(f"{d:d}" for d in decades)])
    axis.set_xticks([m * d for d in decades for m in range(2, 10) if m * d < last_step], minor=True)
    axis.set_xlim(0, max(last_step, 1))
    axis.set_xlabel("training step")


def summary_lines(minimum: list[dict], reference: str, statistic: str, weights: str) -> list[str]:
    """The dip-then-rise table: per query set and sigma, the step and value of the minimum, the final value."""
    lines = [(f"{reference} {statistic} ({weights} weights): step of the minimum, and whether it rises "
              f"> {RISE:.0%} after it"),
             f"{'queries':>8} {'sigma':>9} {'min step':>9} {'min':>10} {'final':>10} {'rises':>6}"]
    for row in minimum:
        lines.append(f"{row['queries']:>8} {row['sigma']:>9.3g} {row['min_step']:>9d} {row['min_fuv']:>10.3g} "
                     f"{row['final_fuv']:>10.3g} {'yes' if row['rises'] else 'no':>6}")
    return lines


COMMAND = Command(
    name="learning-dynamics",
    help="Fig. 12: FUV of the network vs analytic scores over training, and the Gaussian's dip-then-rise",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run, needs_network=False,
    needs_run=True,  # reads the run's probes.csv and loss.csv (`report` skips it on a --network file)
)
