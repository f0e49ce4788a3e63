"""`python -m analysis` on bad paths, damaged runs and huge options: one `error:` line, exit 2, before any work.

Every case runs `main(argv)` in-process. Where the old code did the work first (or deleted files),
a sentinel replaces the first expensive step, so a test fails if that step is reached before the
error; the hostile run files are small copies of the shared tiny run.
"""

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from bounded import bounded

from analysis import _common
from analysis.__main__ import main
from analysis.gaussian_theory import edm_curves
from analysis.output import read_csv

PICKLE = Path(__file__).parents[1] / "nn" / "data" / "edm_pickle_songunet.pkl"  # a network for 8 x 8 x 1 digits
SMALL = ["--num-queries", "4", "--num-sigmas", "1", "--sigma-min", "0.5", "--sigma-max", "0.5", "--gmm-components", "",
         "--query-sets", "train"]


def one_error_line(capsys, *fragments) -> str:
    """The only line on stderr, an `error:` line containing every fragment (no traceback, no other output)."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def forbid(monkeypatch, target: str) -> None:
    """Make `target` (a dotted attribute) fail the test if the command reaches it."""
    def reached(*args, **kwargs):
        raise AssertionError(f"{target} ran before the error")
    monkeypatch.setattr(target, reached)


def run_files(tiny_run, run_dir: Path, *names: str) -> Path:
    """A run directory with copies of the tiny run's `config.json`, `network.json` and `names` (no checkpoints)."""
    run_dir.mkdir()
    for name in ("config.json", "network.json", *names):
        shutil.copy(tiny_run / name, run_dir / name)
    return run_dir


def damaged(tiny_run, run_dir: Path, steps) -> Path:
    """A copy of the tiny run whose checkpoints at `steps` have a zeroed OCDBT manifest."""
    shutil.copytree(tiny_run, run_dir)
    for step in steps:
        (run_dir / "checkpoints" / str(step) / "default" / "manifest.ocdbt").write_bytes(b"\0" * 16)
    return run_dir


# --- D16: --out is checked (and created) before anything is read or computed ---------------------------------

def _read_only(monkeypatch, out: Path) -> None:
    """Writes under `out` fail as on a read-only file system (EROFS), through `os.open` and `open`."""
    def refuse(path, writing):
        if writing and str(path).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_os_open, real_open = os.open, open

    def os_open(path, flags, *args, **kwargs):
        refuse(path, flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        return real_os_open(path, flags, *args, **kwargs)

    def builtin_open(path, mode="r", *args, **kwargs):
        refuse(path, any(c in mode for c in "wax+"))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", builtin_open)


@pytest.mark.parametrize("case", ["a file", "inside a file", "read-only", "csv is a directory", "png is a directory"])
def test_a_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "file").write_text("user data")
    out = {"a file": tmp_path / "file", "inside a file": tmp_path / "file" / "sub"}.get(case, tmp_path / "out")
    if case.endswith("is a directory"):
        name = "gaussian_theory.csv" if case.startswith("csv") else "gaussian_theory.png"
        (out / name).mkdir(parents=True)
    if case == "read-only":
        out.mkdir()
        _read_only(monkeypatch, out)
    forbid(monkeypatch, "analysis.context.load_dataset")
    assert main(["gaussian-theory", "--dataset", "digits", "--out", str(out)]) == 2
    line = one_error_line(capsys, "`--out`", str(out))
    expected = {"a file": "is a file", "inside a file": f"{tmp_path / 'file'} is a file",
                "read-only": "not writable: Read-only file system", "csv is a directory": "gaussian_theory.csv is a "
                "directory", "png is a directory": "gaussian_theory.png is a directory"}[case]
    assert expected in line
    assert (tmp_path / "file").read_text() == "user data"


def test_dataset_out_inside_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    forbid(monkeypatch, "gaussjax.data.load_dataset")
    assert main(["dataset", "digits", "--out", str(tmp_path / "file" / "figures")]) == 2
    one_error_line(capsys, "`--out`", "is a file")


