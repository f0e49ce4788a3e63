"""`python -m analysis compare-runs RUN [RUN ...]`: training runs against each other, checkpoint by checkpoint.

For the design experiments of the paper's Sec. 8 (plain training against a Gaussian bypass,
whitened data, a warm start; several seeds each): at every checkpoint of every run,

- `loss`: the training loss of `loss.csv`, the row at or before the checkpoint's step (nan before
  the first row);
- `fd`: the Frechet distance between the features of `--num-samples` samples of the checkpoint's
  EMA network and those of the whole training split, on gaussjax's feature net (`train_feature_net`
  on the training split with `command_key(--seed, 'feature-net')`, cached in `OUT/feature_net/` as
  `teleport` caches it). Every run and checkpoint starts from the SAME draw
  `z` (`command_key(--seed, 'initial-states')`; `x_T = sigma_max z` is the `x_T` of `samples` and
  `teleport`) and takes the deterministic Heun sampler on `karras_sigmas(--num-steps)`, started
  where the run needs (`gaussjax.nn.sampling_start`): a whitened run from the whitened prior
  mapped back, a run with a `warm_start` sigma teleported by the training set's Gaussian to the
  first grid level at or below it (analytical teleportation);
- `fuv_<reference>@<sigma>`: the fraction of the EMA network's score variance the reference leaves
  unexplained (`fuv_score` of `probes.csv`, train queries; Fig. 12's y axis) for `gaussian`, the
  k-means GMM `gmm{--gmm}` and `delta`, at each of `--sigmas` (probe noise levels, named with 3
  significant digits); nan where the probes lack the row.

All runs must be of one dataset (the same `dataset` and `dataset_options` in `config.json`).

Files in `--out`:
    compare_runs.csv          columns `run, step, metric, value`: one row per run (the RUN path as
                              given), checkpoint and metric.
    compare_runs_summary.csv  columns `run, label, final_step, final_fd, target_fd, reaches_target_at`:
                              per run, its last checkpoint's FD and the first checkpoint step whose FD is
                              at or below the target (empty: never).
    compare_runs.png          one panel per metric against step (log of step + 1), one line per run,
                              one colour per label.
    feature_net/              the cached feature net.

Labels: `--label A,B,...` (one per RUN, in order; runs with one label are seeds of one variant);
default: the run's config name, followed by `field=value` for every `config.json` field (but
`seed`) in which it differs from the first run's.

Summary: for the target FD (`--target-fd`, default the first run's final FD), which run reaches it
first (its step); each run's final FD and step to the target; per label, the median and range of
both over its runs; and the FD of `--num-samples` training images (drawn with
`command_key(--seed, 'floor-subset')`) against the whole training split, the part of any FD that
the finite sample count alone causes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import Command, Result, command_key, noise_levels
from analysis.context import DEFAULT_OUT, AnalysisContext
from analysis.learning_dynamics import panel_sigmas, read_loss, read_probes, step_axis
from analysis.memory import FLOAT32, check_memory
from analysis.output import figure, prepare_out, save_figure, write_csv
from analysis.teleport import FEATURE_NET, check_feature_net_dir, feature_extractor, features_of
from analysis.trajectories import initial_states
from gaussjax.checks import InputFileNotFoundError, InputValueError, check_int, check_real
from gaussjax.data import Dataset, load_dataset
from gaussjax.nn import sampling_start
from gaussjax.quality import FeatureStats, frechet_distance
from gaussjax.runs import TrainConfig

OUTPUTS = ("compare_runs.csv", "compare_runs_summary.csv", "compare_runs.png")
COLUMNS = ("run", "step", "metric", "value")
SUMMARY_COLUMNS = ("run", "label", "final_step", "final_fd", "target_fd", "reaches_target_at")
WEIGHTS, QUERIES = "ema", "train"  # the probes' rows compared: EMA weights, noised training images
NUM_SIGMAS = 3  # default noise levels: spread over the probe grid common to all runs
SIGMA_MATCH = 0.005  # a `--sigmas` value names the probe sigma within this relative distance (3 digits)
SAMPLE_BATCH = 512  # samples per sampler call
# float32 arrays of shape (M, D) held at once: x_T, the samples, the sampler's state and intermediates (4)
SAMPLE_ARRAYS = 6
IGNORED_FIELDS = ("seed",)  # config fields that do not make a run another variant


def comma_labels(text: str) -> list[str]:
    """`--label`: comma-separated non-empty labels, one per RUN."""
    labels = [item.strip() for item in str(text).split(",")]
    if not labels or any(not label for label in labels):
        raise argparse.ArgumentTypeError(f"must be comma-separated non-empty labels, one per RUN, got {text!r}")
    return labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN",
                        help="python -m train run directories, one or more (the first is the reference)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--num-samples", type=int, default=256,
                        help="samples per checkpoint for the FD (default 256)")
    parser.add_argument("--num-steps", type=int, default=18, help="Heun steps on the Karras grid (default 18)")
    parser.add_argument("--sigmas", type=noise_levels, default=None,
                        help="probe noise levels of the FUV metrics (default: 3 spread over the runs' probe grid)")
    parser.add_argument("--gmm", type=int, default=None,
                        help="K of the GMM reference gmm{K} (default: the largest K every run probed)")
    parser.add_argument("--target-fd", type=float, default=None,
                        help="the FD to reach (default: the first run's final FD)")
    parser.add_argument("--label", type=comma_labels, default=None,
                        help="comma-separated labels, one per RUN (default: config name and differing fields)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and the feature net (default 0)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where file-based datasets are")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One RUN: its path (as given), config, label, checkpoint steps, probes and loss rows."""

    path: Path
    config: TrainConfig
    label: str
    steps: list[int]
    probes: list[dict]
    loss: np.ndarray


