import shutil

import numpy as np
import pytest

from analysis.__main__ import main
from analysis.output import read_csv

COLUMNS = ["step", "sigma", "reference", "weights", "queries", "fuv_score", "fuv_denoiser", "r2_denoiser"]


def run_command(tiny_run, out, *extra):
    return main(["learning-dynamics", "--run", str(tiny_run), "--out", str(out), *extra])


def numpy_minimum(rows, reference="gaussian", statistic="fuv_score"):
    """(sigma, queries) -> (min_step, min_fuv, final_fuv, rises), recomputed with NumPy from probes.csv rows."""
    table = {}
    for queries in sorted({r["queries"] for r in rows}):
        for sigma in sorted({float(r["sigma"]) for r in rows}):
            chosen = [r for r in rows if r["reference"] == reference and r["queries"] == queries
                      and float(r["sigma"]) == sigma]
            steps = np.array([int(r["step"]) for r in chosen])
            values = np.array([float(r[statistic]) for r in chosen])[np.argsort(steps, kind="stable")]
            steps = np.sort(steps)
            best = np.flatnonzero(values == values.min())[0]
            table[sigma, queries] = (steps[best], values[best], values[-1], values[-1] > 1.1 * values[best])
    return table


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_csv_reproduces_probes_and_the_minimum_table_matches_numpy(tiny_run, tmp_path, capsys, weights):
    assert run_command(tiny_run, tmp_path, "--weights", weights) == 0
    probes = [r for r in read_csv(tiny_run / "probes.csv") if r["weights"] == weights]
    written = read_csv(tmp_path / "learning_dynamics.csv")
    assert list(written[0]) == COLUMNS
    assert written == [{c: r[c] for c in COLUMNS} for r in probes]  # the same rows, the same digits
    query_sets = {"train", "test"} if weights == "ema" else {"train"}  # held-out queries probe the EMA network
    assert {r["queries"] for r in written} == query_sets

    minimum = read_csv(tmp_path / "gaussian_minimum.csv")
    expected = numpy_minimum(probes)
    assert len(minimum) == len(expected) == len(query_sets) * 3
    for row in minimum:
        min_step, min_fuv, final_fuv, rises = expected[float(row["sigma"]), row["queries"]]
        assert int(row["min_step"]) == min_step
        assert float(row["min_fuv"]) == min_fuv and float(row["final_fuv"]) == final_fuv
        assert row["rises"] == str(bool(rises))
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("wrote ")]
    assert f"gaussian fuv_score ({weights} weights)" in out[0] and len(out) == 2 + len(minimum)
    assert (tmp_path / "learning_dynamics.png").stat().st_size > 5000


def test_step_reference_and_statistic_options(tiny_run, tmp_path):
    assert run_command(tiny_run, tmp_path, "--step", "40", "--reference", "delta", "--statistic", "fuv_denoiser") == 0
    probes = [r for r in read_csv(tiny_run / "probes.csv") if r["weights"] == "ema" and int(r["step"]) <= 40]
    assert {r["step"] for r in read_csv(tmp_path / "learning_dynamics.csv")} == {"0", "20", "40"}
    expected = numpy_minimum(probes, "delta", "fuv_denoiser")
    for row in read_csv(tmp_path / "gaussian_minimum.csv"):
        assert float(row["final_fuv"]) == expected[float(row["sigma"]), row["queries"]][2]


def test_a_probes_file_of_another_layout_is_named(tiny_run, tmp_path, capsys):
    """A probes.csv without the held-out columns (an older layout) is refused, naming the file and the columns."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    for name in ("config.json", "network.json", "loss.csv"):
        shutil.copy(tiny_run / name, run_dir / name)
    old = ["step", "sigma", "reference", "weights", "fuv_score", "fuv_denoiser"]
    rows = [r for r in read_csv(tiny_run / "probes.csv") if r["queries"] == "train"]
    (run_dir / "probes.csv").write_text("\n".join([",".join(old), *(",".join(r[c] for c in old) for r in rows)]) + "\n")
    assert run_command(run_dir, tmp_path / "out") == 2
    assert "probes.csv lacks the columns ['queries', 'r2_denoiser']" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ((), "pass `--run RUN_DIR`"),
    (("--reference", "gmm7"), "`--reference` 'gmm7' is not in probes.csv"),
    (("--panels", "0"), "`--panels` must be >= 1"),
])
def test_bad_inputs_are_named(tiny_run, tmp_path, capsys, extra, message):
    argv = ["learning-dynamics", "--out", str(tmp_path), *extra]
    if extra:
        argv += ["--run", str(tiny_run)]
    else:
        argv += ["--dataset", "digits"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_run_without_probes_is_named(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "unprobed"
    run_dir.mkdir()
    for name in ("config.json", "network.json"):
        shutil.copy(tiny_run / name, run_dir / name)
    assert run_command(run_dir, tmp_path / "out") == 2
    assert "probes.csv not found" in capsys.readouterr().err


def test_the_step_axis_runs_from_step_0_to_the_last_step_and_the_legend_is_outside(tiny_run):
    """Every panel's x axis starts at step 0 and ends at the last step, ticks read as steps, one legend below."""
    from analysis import learning_dynamics as LD

    rows = LD.select_rows(LD.read_probes(tiny_run / "probes.csv"), "ema", None)
    fig = LD.plot(rows, LD.read_loss(tiny_run / "loss.csv", None), "fuv_score", 3)
    fig.canvas.draw()
    steps = sorted({r["step"] for r in rows})
    assert steps[0] == 0 and len(steps) >= 3
    assert len(fig.axes) == 4  # three sigmas and the loss
    for ax in fig.axes:
        y = np.sqrt(np.prod(ax.get_ylim())) if ax.get_yscale() == "log" else np.mean(ax.get_ylim())
        where = (ax.transData + ax.transAxes.inverted()).transform([(s, y) for s in steps])[:, 0]
        assert where[0] == pytest.approx(0, abs=0.02) and where[-1] == pytest.approx(1, abs=0.02), where
        assert np.all(np.diff(where) > 0.05), where  # the checkpoints spread over the axis
        left, right = ax.get_xlim()
        ticks = [(t, label.get_text()) for t, label in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
                 if left <= t <= right]
        assert [text for _, text in ticks] == [str(int(t)) for t, _ in ticks] and {"0", "10"} <= {x for _, x in ticks}
        assert ax.get_legend() is None
    assert len(fig.legends) == 1
    box = fig.legends[0].get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert {text.get_text() for text in fig.legends[0].get_texts()} >= {"gaussian", "delta", "train queries"}