def test_report_checks_every_section_before_the_first_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "score-agreement").write_text("not a directory")
    forbid(monkeypatch, "analysis.gaussian_theory.run")  # the report's first section
    argv = ["report", "--network", str(PICKLE), "--dataset", "digits", "--out", str(tmp_path)]
    assert main(argv) == 2
    one_error_line(capsys, f"{tmp_path / 'score-agreement'} is a file")


# --- D16 and messages: damaged run files name the file -------------------------------------------------------

@pytest.mark.parametrize("case", ["directory", "deeply nested", "5000-digit seed"])
def test_a_damaged_config_json_is_a_named_error(tiny_run, tmp_path, capsys, case):
    run_dir = run_files(tiny_run, tmp_path / "run")
    config = run_dir / "config.json"
    if case == "directory":
        config.unlink()
        config.mkdir()
    elif case == "deeply nested":
        config.write_text("[" * 100_000 + "]" * 100_000)
    else:
        text = re.sub(r'"seed": \d+', '"seed": ' + "9" * 5000, config.read_text())
        assert "9" * 5000 in text
        config.write_text(text)
    with bounded(seconds=5, megabytes=50):
        assert main(["gaussian-theory", "--run", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, str(config) if case != "directory" else "config.json")


def test_a_binary_probes_csv_is_named(tiny_run, tmp_path, capsys):
    run_dir = run_files(tiny_run, tmp_path / "run", "loss.csv")
    (run_dir / "probes.csv").write_bytes(bytes(range(128, 256)) * 20)
    with bounded(seconds=5, megabytes=50):
        assert main(["learning-dynamics", "--run", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, str(run_dir / "probes.csv"), "not a CSV text file")


@pytest.mark.parametrize("bad, fragment", [("x", ", line 3: could not convert string to float: 'x'"),
                                           ("0.1,extra", ", line 3: expected")])
def test_a_bad_probes_value_names_the_file_and_line(tiny_run, tmp_path, capsys, bad, fragment):
    run_dir = run_files(tiny_run, tmp_path / "run", "loss.csv")
    lines = (tiny_run / "probes.csv").read_text().splitlines()
    header = lines[0].split(",")
    values = lines[2].split(",")
    values[header.index("fuv_score")] = bad
    (run_dir / "probes.csv").write_text("\n".join([lines[0], lines[1], ",".join(values), *lines[3:]]) + "\n")
    assert main(["learning-dynamics", "--run", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, str(run_dir / "probes.csv") + fragment)


# --- D16 and D18: damaged checkpoints -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged_60(tiny_run, tmp_path_factory):
    return damaged(tiny_run, tmp_path_factory.mktemp("damaged") / "run", [60])


def test_a_damaged_requested_step_is_a_named_error(damaged_60, tmp_path, capsys):
    assert main(["score-agreement", "--run", str(damaged_60), "--step", "60", "--out", str(tmp_path), *SMALL]) == 2
    one_error_line(capsys, "checkpoint at step 60 is unreadable", str(damaged_60 / "checkpoints" / "60"))


def test_all_checkpoints_damaged_is_a_named_error(tiny_run, tmp_path, capsys):
    run_dir = damaged(tiny_run, tmp_path / "run", [0, 20, 40, 60])
    assert main(["score-agreement", "--run", str(run_dir), "--out", str(tmp_path / "out"), *SMALL]) == 2
    one_error_line(capsys, f"no checkpoint in {run_dir / 'checkpoints'} is readable")


@pytest.mark.slow
def test_the_fallback_checkpoint_is_announced_and_labels_the_output(tiny_run, damaged_60, tmp_path, capsys):
    """D18: the newest checkpoint unreadable, `latest` analyses step 40, says so, and labels its output step 40."""
    assert main(["score-agreement", "--run", str(tiny_run), "--step", "40", "--out", str(tmp_path / "40"), *SMALL]) == 0
    capsys.readouterr()
    assert main(["score-agreement", "--run", str(damaged_60), "--out", str(tmp_path / "latest"), *SMALL]) == 0
    printed = capsys.readouterr()
    warnings = [line for line in printed.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, printed.err
    assert f"checkpoint at step 60 is unreadable ({damaged_60 / 'checkpoints' / '60'}: " in warnings[0]
    assert warnings[1].startswith("warning: analysing step 40, the newest readable checkpoint")
    assert printed.out.startswith("step 40 (ema weights)")
    assert read_csv(tmp_path / "latest" / "score_agreement.csv") == read_csv(tmp_path / "40" / "score_agreement.csv")


# --- D16 and D19: teleport's --inception and OUT/feature_net ---------------------------------------------------

def test_teleport_inception_directory_is_refused_before_sampling(tiny_run, tmp_path, capsys, monkeypatch):
    forbid(monkeypatch, "analysis.teleport.auto_sigma_skip")
    argv = ["teleport", "--run", str(tiny_run), "--out", str(tmp_path / "out"), "--inception", str(tmp_path)]
    assert main(argv) == 2
    one_error_line(capsys, "`--inception`", str(tmp_path), "is not a file")


def _feature_net_of_another_dataset(path: Path) -> None:
    """A saved feature net (initialised, untrained) of the dataset 'patches' on digits-shaped images."""
    import jax

    from gaussjax.quality import FeatureNet, save_feature_net
    from gaussjax.quality._feature_net import FeatureCNN

    module = FeatureCNN(widths=(4,), num_features=8, num_classes=10)
    params = module.init(jax.random.key(0), jax.numpy.zeros((1, 8, 8, 1)))
    save_feature_net(FeatureNet(params=params, module=module, image_shape=(8, 8, 1), classes=tuple(range(10)),
                                dataset_name="patches"), path)


@pytest.mark.parametrize("content", ["user files", "another dataset's net", "a file"])
def test_teleport_never_deletes_a_feature_net_directory_it_cannot_use(tiny_run, tmp_path, capsys, monkeypatch, content):
    out = tmp_path / "out"
    out.mkdir()
    cache = out / "feature_net"
    if content == "a file":
        cache.write_text("user data")
    else:
        if content == "another dataset's net":
            _feature_net_of_another_dataset(cache)
        else:
            cache.mkdir()
        (cache / "notes.txt").write_text("user data")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    for step in ("auto_sigma_skip", "train_feature_net", "gj.hybrid_sampler"):
        forbid(monkeypatch, f"analysis.teleport.{step}")
    assert main(["teleport", "--run", str(tiny_run), "--out", str(out), "--num-steps", "2"]) == 2
    line = one_error_line(capsys, str(cache), "remove")
    assert "choose another `--out`" in line
    if content == "another dataset's net":
        assert "a feature net of dataset 'patches'" in line
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (cache.read_text() if content == "a file" else (cache / "notes.txt").read_text()) == "user data"


# --- D21: counts and grid sizes whose arrays cannot fit are refused before anything is allocated ----------------

@pytest.mark.parametrize("command, extra, options", [
    ("score-agreement", ["--num-queries", "1000000000"], "`--num-queries` 1000000000"),
    ("teleport", ["--num-samples", "1000000000"], "`--num-samples` 1000000000"),
])
def test_huge_counts_are_refused_on_a_run(tiny_run, tmp_path, capsys, command, extra, options):
    with bounded(seconds=30, megabytes=100):
        assert main([command, "--run", str(tiny_run), "--out", str(tmp_path), *extra]) == 2
    one_error_line(capsys, options, "GiB of memory")


@pytest.mark.parametrize("command, extra, options", [
    ("gaussian-theory", ["--num-sigmas", "1000000000"], "`--num-sigmas` 1000000000"),
    ("trajectories", ["--num-steps", "100000000"], "`--num-steps` 100000000"),
    ("trajectories", ["--num-queries", "100000000"], "`--num-queries` 100000000"),
    ("samples", ["--num-queries", "1000000000"], "`--num-queries` 1000000000"),
    ("gmm-sweep", ["--num-queries", "1000000000"], "`--num-queries` 1000000000"),
    ("score-field", ["--grid", "100000x100000"], "`--grid` 100000x100000"),
    ("score-agreement", ["--num-sigmas", "100000000"], "`--num-sigmas` 100000000"),
    ("report", ["--num-queries", "1000000000"], "`--num-queries` 1000000000"),
])
@pytest.mark.slow
def test_huge_counts_and_grids_are_refused(tmp_path, capsys, command, extra, options):
    with bounded(seconds=20, megabytes=100):
        assert main([command, "--network", str(PICKLE), "--dataset", "digits", "--out", str(tmp_path), *extra]) == 2
    one_error_line(capsys, options, "GiB of memory")


# --- D22: noise levels whose results overflow float32 ------------------------------------------------------------

@pytest.mark.parametrize("command, option", [("gaussian-theory", "--sigma-max"), ("gaussian-theory", "--sigma-T"),
                                             ("gaussian-theory", "--sigma-min"), ("score-agreement", "--sigma-max"),
                                             ("gmm-sweep", "--sigmas"), ("score-field", "--sigmas")])
def test_noise_levels_beyond_float32_are_refused(tmp_path, capsys, monkeypatch, command, option):
    value = "1e-25" if option == "--sigma-min" else "1e25"
    forbid(monkeypatch, "gaussjax.fit_gaussian")  # every command fits the Gaussian first
    argv = [command, "--network", str(PICKLE), "--dataset", "digits", "--out", str(tmp_path), option, value]
    assert main(argv) == 2
    one_error_line(capsys, f"`{option}` must be in", "float32", value.replace("e", "e+") if value == "1e25" else value)
    assert not list(tmp_path.iterdir())


def test_the_accepted_noise_range_gives_finite_curves():
    """At the ends of the accepted range (sigma_T = 80, as in the paper), every closed-form curve is finite."""
    sigmas, lam = np.array([_common.SIGMA_MIN, 1.0, _common.SIGMA_MAX]), np.array([10.0, 1.0, 1e-4, 1e-8])
    for name, values in edm_curves(sigmas, lam, 80.0).items():
        assert np.all(np.isfinite(values)), name


def test_curves_that_still_overflow_are_refused(tmp_path, capsys):
    """Levels each in range, but sigma^2 / (sigma_T^2 + lam) beyond float32: an error, not rows of inf."""
    # digits has zero-variance pixels: lam = 0, and psi = sigma / sigma_T
    argv = ["gaussian-theory", "--dataset", "digits", "--out", str(tmp_path), "--num-eigvals", "64",
            "--sigma-T", "1e-10", "--sigma-max", "1e18"]
    assert main(argv) == 2
    one_error_line(capsys, "psi overflows float32 at sigma = ", "for the eigenvalue 0 with `--sigma-T` 1e-10")
    assert not (tmp_path / "gaussian_theory.csv").exists()


# --- only the input-error family is a usage error: a bug keeps its traceback --------------------------------------

@pytest.mark.parametrize("bug", [KeyError("internal"), TypeError("internal"), ValueError("internal")])
def test_a_bug_is_not_reported_as_a_usage_error(tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug
    monkeypatch.setattr("analysis.gaussian_theory.top_eigvals", broken)
    with pytest.raises(type(bug), match="internal"):
        main(["gaussian-theory", "--dataset", "digits", "--out", str(tmp_path)])


@pytest.mark.slow
def test_all_checkpoints_leaves_out_a_damaged_one_with_a_warning(tiny_run, tmp_path, capsys):
    run_dir = damaged(tiny_run, tmp_path / "run", [20])
    argv = ["score-field", "--run", str(run_dir), "--out", str(tmp_path / "out"), "--grid", "2", "--sigmas", "1",
            "--classes", "same", "--gmm-components", "2", "--all-checkpoints"]
    assert main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step 20" in warnings[0] and "left out of --all-checkpoints" in warnings[0]
    models = {row["model"] for row in read_csv(tmp_path / "out" / "score_field.csv")}
    assert {"network@0", "network@40"} <= models and "network@20" not in models
