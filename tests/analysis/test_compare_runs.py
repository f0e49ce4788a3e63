"""`python -m analysis compare-runs`: two tiny real runs against each other, and every option refused by name.

The slow tests train two `digits-tiny` runs of 20 steps (seeds 0 and 1, checkpoints 0, 10, 20) once for the
module and compare them once; the CSV is checked against `loss.csv` and `probes.csv` read here with the csv
module, the FD against the samples, features and Frechet distance recomputed here (gaussjax's FD and a
float64 NumPy/SciPy one), and the summary against a hand computation from the CSV's FD values.
"""

import contextlib
import csv
import io
import math
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from frechet import numpy_fd

import gaussjax as gj
from analysis import compare_runs
from analysis.__main__ import build_parser, main
from analysis.report import report_commands
from gaussjax.data import load_dataset
from gaussjax.quality import FeatureStats, frechet_distance, load_feature_net
from gaussjax.runs import load_denoiser
from train.configs import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
NUM_SAMPLES, NUM_STEPS = 96, 8
STEPS = [0, 10, 20]
METRICS = ["loss", "fd"] + [f"fuv_{ref}@{s}" for ref in ("gaussian", "gmm2", "delta") for s in ("0.05", "0.5", "5")]
NETWORK_JSON = ('{"img_resolution": 8, "in_channels": 1, "out_channels": 1, "label_dim": 0, "model_channels": 8, '
                '"channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}')


def read(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def train(run_dir: Path, seed: int) -> Path:
    command = [sys.executable, "-m", "train", "--config", "digits-tiny", "--steps", "20", "--checkpoint-every", "10",
               "--seed", str(seed), "--no-progress", "--out", str(run_dir)]
    subprocess.run(command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), check=True, capture_output=True)
    return run_dir


def compare(*argv) -> tuple[int, str]:
    """`main(['compare-runs', *argv])` and its stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare-runs", *map(str, argv)])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two trained runs `(a, b)`, the `--out` of comparing them and the command's stdout."""
    base = tmp_path_factory.mktemp("compare-runs")
    a, b = train(base / "a", seed=0), train(base / "b", seed=1)
    out = base / "out"
    code, stdout = compare(a, b, "--out", out, "--num-samples", NUM_SAMPLES, "--num-steps", NUM_STEPS)
    assert code == 0
    return a, b, out, stdout


# --- against the runs' own files, the samples and the FD recomputed -----------------------------------------


@pytest.mark.slow
def test_csv_has_one_row_per_run_checkpoint_and_metric_with_the_runs_loss_and_probe_values(compared):
    a, b, out, _ = compared
    rows = read(out / "compare_runs.csv")
    assert list(rows[0]) == ["run", "step", "metric", "value"]
    assert [(r["run"], int(r["step"]), r["metric"]) for r in rows] == [
        (str(run), step, metric) for run in (a, b) for step in STEPS for metric in METRICS]
    for run in (a, b):
        loss = [(int(r["step"]), float(r["loss"])) for r in read(run / "loss.csv")]
        probes = {(int(r["step"]), r["reference"], float(r["sigma"])): float(r["fuv_score"])
                  for r in read(run / "probes.csv") if r["weights"] == "ema" and r["queries"] == "train"}
        for row in (r for r in rows if r["run"] == str(run)):
            step, value = int(row["step"]), float(row["value"])
            if row["metric"] == "loss":
                before = [v for s, v in loss if s <= step]  # loss.csv's rows at steps 10 and 20
                assert math.isnan(value) if not before else value == before[-1]
            elif row["metric"].startswith("fuv_"):
                reference, sigma = row["metric"][4:].split("@")
                assert value == probes[step, reference, float(sigma)]
    assert math.isnan(float(rows[0]["value"]))  # step 0 is before the first loss row


@pytest.mark.slow
def test_fd_is_the_frechet_distance_of_ema_samples_from_the_documented_x_T(compared):
    a, b, out, stdout = compared
    rows = {(r["run"], int(r["step"])): float(r["value"])
            for r in read(out / "compare_runs.csv") if r["metric"] == "fd"}
    net = load_feature_net(out / "feature_net")
    train = load_dataset("digits", split="train")
    real = np.asarray(net.features(train.images))
    sigmas = gj.karras_sigmas(NUM_STEPS)
    key = jax.random.fold_in(jax.random.key(0), zlib.crc32(b"initial-states") & 0x7FFFFFFF)  # --seed 0
    x_T = float(sigmas[0]) * jax.random.normal(key, (NUM_SAMPLES, 64), np.float32)
    for run, step in ((a, 0), (a, 20), (b, 20)):
        samples = gj.heun_sampler(load_denoiser(run, step=step, weights="ema"), x_T, sigmas).x
        fake = np.asarray(net.features(np.asarray(samples).reshape(-1, 8, 8, 1)))
        expected = frechet_distance(FeatureStats.from_features(real), FeatureStats.from_features(fake))
        assert rows[str(run), step] == pytest.approx(expected, rel=1e-4)
        assert rows[str(run), step] == pytest.approx(numpy_fd(real, fake), rel=1e-3)
    assert rows[str(a), 0] > rows[str(a), 20]  # training improves the samples
    subset = jax.random.choice(jax.random.fold_in(jax.random.key(0), zlib.crc32(b"floor-subset") & 0x7FFFFFFF),
                               len(real), (NUM_SAMPLES,), replace=False)
    floor = numpy_fd(real, real[np.asarray(subset)])
    assert f"against the training set (the sample-count floor): {floor:.4g}" in stdout


