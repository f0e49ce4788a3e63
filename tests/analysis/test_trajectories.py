"""`python -m analysis trajectories` (Fig. 7): deviations against NumPy, the Heun error on a Gaussian network."""

import jax
import numpy as np
import pytest

import gaussjax as gj
from analysis import trajectories as T
from analysis.__main__ import main
from analysis._common import command_key
from analysis.output import read_csv
from gaussjax.data import load_dataset
from gaussjax.runs import load_denoiser

QUERIES, STEPS, SEED = 6, 5, 3


def _rms(a, b):
    return np.sqrt(((np.float64(a) - np.float64(b)) ** 2).mean(-1))


@pytest.fixture(scope="module")
def cli_out(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("trajectories")
    argv = ["trajectories", "--run", str(tiny_run), "--out", str(out), "--num-queries", str(QUERIES),
            "--num-steps", str(STEPS), "--gmm-components", "2", "--seed", str(SEED)]
    assert main(argv) == 0
    return out


def test_gaussian_network_deviates_only_by_heun_error():
    flat = load_dataset("digits").flat[:300]
    gaussian = gj.fit_gaussian(flat)
    sigmas = gj.karras_sigmas(40)
    x_T = T.initial_states(jax.random.key(0), 16, flat.shape[1], float(sigmas[0]))
    network = T.heun_path(gaussian, x_T, sigmas)  # the "network" is the Gaussian itself
    deviations = T.path_deviations(network, T.reference_paths({"gaussian": gaussian}, x_T, sigmas))
    scale = np.median(_rms(network[0], 0.0), axis=1)  # RMS size of the state at each sigma
    assert np.all(deviations["gaussian", "state"].max(axis=1) < 1e-2 * scale)
    denoised_scale = np.median(_rms(network[1], 0.0), axis=1)
    assert np.all(deviations["gaussian", "denoiser"].max(axis=1) < 1e-2 * denoised_scale)


def test_quantile_rows_and_departure_match_numpy():
    rng = np.random.default_rng(0)
    sigmas = np.array([80.0, 10.0, 1.0, 0.0])
    deviations = {("gaussian", "state"): rng.random((4, 50)), ("gaussian", "denoiser"): rng.random((3, 50))}
    rows = T.quantile_rows(sigmas, deviations)
    assert len(rows) == 7
    for row in rows:
        values = deviations[row["reference"], row["quantity"]][row["step"]]
        assert row["sigma"] == sigmas[row["step"]]
        np.testing.assert_allclose([row["q25"], row["median"], row["q75"], row["mean"]],
                                   [*np.quantile(values, (0.25, 0.5, 0.75)), values.mean()])
    medians = np.median(deviations["gaussian", "state"], axis=1)
    threshold = float(np.sort(medians)[1])  # two of four levels exceed it
    assert T.departure_sigma(rows, "gaussian", threshold) == max(sigmas[medians > threshold])
    assert T.departure_sigma(rows, "gaussian", 2.0) is None


@pytest.mark.slow
def test_cli_csv_matches_recomputed_trajectories(tiny_run, cli_out):
    rows = read_csv(cli_out / "trajectories.csv")
    assert list(rows[0]) == list(T.COLUMNS)
    assert (cli_out / "trajectories.png").stat().st_size > 0
    assert len(rows) == len(T.REFERENCES) * ((STEPS + 1) + STEPS)
    saved = np.load(cli_out / "trajectory_deviations.npz")
    for row in rows:
        values = saved[f"{row['reference']}_{row['quantity']}"][int(row["step"])]
        np.testing.assert_allclose([float(row[c]) for c in ("q25", "median", "q75", "mean")],
                                   [*np.quantile(values, (0.25, 0.5, 0.75)), values.mean()], rtol=1e-12)
    # the Gaussian rows from an independent computation: same network, same x_T, NumPy deviations
    sigmas = gj.karras_sigmas(STEPS)
    flat = load_dataset("digits").flat
    x_T = T.initial_states(command_key(SEED, "initial-states"), QUERIES, flat.shape[1], 80.0)
    run = gj.heun_sampler(load_denoiser(tiny_run), x_T, sigmas, return_trajectory=True)
    gaussian = gj.fit_gaussian(flat)
    states = gj.gaussian_trajectory(gaussian, x_T, 80.0, sigmas)
    denoised = gj.gaussian_denoiser_trajectory(gaussian, x_T, 80.0, sigmas[:-1])
    np.testing.assert_allclose(saved["gaussian_state"], _rms(run.trajectory, states), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved["gaussian_denoiser"], _rms(run.denoised, denoised), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved["sigmas"], sigmas)


@pytest.mark.parametrize("extra, message", [
    (["--num-steps", "0"], "`--num-steps` must be >= 1"),
    (["--gmm-components", "0"], "`--gmm-components` must be an integer in"),
    (["--gmm-components", "100000"], "`--gmm-components` must be an integer in"),
])
def test_bad_options_are_named(tiny_run, tmp_path, capsys, extra, message):
    assert main(["trajectories", "--run", str(tiny_run), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
