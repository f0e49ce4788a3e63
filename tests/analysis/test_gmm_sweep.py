"""`python -m analysis gmm-sweep`: rows against `gj.compare_scores`, the minimal-rank summary against the CSV."""

import contextlib
import io
import re

import jax
import numpy as np
import pytest

import gaussjax as gj
from analysis.__main__ import main
from analysis._common import command_key
from analysis.output import read_csv
from gaussjax.data import load_dataset
from gaussjax.evaluation import noised_data
from gaussjax.runs import load_denoiser

SIGMAS = (0.1, 1.0, 10.0)
SEED, QUERIES = 3, 32


@pytest.fixture(scope="module")
def sweep(tiny_run, tmp_path_factory):
    """One small sweep: K in {1, 3}, ranks {2, 100 -> D = 64}; its CSV rows and printed summary."""
    out = tmp_path_factory.mktemp("gmm-sweep")
    argv = ["gmm-sweep", "--run", str(tiny_run), "--out", str(out), "--seed", str(SEED), "--num-queries", str(QUERIES),
            "--components", "1,3", "--ranks", "2,100", "--sigmas", ",".join(map(str, SIGMAS))]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return read_csv(out / "gmm_sweep.csv"), stdout.getvalue(), out


def test_grid_and_columns(sweep):
    rows, _, out = sweep
    assert list(rows[0]) == ["components", "rank", "sigma", "fuv_score", "fuv_denoiser", "r2_denoiser"]
    grid = {(int(r["components"]), int(r["rank"]), float(r["sigma"])) for r in rows}
    assert grid == {(k, r, s) for k in (1, 3) for r in (2, 64) for s in SIGMAS}  # rank 100 capped at D = 64
    assert len(rows) == len(grid)
    assert (out / "gmm_sweep.png").stat().st_size > 1000


@pytest.mark.parametrize("components, rank", [(3, 2), (1, 64)])
@pytest.mark.slow
def test_rows_equal_compare_scores(sweep, tiny_run, components, rank):
    rows, _, _ = sweep
    flat = np.asarray(load_dataset("digits").flat)
    query_key = command_key(SEED, "queries")
    gmm = gj.fit_gmm(flat, components, rank=rank, key=jax.random.fold_in(jax.random.key(0), components))  # as gmm{K}
    expected = gj.compare_scores(load_denoiser(tiny_run), {"gmm": gmm}, noised_data(flat), SIGMAS, key=query_key,
                                 num_queries=QUERIES)
    got = sorted((float(r["sigma"]), r) for r in rows if int(r["components"]) == components and int(r["rank"]) == rank)
    assert [s for s, _ in got] == [e["sigma"] for e in expected]
    for (_, row), ref in zip(got, expected, strict=True):
        for column in ("fuv_score", "fuv_denoiser", "r2_denoiser"):
            np.testing.assert_allclose(float(row[column]), ref[column], rtol=1e-5, atol=1e-7, err_msg=column)


def test_single_gaussian_fuv_falls_with_noise(sweep):
    """Fig. 6/9: the full-rank Gaussian explains the network's score better at high noise."""
    rows, _, _ = sweep
    fuv = [float(r["fuv_score"]) for r in sorted(rows, key=lambda r: float(r["sigma"]))
           if r["components"] == "1" and r["rank"] == "64"]
    assert fuv[-1] < fuv[0]


def test_minimal_rank_summary_matches_csv(sweep):
    rows, stdout, _ = sweep
    expected = {}
    for sigma in SIGMAS:
        per_k = {}
        for k in (1, 3):
            passing = [int(r["rank"]) for r in rows if float(r["sigma"]) == sigma and int(r["components"]) == k
                       and float(r["fuv_score"]) < 0.01]
            per_k[k] = min(passing) if passing else None
        expected[sigma] = per_k
    printed = {}
    for line in stdout.splitlines():
        match = re.match(r"sigma=(\S+): (.*); best: (.*)$", line)
        if match:
            per_k = dict(re.findall(r"K=(\d+): (\w+)", match.group(2)))
            printed[float(match.group(1))] = ({int(k): None if r == "none" else int(r) for k, r in per_k.items()},
                                              match.group(3))
    assert set(printed) == set(SIGMAS)
    for sigma, (per_k, best) in printed.items():
        assert per_k == expected[sigma]
        found = sorted((r, k) for k, r in expected[sigma].items() if r is not None)
        assert best == ("none" if not found else f"{found[0][0]} (K={found[0][1]})")


@pytest.mark.parametrize("extra, message", [
    (["--components", "0"], "--components"),
    (["--components", "2,x"], "--components"),
    (["--components", "100000"], "--components"),
    (["--ranks", "-4"], "--ranks"),
    (["--sigmas", "0.1,0"], "--sigmas"),
    (["--threshold", "1.5"], "--threshold"),
])
def test_bad_options_are_named_errors(tiny_run, tmp_path, capsys, extra, message):
    argv = ["gmm-sweep", "--run", str(tiny_run), "--out", str(tmp_path), "--num-queries", "4", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