# -- checks, cheapest first -------------------------------------------------------------------------------


def check_options(args: argparse.Namespace) -> None:
    """The options alone, before anything is read."""
    if not args.runs:
        raise InputValueError("pass one or more `RUN` directories (python -m train output directories) to compare")
    check_int("--num-samples", args.num_samples, minimum=2)
    check_int("--num-steps", args.num_steps, minimum=2)
    check_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    if args.gmm is not None:
        check_int("--gmm", args.gmm, minimum=1)
    if args.target_fd is not None:
        check_real("--target-fd", args.target_fd, minimum=0, strict=True)
    resolved = [Path(run).resolve() for run in args.runs]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise InputValueError(f"`RUN` {args.runs[index]} is given twice (also as "
                                  f"{args.runs[resolved.index(path)]}): pass each run once")
    if args.label is not None and len(args.label) != len(args.runs):
        raise InputValueError(f"`--label` must give one label per RUN: {len(args.label)} labels for "
                              f"{len(args.runs)} runs")


def read_config(path: Path) -> TrainConfig:
    """A RUN's config (`gaussjax.runs.read_run_files`), refused by name if `path` is not a run directory."""
    from gaussjax.runs import read_run_files

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise InputFileNotFoundError(
            f"`RUN` {path} is not a run directory ({config_file} is "
            f"{'not a file' if config_file.exists() else 'missing'}): pass python -m train output directories")
    return read_run_files(path)[0]


def checkpoint_steps(path: Path) -> list[int]:
    """A RUN's checkpoint steps, ascending; none is an error naming the run."""
    from gaussjax.runs import Checkpointer

    steps = Checkpointer(Path(path), read_only=True).steps() if (Path(path) / "checkpoints").is_dir() else []
    if not steps:
        raise InputFileNotFoundError(f"`RUN` {path} has no checkpoints (in {Path(path) / 'checkpoints'})")
    return steps


def default_labels(configs: list[TrainConfig]) -> list[str]:
    """Each run's config name, then `field=value` for each field (but `seed`) differing from the first run's."""
    first = config_fields(configs[0])
    labels = []
    for config in configs:
        fields = config_fields(config)
        differing = [f"{name}={fields[name]}" for name in sorted(fields)
                     if name not in (*IGNORED_FIELDS, "name") and fields[name] != first[name]]
        labels.append(" ".join([config.name, *differing]))
    return labels


def config_fields(config: TrainConfig) -> dict:
    """A `TrainConfig`'s fields by name (the network as its architecture mapping), defaults included."""
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    return dict(fields, network=config.network.architecture())


def read_runs(args: argparse.Namespace) -> list[RunInfo]:
    """Every RUN's files, checked: a run directory with checkpoints and probes, all of the first run's dataset."""
    configs = [read_config(path) for path in args.runs]
    first = configs[0]
    for path, config in zip(args.runs, configs, strict=True):
        if (config.dataset, config.dataset_options) != (first.dataset, first.dataset_options):
            raise InputValueError(
                f"`RUN` {path} is a run on dataset {config.dataset!r} {config.dataset_options or ''}, but "
                f"{args.runs[0]} is on {first.dataset!r} {first.dataset_options or ''}: compare runs of one dataset")
    all_steps = [checkpoint_steps(path) for path in args.runs]
    labels = args.label if args.label is not None else default_labels(configs)
    runs = []
    for path, config, steps, label in zip(args.runs, configs, all_steps, labels, strict=True):
        probes = [r for r in read_probes(Path(path) / "probes.csv") if r["weights"] == WEIGHTS
                  and r["queries"] == QUERIES]
        if not probes:
            raise InputValueError(f"`RUN` {path}: probes.csv has no rows of the {WEIGHTS} weights on {QUERIES} queries")
        runs.append(RunInfo(Path(path), config, label, list(steps), probes, read_loss(Path(path) / "loss.csv", None)))
    return runs