def first_at_or_below(fd: dict, run: Path, target: float):
    """By hand: the first step whose FD is at or below `target`, or None."""
    return next((step for step in STEPS if fd[str(run), step] <= target), None)


@pytest.mark.slow
def test_summary_names_the_first_run_to_reach_the_first_runs_final_fd(compared):
    a, b, out, stdout = compared
    fd = {(r["run"], int(r["step"])): float(r["value"]) for r in read(out / "compare_runs.csv") if r["metric"] == "fd"}
    target = fd[str(a), 20]
    reached = {run: first_at_or_below(fd, run, target) for run in (a, b)}
    assert reached[a] == 20  # its own final FD, unless an earlier checkpoint was already as good
    summary = read(out / "compare_runs_summary.csv")
    assert [(r["run"], r["label"], int(r["final_step"]), float(r["final_fd"]), float(r["target_fd"]),
             r["reaches_target_at"]) for r in summary] == [
        (str(run), "digits-tiny", 20, fd[str(run), 20], target, "" if reached[run] is None else str(reached[run]))
        for run in (a, b)]
    first = min(step for step in reached.values() if step is not None)
    winners = ", ".join(str(run) for run in (a, b) if reached[run] == first)
    assert f"target FD {target:.4g} (the final FD of {a}): first reached at step {first} by {winners}" in stdout
    assert (out / "compare_runs.png").stat().st_size > 0


@pytest.mark.slow
def test_target_fd_and_labels_change_the_summary(compared, tmp_path):
    a, b, out, _ = compared
    shutil.copytree(out / "feature_net", tmp_path / "feature_net")  # the cached net: no training again
    fd = {(r["run"], int(r["step"])): float(r["value"]) for r in read(out / "compare_runs.csv") if r["metric"] == "fd"}
    target = (fd[str(a), 10] + fd[str(b), 10]) / 2  # between the two runs' step-10 FDs
    code, stdout = compare(a, b, "--out", tmp_path, "--num-samples", NUM_SAMPLES, "--num-steps", NUM_STEPS,
                           "--target-fd", target, "--label", "plain,other", "--sigmas", "0.5")
    assert code == 0
    summary = read(tmp_path / "compare_runs_summary.csv")
    expected = [str(first_at_or_below(fd, run, target) or "") for run in (a, b)]
    assert [r["reaches_target_at"] for r in summary] == expected
    assert [r["label"] for r in summary] == ["plain", "other"]
    assert {r["metric"] for r in read(tmp_path / "compare_runs.csv")} == {
        "loss", "fd", "fuv_gaussian@0.5", "fuv_gmm2@0.5", "fuv_delta@0.5"}
    assert f"target FD {target:.4g} (--target-fd)" in stdout
    assert "plain: 1 run(s)" in stdout and "other: 1 run(s)" in stdout


