"""Analysis commands on a run trained with all three of the paper's Sec. 8 options (--bypass --whiten --warm-start).

One `digits-tiny` run of 20 steps; every network sample is checked against a start computed here in float64
NumPy: the whitened prior `sigma_max z` carried by the whitened Gaussian's exact flow (Eq. 15) down to the warm
start and mapped back to data space, `x = mu + (Sigma + eps_abs I)^(1/2) z`.
"""

import contextlib
import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from frechet import numpy_fd

import gaussjax as gj
from analysis.__main__ import main
from analysis.output import read_csv
from gaussjax.data import load_dataset
from gaussjax.quality import load_feature_net
from gaussjax.runs import load_denoiser

ROOT = Path(__file__).resolve().parents[2]
EPS, LIMIT = 0.01, 2.0
NUM, STEPS = 64, 8


@pytest.fixture(scope="module")
def design_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("design") / "run"
    command = [sys.executable, "-m", "train", "--config", "digits-tiny", "--steps", "20", "--checkpoint-every", "10",
               "--bypass", "--whiten", str(EPS), "--warm-start", str(LIMIT), "--no-progress", "--out", str(run)]
    subprocess.run(command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), check=True, capture_output=True)
    return run


def initial_z(purpose: str = "initial-states", seed: int = 0) -> np.ndarray:
    """The commands' `z` (`command_key(seed, purpose)`), float64."""
    key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)
    return np.asarray(jax.random.normal(key, (NUM, 64), np.float32), np.float64)


def numpy_start(z: np.ndarray, sigmas: np.ndarray, level: int) -> np.ndarray:
    """float64: the whitened prior `sigmas[0] z` flowed to `sigmas[level]` by the whitened Gaussian, mapped back."""
    X = np.asarray(load_dataset("digits", split="train").flat, np.float64)
    mean = X.mean(0)
    lam, U = np.linalg.eigh(np.cov(X.T, bias=True))
    lam = np.clip(lam, 0, None)
    floor = EPS * lam.max()
    lam_z = lam / (lam + floor)
    z_k = (np.sqrt((lam_z + sigmas[level] ** 2) / (lam_z + sigmas[0] ** 2)) * ((sigmas[0] * z) @ U)) @ U.T
    return mean + (np.sqrt(lam + floor) * (z_k @ U)) @ U.T


def warm_level(sigmas: np.ndarray) -> int:
    return int(np.flatnonzero(sigmas[:-1] <= LIMIT)[0])


def heun_from_numpy_start(run: Path, sigmas: np.ndarray) -> np.ndarray:
    k = warm_level(sigmas)
    x_k = numpy_start(initial_z(), sigmas, k)
    network = load_denoiser(run, step=20, weights="ema")
    return np.asarray(gj.heun_sampler(network, np.asarray(x_k, np.float32), gj.karras_sigmas(STEPS)[k:]).x)


@pytest.mark.slow
def test_samples_start_the_network_at_its_whitened_warm_start(design_run, tmp_path):
    argv = ["samples", "--run", str(design_run), "--out", str(tmp_path), "--num-queries", str(NUM),
            "--num-steps", str(STEPS), "--gmm-components", "2"]
    assert main(argv) == 0
    saved = np.load(tmp_path / "samples.npz")
    sigmas = np.asarray(gj.karras_sigmas(STEPS), np.float64)
    np.testing.assert_allclose(saved["x_T"], sigmas[0] * initial_z(), rtol=1e-6)  # the references' start
    expected = heun_from_numpy_start(design_run, sigmas)
    np.testing.assert_allclose(saved["network"], expected, atol=2e-3 * np.abs(expected).max())


@pytest.mark.slow
def test_trajectories_follow_the_teleported_states_down_to_the_warm_start(design_run, tmp_path):
    argv = ["trajectories", "--run", str(design_run), "--out", str(tmp_path), "--num-queries", str(NUM),
            "--num-steps", str(STEPS), "--gmm-components", "2"]
    assert main(argv) == 0
    sigmas = np.asarray(gj.karras_sigmas(STEPS), np.float64)
    k = warm_level(sigmas)
    rows = [r for r in read_csv(tmp_path / "trajectories.csv") if r["reference"] == "gaussian"]
    denoiser = {int(r["step"]): float(r["median"]) for r in rows if r["quantity"] == "denoiser"}
    assert all(np.isnan(denoiser[i]) for i in range(k)) and all(np.isfinite(denoiser[i]) for i in range(k, STEPS))
    saved = np.load(tmp_path / "trajectory_deviations.npz")
    for level in range(k + 1):  # the network's states there: numpy_start; the Gaussian's: its isotropic path
        X = np.asarray(load_dataset("digits", split="train").flat, np.float64)
        gaussian = gj.fit_gaussian(X)
        reference = np.asarray(gj.gaussian_trajectory(gaussian, sigmas[0] * initial_z(), sigmas[0], sigmas[level]))
        rms = np.linalg.norm(numpy_start(initial_z(), sigmas, level) - reference, axis=1) / 8.0
        np.testing.assert_allclose(saved["gaussian_state"][level], rms, rtol=2e-3, atol=1e-4)


@pytest.mark.slow
def test_compare_runs_fd_is_of_samples_from_the_whitened_warm_start(design_run, tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare-runs", str(design_run), "--out", str(tmp_path), "--num-samples", str(NUM),
                     "--num-steps", str(STEPS)])
    assert code == 0
    fd = {int(r["step"]): float(r["value"]) for r in read_csv(tmp_path / "compare_runs.csv") if r["metric"] == "fd"}
    net = load_feature_net(tmp_path / "feature_net")
    train = load_dataset("digits", split="train")
    real = np.asarray(net.features(train.images))
    samples = heun_from_numpy_start(design_run, np.asarray(gj.karras_sigmas(STEPS), np.float64))
    fake = np.asarray(net.features(samples.reshape(-1, 8, 8, 1)))
    assert fd[20] == pytest.approx(numpy_fd(real, fake), rel=2e-3)
    assert "digits-tiny" in stdout.getvalue()


@pytest.mark.slow
def test_teleport_refuses_a_whitened_run(design_run, tmp_path):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["teleport", "--run", str(design_run), "--out", str(tmp_path), "--num-samples", "8"])
    assert code != 0 and "whitened" in stderr.getvalue()


@pytest.mark.slow
def test_warm_start_training_draws_no_noise_level_above_its_limit(design_run):
    """loss.csv's per-sigma-bin losses: the bin above 5 (> the limit 2) is empty (nan) in every row, the others not."""
    rows = read_csv(design_run / "loss.csv")
    assert rows and all(np.isnan(float(r["loss_sigma_5_inf"])) for r in rows)
    assert all(np.isfinite(float(r["loss_sigma_1_5"])) for r in rows)
