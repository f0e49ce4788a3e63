"""train.probes: held-out queries, the denoiser statistics, and truncating probes.csv on resume."""

import csv

import jax
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.data import load_dataset
from train import probes
from train.configs import get_config

CONFIG = get_config("digits-tiny")


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def splits():
    return (np.asarray(load_dataset("digits").flat, np.float64), np.asarray(load_dataset("digits", split="test").flat,
                                                                              np.float64))


def test_held_out_queries_are_noised_test_images_and_the_train_queries_are_unchanged(splits):
    flat, test_flat = splits
    config = CONFIG.replace(probe_sigmas=(1e-4, 0.5))
    models = {"isotropic": gj.Isotropic(flat.mean(axis=0))}
    built = probes.build_probes(config, flat, models, test_flat)
    assert list(built) == ["train", "test"]
    old = probes.build_probe(config, flat, models)  # the queries of runs before held-out probes
    np.testing.assert_array_equal(built["train"].queries, old.queries)
    def nearest(points, data):
        return np.sqrt(((points[:, None] - data[None]) ** 2).sum(-1)).min(axis=1)

    queries = np.asarray(built["test"].queries[0], np.float64)  # sigma = 1e-4: the images themselves
    assert np.all(nearest(queries, test_flat) < 1e-2) and np.all(nearest(queries, flat) > 0.1)
    again = probes.build_probes(config, flat, models, test_flat)
    np.testing.assert_array_equal(again["test"].queries, built["test"].queries)  # seeded
    assert list(probes.build_probes(config, flat, models, None)) == ["train"]


def test_load_test_flat_is_the_test_split_or_none():
    np.testing.assert_array_equal(probes.load_test_flat(CONFIG), load_dataset("digits", split="test").flat)
    assert probes.load_test_flat(CONFIG.replace(dataset="array")) is None  # no test split


def test_probe_rows_hold_both_query_sets_with_the_denoiser_statistics(splits):
    flat, test_flat = splits
    models = {"isotropic": gj.Isotropic(flat.mean(axis=0)), "gaussian": gj.fit_gaussian(flat)}
    built = probes.build_probes(CONFIG, flat, models, test_flat)
    network = gj.fit_gaussian(test_flat)  # a stand-in for the network: any denoiser
    rows = probes.probe_rows(built, 20, {"ema": network})
    assert all(list(row) == probes.PROBE_COLUMNS for row in rows)
    assert len(rows) == 2 * len(CONFIG.probe_sigmas) * len(models)
    key = jax.random.fold_in(jax.random.key(CONFIG.seed), 8)
    expected = gj.compare_scores(network, models, gj.evaluation.noised_data(test_flat), CONFIG.probe_sigmas, key=key,
                                 num_queries=round(probes.HELD_OUT_QUERY_FRACTION * CONFIG.probe_queries))
    test_rows = [r for r in rows if r["queries"] == "test"]
    assert [(r["sigma"], r["reference"]) for r in test_rows] == [(e["sigma"], e["candidate"]) for e in expected]
    for row, want in zip(test_rows, expected, strict=True):
        for column in ("fuv_score", "fuv_denoiser", "r2_denoiser", "mse_denoiser"):
            assert row[column] == want[column]
    # R^2 and MSE of the denoiser against NumPy, on the probe's own queries
    index = list(CONFIG.probe_sigmas).index(0.5)
    x = np.asarray(built["test"].queries[index], np.float64)
    ref, approx = (np.asarray(model.denoise(x, 0.5), np.float64) for model in (network, models["gaussian"]))
    row = next(r for r in test_rows if r["sigma"] == 0.5 and r["reference"] == "gaussian")
    r2 = 1 - ((ref - approx) ** 2).sum() / ((ref - ref.mean(axis=0)) ** 2).sum()
    np.testing.assert_allclose(row["r2_denoiser"], r2, rtol=1e-4)
    np.testing.assert_allclose(row["mse_denoiser"], ((ref - approx) ** 2).mean(), rtol=1e-4)


def test_truncation_keeps_finished_rows_and_refuses_another_layout(tmp_path):
    path = tmp_path / "probes.csv"
    rows = [{"step": step, "sigma": 0.5, "reference": "gaussian", "weights": "ema", "queries": "train",
             "fuv_score": 0.5, "fuv_denoiser": 0.25, "r2_denoiser": 0.75, "mse_denoiser": 0.125}
            for step in (0, 20, 40)]
    probes.append_rows(path, rows, probes.PROBE_COLUMNS)
    with open(path, "a") as file:
        file.write("60,0.5,gauss")  # a line cut short by a crash
    probes.truncate_rows(path, 20, probes.PROBE_COLUMNS)
    assert probes.probed_steps(path) == {0, 20}
    old_layout = tmp_path / "old.csv"
    old_layout.write_text("step,sigma,reference,weights,fuv_score,fuv_denoiser\n0,0.5,gaussian,ema,0.5,0.25\n")
    with pytest.raises(ValueError, match="old.csv has the columns .* start a new run directory"):
        probes.truncate_rows(old_layout, 20, probes.PROBE_COLUMNS)
    assert "0,0.5,gaussian,ema,0.5,0.25" in old_layout.read_text()  # never rewritten
    empty = tmp_path / "empty.csv"
    empty.touch()
    probes.truncate_rows(empty, 20, probes.PROBE_COLUMNS)
    assert not empty.exists()


def test_the_summary_table_uses_the_train_queries(tmp_path):
    path = tmp_path / "probes.csv"
    rows = [{"step": 20, "sigma": 0.5, "reference": "gaussian", "weights": "ema", "queries": queries,
             "fuv_score": value, "fuv_denoiser": value, "r2_denoiser": 1 - value, "mse_denoiser": value}
            for queries, value in (("train", 0.125), ("test", 0.375))]
    probes.append_rows(path, rows, probes.PROBE_COLUMNS)
    table = probes.summary_table(path)
    assert "0.125" in table and "0.375" not in table
    probes.truncate_rows(path, 20, probes.PROBE_COLUMNS)
    assert len(read_csv(path)) == 2


def test_local_probe_references_are_the_named_local_models(tmp_path):
    """`probe_local` adds local models, built from the training images, beside the global references."""
    train_set = load_dataset("digits")
    config = CONFIG.replace(probe_local=("ls3", "pspc4"))
    models = probes.fit_analytic_models(config, np.asarray(train_set.flat), None, tmp_path, image_shape=(8, 8, 1))
    assert list(models)[-2:] == ["ls3", "pspc4"]
    assert isinstance(models["ls3"], gj.scores.PatchMixture) and models["ls3"].patch_size == 3
    assert isinstance(models["pspc4"], gj.scores.PatchPosteriorMean)
    x = np.asarray(train_set.flat[:2])
    expected = gj.scores.PatchMixture(train_set.images, 3).denoise(x, 0.5)
    np.testing.assert_array_equal(models["ls3"].denoise(x, 0.5), expected)