def choose_sigmas(runs: list[RunInfo], wanted: list[float] | None) -> list[float]:
    """The probe sigmas of the FUV metrics: `--sigmas` matched to the grid every run probed, or 3 spread over it.

    A wanted sigma names the probe sigma within `SIGMA_MATCH` relative distance; one that no grid
    sigma matches is refused, listing the grid.
    """
    common = sorted(set.intersection(*({r["sigma"] for r in run.probes} for run in runs)))
    if not common:
        raise InputValueError("the runs' probes.csv files share no noise level: pass runs probed on one grid")
    if wanted is None:
        return panel_sigmas(common, NUM_SIGMAS)
    chosen = []
    for sigma in wanted:
        near = [s for s in common if abs(s / sigma - 1) <= SIGMA_MATCH]
        if not near:
            raise InputValueError(f"`--sigmas` {sigma:.3g} is not a noise level every run probed; probed: "
                                  f"{', '.join(f'{s:.3g}' for s in common)}")
        chosen.append(near[0])
    return list(dict.fromkeys(chosen))


def choose_references(runs: list[RunInfo], gmm: int | None) -> list[str]:
    """`gaussian`, `gmm{K}` and `delta`, each probed by every run (`--gmm` K, default the largest common K)."""
    common = set.intersection(*({r["reference"] for r in run.probes} for run in runs))
    components = sorted(int(name[3:]) for name in common if name.startswith("gmm") and name[3:].isdigit())
    if gmm is None and not components:
        raise InputValueError("the runs share no probed k-means GMM (gmm{K} in probes.csv)")
    gmm = components[-1] if gmm is None else gmm
    if gmm not in components:
        raise InputValueError(f"`--gmm` {gmm}: gmm{gmm} is not in every run's probes.csv; every run probed K = "
                              f"{', '.join(map(str, components)) or 'none'}")
    missing = [name for name in ("gaussian", "delta") if name not in common]
    if missing:
        raise InputValueError(f"not every run's probes.csv has the reference(s) {', '.join(missing)}")
    return ["gaussian", f"gmm{gmm}", "delta"]


def fuv_metric(reference: str, sigma: float) -> str:
    """The metric name of a probe FUV, e.g. `fuv_gaussian@1.21`."""
    return f"fuv_{reference}@{sigma:.3g}"


# -- the metrics ---------------------------------------------------------------------------------------------


def loss_at(loss: np.ndarray, step: int) -> float:
    """The loss of the last `(step, loss)` row at or before `step`; nan if there is none."""
    before = loss[loss[:, 0] <= step] if len(loss) else loss
    return float(before[-1, 1]) if len(before) else math.nan


def probe_rows(run: RunInfo, references: list[str], sigmas: list[float]) -> list[dict]:
    """The `loss` and `fuv_*` rows of every checkpoint of `run` (nan where a value is missing)."""
    fuv = {(r["step"], r["reference"], r["sigma"]): r["fuv_score"] for r in run.probes}
    rows = []
    for step in run.steps:
        rows.append({"run": str(run.path), "step": step, "metric": "loss", "value": loss_at(run.loss, step)})
        rows += [{"run": str(run.path), "step": step, "metric": fuv_metric(reference, sigma),
                  "value": fuv.get((step, reference, sigma), math.nan)}
                 for reference in references for sigma in sigmas]
    return rows


def draw_samples(network, config: TrainConfig, gaussian, noise: jax.Array, sigmas: jax.Array) -> np.ndarray:
    """Heun samples `(M, D)` of `network` from `noise (M, D)`, `SAMPLE_BATCH` at a time, started where the run
    needs (`gaussjax.nn.sampling_start`: the prior `sigma_max noise`, whitened for a whitened run and carried
    by the Gaussian down to the run's `warm_start`)."""
    parts = []
    for first in range(0, noise.shape[0], SAMPLE_BATCH):
        start = sampling_start(network, noise[first:first + SAMPLE_BATCH], sigmas, warm_start=config.warm_start,
                               gaussian=gaussian)
        parts.append(np.asarray(gj.heun_sampler(network, start.x, start.sigmas).x))
    return np.concatenate(parts)