@pytest.mark.slow
@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("--sigmas", "0.7", "`--sigmas` 0.7 is not a noise level every run probed; probed: 0.05, 0.5, 5"),
    ("--gmm", "5", "`--gmm` 5: gmm5 is not in every run's probes.csv; every run probed K = 2"),
])
def test_probe_options_absent_from_the_runs_are_refused_by_name(compared, tmp_path, capsys, option, value, fragment):
    a, b, _, _ = compared
    assert main(["compare-runs", str(a), str(b), "--out", str(tmp_path), option, value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


# --- fast: the option checks, the registry and the pure parts ---------------------------------------------


def fake_run(run_dir: Path, **changes) -> Path:
    """A run directory with a digits-tiny `config.json` (with `changes`) and `network.json`, no checkpoints."""
    run_dir.mkdir()
    (run_dir / "config.json").write_text(CONFIGS["digits-tiny"].replace(**changes).to_json())
    (run_dir / "network.json").write_text(NETWORK_JSON)
    return run_dir


def refused(capsys, argv, *fragments) -> None:
    assert main(["compare-runs", *map(str, argv)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_options_missing_runs_other_datasets_and_runs_without_checkpoints_are_refused_by_name(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    out = tmp_path / "out"
    refused(capsys, ["--out", out], "`RUN`")  # no run at all
    refused(capsys, [a, tmp_path / "a" / ".." / "a", "--out", out], "`RUN`", "given twice")
    refused(capsys, [a, "--label", "x,y", "--out", out], "`--label`", "one label per RUN")
    refused(capsys, [a, "--label", "x,", "--out", out], "`--label`")
    refused(capsys, [a, "--num-samples", "1", "--out", out], "`--num-samples`")
    refused(capsys, [a, "--num-steps", "1", "--out", out], "`--num-steps`")
    refused(capsys, [a, "--target-fd", "0", "--out", out], "`--target-fd`")
    refused(capsys, [a, "--target-fd", "nan", "--out", out], "`--target-fd`")
    refused(capsys, [a, "--gmm", "0", "--out", out], "`--gmm`")
    refused(capsys, [a, "--sigmas", "x", "--out", out], "`--sigmas`")
    assert not out.exists()  # the options are checked before --out is created, --out before the runs are read
    refused(capsys, [a, "--out", a / "config.json"], "`--out`")
    refused(capsys, [a, tmp_path / "nope", "--out", out], "`RUN`", str(tmp_path / "nope"), "not a run directory")
    refused(capsys, [a, fake_run(tmp_path / "p", dataset="patches"), "--out", out], "`RUN`", str(tmp_path / "p"),
            "'patches'", "'digits'", "one dataset")
    refused(capsys, [a, "--out", out], "`RUN`", str(a), "has no checkpoints")


def test_it_is_registered_with_its_own_options_and_left_out_of_report():
    parser = build_parser()
    assert "compare-runs" in parser.format_help()
    args = parser.parse_args(["compare-runs", "r1", "r2", "--label", "x,y"])
    assert args.runs == [Path("r1"), Path("r2")] and args.label == ["x", "y"] and args.num_samples == 256
    assert not hasattr(args, "run") and not hasattr(args, "network")  # not the single-run options
    assert "compare-runs" not in {command.name for command in report_commands()}


def test_first_step_at_or_below_and_the_summary_table_by_hand():
    first = compare_runs.first_step_at_or_below
    assert first([0, 10, 20], [9.0, 5.0, 4.0], 5.0) == 10  # at the target counts
    assert first([20, 0, 10], [4.0, 9.0, 5.0], 4.5) == 20  # in step order, not file order
    assert first([0, 10], [math.nan, 3.0], 5.0) == 10  # an unreadable checkpoint (nan) never reaches it
    assert first([0, 10], [9.0, 8.0], 5.0) is None
    runs = [compare_runs.RunInfo(Path(name), CONFIGS["digits-tiny"], label, [0, 10], [], np.zeros((0, 2)))
            for name, label in (("r1", "x"), ("r2", "x"), ("r3", "y"))]
    fd = {"r1": [9.0, 6.0], "r2": [7.0, 5.0], "r3": [5.0, 2.0]}
    rows = [{"run": run, "step": step, "metric": "fd", "value": value}
            for run, values in fd.items() for step, value in zip([0, 10], values, strict=True)]
    table = compare_runs.summary_table(runs, rows, 6.0)
    assert [(r["final_fd"], r["reaches_target_at"]) for r in table] == [(6.0, 10), (5.0, 10), (2.0, 0)]
    lines = compare_runs.summary_lines(table, 6.0, "--target-fd")
    assert lines[0] == "  target FD 6 (--target-fd): first reached at step 0 by r3"
    assert "    x: 2 run(s); final FD 5.5 [5, 6]; reaches the target in 2 of 2, step 10 [10, 10]" in lines
    never = compare_runs.summary_lines(compare_runs.summary_table(runs, rows, 1.0), 1.0, "--target-fd")
    assert never[0] == "  target FD 1 (--target-fd): reached by no run"


def test_loss_at_takes_the_row_at_or_before_the_step():
    loss = np.array([[10.0, 1.5], [20.0, 1.2], [30.0, 1.1]])
    assert math.isnan(compare_runs.loss_at(loss, 0))
    assert compare_runs.loss_at(loss, 10) == 1.5
    assert compare_runs.loss_at(loss, 25) == 1.2
    assert compare_runs.loss_at(loss, 99) == 1.1
    assert math.isnan(compare_runs.loss_at(np.zeros((0, 2)), 5))


def test_default_labels_are_the_config_name_and_the_fields_that_differ_from_the_first_run():
    tiny = CONFIGS["digits-tiny"]
    labels = compare_runs.default_labels([tiny, tiny.replace(seed=3), tiny.replace(lr=1e-3, steps=7)])
    assert labels == ["digits-tiny", "digits-tiny", "digits-tiny lr=0.001 steps=7"]

