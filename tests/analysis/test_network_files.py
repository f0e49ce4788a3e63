"""`--network FILE`: the analysis commands on an NVlabs/edm pickle or a `.safetensors` export instead of a run."""

from pathlib import Path

import jax
import numpy as np
import pytest

import gaussjax as gj
from analysis.__main__ import main
from analysis._common import command_key
from analysis.output import read_csv
from gaussjax.data import load_dataset
from gaussjax.evaluation import noised_data
from gaussjax.nn import load_edm_pickle, save_safetensors
from gaussjax.runs import load_denoiser

DATA = Path(__file__).parents[1] / "nn" / "data"
PICKLE = DATA / "edm_pickle_songunet.pkl"  # EDMPrecond(SongUNet) on 8 x 8 x 1 images, written by EDM's own code
SIGMAS = ["--num-sigmas", "2", "--sigma-min", "0.2", "--sigma-max", "2", "--gmm-components", "2"]


def _score_agreement(out, *source):
    assert main(["score-agreement", *source, "--out", str(out), "--seed", "5", "--num-queries", "8", *SIGMAS]) == 0
    return read_csv(out / "score_agreement.csv")


@pytest.mark.slow
def test_edm_pickle_rows_equal_compare_scores(tmp_path):
    rows = _score_agreement(tmp_path, "--network", str(PICKLE), "--dataset", "digits")
    flat = load_dataset("digits").flat
    query_key = command_key(5, "queries")
    expected = gj.compare_scores(load_edm_pickle(PICKLE), {"gaussian": gj.fit_gaussian(flat)}, noised_data(flat),
                                 np.geomspace(0.2, 2, 2), key=jax.random.fold_in(query_key, 0), num_queries=8)
    got = [r for r in rows if r["reference"] == "gaussian" and r["queries"] == "train"]
    assert len(got) == len(expected) == 2
    for row, want in zip(got, expected, strict=True):
        assert float(row["r2_denoiser"]) == pytest.approx(want["r2_denoiser"], rel=1e-4, abs=1e-7)
        assert float(row["fuv_score"]) == pytest.approx(want["fuv_score"], rel=1e-4, abs=1e-7)


@pytest.mark.slow
def test_safetensors_export_of_a_run_analyses_like_the_run(tiny_run, tmp_path):
    exported = tmp_path / "network.safetensors"
    save_safetensors(exported, load_denoiser(tiny_run, weights="ema"))
    from_file = _score_agreement(tmp_path / "file", "--network", str(exported), "--dataset", "digits")
    from_run = _score_agreement(tmp_path / "run", "--run", str(tiny_run))
    assert from_file == from_run


@pytest.mark.parametrize("argv, message", [
    (["--network", str(PICKLE)], "`--network` needs `--dataset NAME`"),
    (["--network", str(PICKLE), "--dataset", "digits", "--run", "somewhere"], "either `--run RUN_DIR` or `--network"),
    (["--network", str(PICKLE), "--dataset", "digits", "--step", "3"], "a `--network` file holds one network"),
    (["--network", str(PICKLE.with_suffix(".npz")), "--dataset", "digits"], "is not a file"),
    (["--network", str(DATA / "edm_pickle_songunet_state.npz"), "--dataset", "digits"],
     "must be a .pkl or .safetensors"),
    (["--network", str(PICKLE), "--dataset", "patches"], "takes images of shape (8, 8, 1), but dataset 'patches'"),
])
def test_bad_network_options(tmp_path, capsys, argv, message):
    assert main(["score-agreement", "--out", str(tmp_path), *argv]) == 2
    error = capsys.readouterr().err
    assert message in error, error


@pytest.mark.slow  # a whole report
def test_report_on_a_network_file_leaves_out_learning_dynamics(tmp_path, capsys):
    others = "score-agreement,trajectories,samples,gmm-sweep,score-field"
    argv = ["report", "--network", str(PICKLE), "--dataset", "digits", "--out", str(tmp_path), "--skip", others]
    assert main(argv) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith(f"# gaussjax analysis of {PICKLE}")
    assert "## gaussian-theory" in markdown and "learning-dynamics" not in markdown