def fd_rows(run: RunInfo, noise: jax.Array, sigmas: jax.Array, gaussian, real_stats, features) -> list[dict]:
    """The `fd` row of every checkpoint of `run`; an unreadable checkpoint is nan, with a `warning:` line."""
    from gaussjax.runs import UnreadableCheckpointError, load_denoiser

    rows = []
    for step in tqdm(run.steps, desc=f"FD {run.path.name}", leave=False):
        try:
            network = load_denoiser(run.path, step=step, weights=WEIGHTS)
        except UnreadableCheckpointError as error:
            print(f"warning: {' '.join(str(error).split())}; its fd is nan", file=sys.stderr)
            rows.append({"run": str(run.path), "step": step, "metric": "fd", "value": math.nan})
            continue
        samples = draw_samples(network, run.config, gaussian, noise, sigmas)
        fd = frechet_distance(real_stats, FeatureStats.from_features(features(samples)))
        rows.append({"run": str(run.path), "step": step, "metric": "fd", "value": float(fd)})
    return rows


# -- the summary -----------------------------------------------------------------------------------------


def first_step_at_or_below(steps: list[int], values: list[float], target: float) -> int | None:
    """The first step (in step order) whose value is at or below `target`; None if none is (nan never is)."""
    for step, value in sorted(zip(steps, values, strict=True)):
        if value <= target:
            return step
    return None


def summary_table(runs: list[RunInfo], rows: list[dict], target: float) -> list[dict]:
    """Per run: label, last checkpoint step and FD, the target and the first step at or below it."""
    table = []
    for run in runs:
        fd = sorted((r["step"], r["value"]) for r in rows if r["run"] == str(run.path) and r["metric"] == "fd")
        steps, values = [s for s, _ in fd], [v for _, v in fd]
        reached = first_step_at_or_below(steps, values, target)
        table.append({"run": str(run.path), "label": run.label, "final_step": steps[-1], "final_fd": values[-1],
                      "target_fd": target, "reaches_target_at": "" if reached is None else reached})
    return table


def _median_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def summary_lines(table: list[dict], target: float, target_from: str) -> list[str]:
    """Who reaches the target FD first, each run's final FD and step to the target, and per label the medians."""
    reached = [row for row in table if row["reaches_target_at"] != ""]
    if reached:
        first = min(row["reaches_target_at"] for row in reached)
        winners = ", ".join(row["run"] for row in reached if row["reaches_target_at"] == first)
        lines = [f"  target FD {target:.4g} ({target_from}): first reached at step {first} by {winners}"]
    else:
        lines = [f"  target FD {target:.4g} ({target_from}): reached by no run"]
    width = max(len(row["run"]) for row in table)
    lines.append(f"  {'run':<{width}} {'final step':>10} {'final FD':>10} {'reaches at':>10}  label")
    for row in table:
        at = "never" if row["reaches_target_at"] == "" else str(row["reaches_target_at"])
        lines.append(f"  {row['run']:<{width}} {row['final_step']:>10d} {row['final_fd']:>10.4g} {at:>10}  "
                     f"{row['label']}")
    lines.append("  per label, median [min, max] over its runs: final FD; step reaching the target (of the runs "
                 "that reach it)")
    for label in dict.fromkeys(row["label"] for row in table):
        mine = [row for row in table if row["label"] == label]
        steps = [float(row["reaches_target_at"]) for row in mine if row["reaches_target_at"] != ""]
        lines.append(f"    {label}: {len(mine)} run(s); final FD {_median_range([r['final_fd'] for r in mine])}; "
                     f"reaches the target in {len(steps)} of {len(mine)}, step {_median_range(steps)}")
    return lines


# -- the figure ------------------------------------------------------------------------------------------


def plot(runs: list[RunInfo], rows: list[dict], metrics: list[str], path: Path) -> Path:
    """One panel per metric against step (log of step + 1, log y), one line per run, one colour per label."""
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = figure(ncols=ncols, nrows=nrows)
    labels = list(dict.fromkeys(run.label for run in runs))
    last_step = max(step for run in runs for step in run.steps)
    for axis, metric in zip(axes.flat, metrics, strict=False):
        for run in runs:
            points = sorted((r["step"], r["value"]) for r in rows
                            if r["run"] == str(run.path) and r["metric"] == metric and np.isfinite(r["value"]))
            if points:
                steps, values = np.array(points, dtype=np.float64).T
                axis.plot(steps, np.maximum(values, 1e-12), marker=".", color=f"C{labels.index(run.label) % 10}",
                          alpha=0.8, clip_on=False)
        axis.set(title=metric, yscale="log")
        step_axis(axis, last_step)
    for axis in list(axes.flat)[len(metrics):]:
        axis.set_visible(False)
    handles = [Line2D([], [], color=f"C{i % 10}", marker=".", label=label) for i, label in enumerate(labels)]
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    return save_figure(fig, path)


