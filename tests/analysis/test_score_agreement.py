"""`python -m analysis score-agreement` (Fig. 6) against `gj.compare_scores` run directly."""

import zlib

import jax
import numpy as np
import pytest

import gaussjax as gj
from analysis.__main__ import main
from analysis.output import read_csv
from gaussjax.data import load_dataset
from gaussjax.evaluation import noised_data, pure_noise
from gaussjax.runs import load_denoiser

SEED, QUERIES, SIGMAS = 3, 16, np.geomspace(0.05, 20.0, 4)
COLUMNS = ["sigma", "reference", "queries", "fuv_score", "fuv_denoiser", "r2_denoiser", "mse_denoiser"]


def _argv(run_dir, out, *extra):
    return ["score-agreement", "--run", str(run_dir), "--out", str(out), "--seed", str(SEED),
            "--num-queries", str(QUERIES), "--num-sigmas", "4", "--sigma-min", "0.05", "--sigma-max", "20",
            "--gmm-components", "3", *extra]


@pytest.fixture(scope="module")
def result(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("score-agreement")
    assert main(_argv(tiny_run, out, "--step", "40")) == 0
    assert (out / "score_agreement.png").stat().st_size > 1000
    return out, read_csv(out / "score_agreement.csv")


def test_rows_equal_compare_scores_on_the_same_queries(tiny_run, result):
    _, rows = result
    assert list(rows[0]) == COLUMNS
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    flat = train.flat
    # the references are the data's (k-means from fold_in(key(0), K)); the queries `--seed` through the purpose's CRC-32
    query_key = jax.random.fold_in(jax.random.key(SEED), zlib.crc32(b"queries") & 0x7FFFFFFF)
    models = {
        "isotropic": gj.Isotropic(flat.mean(axis=0)),
        "gaussian": gj.fit_gaussian(flat),
        "gmm3": gj.fit_gmm(flat, 3, key=jax.random.fold_in(jax.random.key(0), 3)),
        "gmm-class": gj.fit_gmm(flat, 10, labels=train.labels),
        "delta": gj.DeltaMixture(flat),
    }
    network = load_denoiser(tiny_run, step=40, weights="ema")
    queries = {"train": noised_data(flat), "test": noised_data(test.flat), "noise": pure_noise(flat.shape[1])}
    expected = []
    for index, (name, distribution) in enumerate(queries.items()):
        key = jax.random.fold_in(query_key, index)
        for row in gj.compare_scores(network, models, distribution, SIGMAS, key=key, num_queries=QUERIES):
            expected.append({**row, "queries": name})
    assert len(rows) == len(expected) == 3 * 4 * 5
    for got, want in zip(rows, expected, strict=True):
        assert (got["reference"], got["queries"]) == (want["candidate"], want["queries"])
        assert float(got["sigma"]) == pytest.approx(want["sigma"], rel=1e-12)
        for column in COLUMNS[3:]:
            assert float(got[column]) == pytest.approx(want[column], rel=1e-4, abs=1e-7), (got, column)


def _recompute_sigma99(rows):
    gauss = sorted((float(r["sigma"]), float(r["fuv_score"])) for r in rows
                   if r["reference"] == "gaussian" and r["queries"] == "train")
    answer = None
    for sigma, fuv in reversed(gauss):  # walk down from the largest sigma while the Gaussian explains > 99%
        if fuv >= 0.01:
            break
        answer = sigma
    return answer


def test_summary_sigma99_and_r2_match_the_csv(tiny_run, tmp_path, capsys):
    assert main(_argv(tiny_run, tmp_path)) == 0
    out = capsys.readouterr().out
    rows = read_csv(tmp_path / "score_agreement.csv")
    sigma99 = _recompute_sigma99(rows)
    line = next(line for line in out.splitlines() if line.startswith("sigma99"))
    assert line.endswith(f"{sigma99:.4g}" if sigma99 is not None else "none on the grid")
    for name in ("train", "test"):
        below = [float(r["sigma"]) for r in rows if r["reference"] == "gaussian" and r["queries"] == name
                 and float(r["r2_denoiser"]) < 0.9]
        want = f"{min(below):.4g}" if below else "none (R^2 >= 0.9 everywhere)"
        assert f"R^2 < 0.9 from sigma = {want} ({name} queries)" in out


@pytest.mark.parametrize("extra, message", [
    (["--step", "7"], "`--step` 7 has no checkpoint"),
    (["--dataset", "patches"], "does not match the run's dataset"),
    (["--gmm-components", "3,x"], "--gmm-components"),
    (["--gmm-components", "0"], "--gmm-components"),
    (["--sigma-min", "0"], "--sigma-min"),
    (["--local", "ls3,els2"], "`--local` must list local models"),
    (["--query-sets", "train,holdout"], "`--query-sets` must name some of train, test, noise"),
])
def test_bad_inputs_are_named_errors(tiny_run, tmp_path, capsys, extra, message):
    assert main(_argv(tiny_run, tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "score_agreement.csv").exists()


def test_missing_run_directory_is_a_named_error(tmp_path, capsys):
    assert main(_argv(tmp_path / "nowhere", tmp_path)) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_needs_a_run(tmp_path, capsys):
    assert main(["score-agreement", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    assert "--run RUN_DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_local_models_are_compared_and_the_best_model_is_named(tiny_run, tmp_path, capsys):
    """`--local ls3`: its rows equal `compare_scores` with `PatchMixture(train images, 3)` on the same queries."""
    argv = ["score-agreement", "--run", str(tiny_run), "--out", str(tmp_path), "--seed", str(SEED), "--num-queries",
            "8", "--num-sigmas", "2", "--sigma-min", "0.2", "--sigma-max", "2", "--gmm-components", "",
            "--local", "ls3", "--query-sets", "test"]
    assert main(argv) == 0
    rows = [r for r in read_csv(tmp_path / "score_agreement.csv") if r["reference"] == "ls3"]
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    query_key = jax.random.fold_in(jax.random.key(SEED), zlib.crc32(b"queries") & 0x7FFFFFFF)
    expected = gj.compare_scores(load_denoiser(tiny_run, weights="ema"),
                                 {"ls3": gj.scores.PatchMixture(train.images, 3)}, noised_data(test.flat),
                                 np.geomspace(0.2, 2, 2), key=jax.random.fold_in(query_key, 1), num_queries=8)
    got = [r for r in rows if r["queries"] == "test"]
    assert len(got) == len(rows) == len(expected) == 2  # only the chosen query set, with its own draws
    for row, want in zip(got, expected, strict=True):
        assert float(row["r2_denoiser"]) == pytest.approx(want["r2_denoiser"], rel=1e-4, abs=1e-7)
    best = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("best denoiser R^2"))
    assert "(test queries)" in best and best.count(":") == 3  # the header, then one "sigma: model" per sigma
