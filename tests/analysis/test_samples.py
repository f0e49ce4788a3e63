"""`python -m analysis samples` (Fig. 8): MSE table and nearest neighbours against brute-force NumPy."""

import itertools

import numpy as np
import pytest

from analysis import samples as S
from analysis.__main__ import main
from analysis.output import read_csv
from gaussjax.data import load_dataset

QUERIES, STEPS = 5, 4


@pytest.fixture(scope="module")
def cli_out(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    argv = ["samples", "--run", str(tiny_run), "--out", str(out), "--num-queries", str(QUERIES),
            "--num-steps", str(STEPS), "--gmm-components", "2"]
    assert main(argv) == 0
    return out


def _brute_force(samples, train):
    distances = np.linalg.norm(np.float64(samples)[:, None, :] - np.float64(train)[None, :, :], axis=-1)
    return distances, np.sort(distances, axis=1)


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    samples = np.concatenate([train[[7, 42]] + 1e-3, rng.normal(size=(600, 16))]).astype(np.float32)  # > one block
    index, distance, ratio = S.nearest_neighbours(samples, train)
    distances, ordered = _brute_force(samples, train)
    np.testing.assert_array_equal(index, distances.argmin(axis=1))
    np.testing.assert_allclose(distance, ordered[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ratio, ordered[:, 0] / ordered[:, 1], rtol=1e-6, atol=1e-9)
    assert index[0] == 7 and index[1] == 42 and ratio[0] < S.MEMORISATION_RATIO


def test_exact_copy_of_a_duplicated_image_has_ratio_zero():
    train = np.array([[0.0, 1.0], [0.0, 1.0], [3.0, 3.0]])
    index, distance, ratio = S.nearest_neighbours(np.array([[0.0, 1.0]]), train)
    assert index[0] in (0, 1) and distance[0] == 0 and ratio[0] == 0
    with pytest.raises(ValueError, match=">= 2 training images"):
        S.nearest_neighbours(np.zeros((1, 2)), train[:1])


@pytest.mark.slow
def test_cli_tables_match_numpy_on_saved_samples(cli_out):
    saved = np.load(cli_out / "samples.npz")
    assert set(saved.files) == {"x_T", *S.MODELS}
    assert all(saved[m].shape == (QUERIES, 64) for m in S.MODELS)
    assert (cli_out / "samples.png").stat().st_size > 0
    mse = read_csv(cli_out / "samples_mse.csv")
    assert list(mse[0]) == list(S.MSE_COLUMNS)
    assert [(r["model_a"], r["model_b"]) for r in mse] == list(itertools.combinations(S.MODELS, 2))
    for row in mse:
        expected = np.mean((np.float64(saved[row["model_a"]]) - np.float64(saved[row["model_b"]])) ** 2)
        np.testing.assert_allclose(float(row["mse"]), expected, rtol=1e-12)
    nearest = read_csv(cli_out / "samples_nearest.csv")
    assert list(nearest[0]) == list(S.NEAREST_COLUMNS)
    distances, ordered = _brute_force(saved["network"], load_dataset("digits").flat)
    for i, row in enumerate(nearest):
        assert int(row["sample"]) == i
        np.testing.assert_allclose(distances[i, int(row["nearest_index"])], ordered[i, 0], rtol=1e-9)
        np.testing.assert_allclose(float(row["distance"]), ordered[i, 0], rtol=1e-6)
        np.testing.assert_allclose(float(row["nearest_distance_ratio"]), ordered[i, 0] / ordered[i, 1], rtol=1e-6)


@pytest.mark.slow
def test_gaussian_samples_are_the_closed_form_final_state(cli_out):
    import gaussjax as gj

    saved = np.load(cli_out / "samples.npz")
    expected = gj.gaussian_final_state(gj.fit_gaussian(load_dataset("digits").flat), saved["x_T"], 80.0)
    np.testing.assert_allclose(saved["gaussian"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.std(saved["x_T"]), 80.0, rtol=0.1)


@pytest.mark.parametrize("extra, message", [
    (["--num-steps", "-1"], "`--num-steps` must be >= 1"),
    (["--gmm-components", "0"], "`--gmm-components` must be an integer in"),
])
def test_bad_options_are_named(tiny_run, tmp_path, capsys, extra, message):
    assert main(["samples", "--run", str(tiny_run), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