# -- the command -----------------------------------------------------------------------------------------


def load_data(runs: list[RunInfo], data_dir: Path | None) -> tuple[Dataset, Dataset | None]:
    """The runs' training split and held-out split (None if the dataset has none)."""
    config = runs[0].config
    train = load_dataset(config.dataset, root=data_dir, split="train", **dict(config.dataset_options))
    try:
        test = load_dataset(config.dataset, root=data_dir, split="test", **dict(config.dataset_options))
    except InputValueError:
        test = None  # (folder and array datasets have no test split)
    return train, test


def run(context, args: argparse.Namespace) -> Result:
    """Check the options, the output directory and the runs, then compute, write and summarise.

    `context` is unused (None from `python -m analysis`): the runs are the positional RUN arguments.
    """
    del context
    start = time.perf_counter()
    check_options(args)
    out = prepare_out(args.out, OUTPUTS)
    check_feature_net_dir(out / FEATURE_NET)
    runs = read_runs(args)
    sigmas_fuv = choose_sigmas(runs, args.sigmas)
    references = choose_references(runs, args.gmm)
    train, test = load_data(runs, args.data_dir)
    dim = int(np.prod(train.images.shape[1:]))
    check_memory(args.num_samples * dim * FLOAT32 * SAMPLE_ARRAYS, f"`--num-samples` {args.num_samples}")

    context = AnalysisContext(None, train, test, None, None, WEIGHTS, out, args.seed, args.num_samples)
    extract, _, described = feature_extractor(context, argparse.Namespace(inception=None))

    def features(flat: np.ndarray) -> np.ndarray:
        return features_of(extract, train.unflatten, flat)

    real = features(np.asarray(train.flat))
    real_stats = FeatureStats.from_features(real)
    subset = np.asarray(jax.random.choice(command_key(args.seed, "floor-subset"), len(real),
                                          (min(args.num_samples, len(real)),), replace=False))
    floor = float(frechet_distance(real_stats, FeatureStats.from_features(real[subset])))
    gaussian = gj.fit.fit_references(train.flat, ["gaussian"])["gaussian"]
    sigmas = gj.karras_sigmas(args.num_steps)
    noise = initial_states(command_key(args.seed, "initial-states"), args.num_samples, dim, 1.0)  # x_T / sigma_max

    rows = []
    for info in tqdm(runs, desc="compare-runs", unit="run"):
        rows += probe_rows(info, references, sigmas_fuv)
        rows += fd_rows(info, noise, sigmas, gaussian, real_stats, features)
    metrics = ["loss", "fd", *(fuv_metric(ref, s) for ref in references for s in sigmas_fuv)]
    rows.sort(key=lambda r: (args.runs.index(Path(r["run"])), r["step"], metrics.index(r["metric"])))
    finals = [r["value"] for r in rows if r["run"] == str(runs[0].path) and r["metric"] == "fd"]
    target = args.target_fd if args.target_fd is not None else finals[-1]
    target_from = "--target-fd" if args.target_fd is not None else f"the final FD of {runs[0].path}"
    table = summary_table(runs, rows, target)
    written = [write_csv(out / "compare_runs.csv", rows, COLUMNS),
               write_csv(out / "compare_runs_summary.csv", table, SUMMARY_COLUMNS),
               plot(runs, rows, metrics, out / "compare_runs.png")]
    lines = [(f"compare-runs: {len(runs)} runs of {train.name}, {args.num_samples} samples per checkpoint from the "
              f"same x_T (seed {args.seed}), {args.num_steps} Heun steps; FD with {described} against the "
              f"{len(real)} training images"),
             f"  FD of {len(subset)} training images against the training set (the sample-count floor): {floor:.4g}",
             *summary_lines(table, target, target_from),
             f"  in {time.perf_counter() - start:.0f} s"]
    return Result(lines, written)


COMMAND = Command(
    name="compare-runs",
    help="several runs against each other: loss, FD of EMA samples and probe FUVs vs step; who reaches an FD first",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, run=run, needs_network=False, needs_run=True,
    in_report=False, multi_run=True,  # takes several runs, not --run; samples at every checkpoint
)
