import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from train.checkpoints import Checkpointer
from train.configs import get_config
from train.run import train

ROOT = Path(__file__).resolve().parents[2]


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def final_params(run_dir):
    """The EMA and raw parameters of the newest checkpoint, as flat float64 vectors."""
    checkpointer = Checkpointer(run_dir)
    step = checkpointer.steps()[-1]
    leaves = jax.tree_util.tree_leaves([checkpointer.restore_params(step, weights) for weights in ("raw", "ema")])
    return step, np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves])


COMMAND = [sys.executable, "-m", "train", "--config", "digits-tiny", "--no-progress"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted `python -m train --config digits-tiny` run, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run([*COMMAND, "--out", str(run_dir)], cwd=ROOT, env=ENV, check=True, capture_output=True)
    return run_dir


def test_loss_falls_and_files_are_written(tiny_run):
    losses = [float(r["loss"]) for r in read_csv(tiny_run / "loss.csv")]
    assert len(losses) == 6  # 60 steps, a row every 10
    assert np.mean(losses[-2:]) < 0.8 * losses[0]
    assert (tiny_run / "config.json").exists() and (tiny_run / "analytic_models.npz").exists()
    assert Checkpointer(tiny_run).steps() == [0, 20, 40, 60]


def test_probes_csv_schema_and_values(tiny_run):
    rows = read_csv(tiny_run / "probes.csv")
    assert list(rows[0]) == ["step", "sigma", "reference", "weights", "fuv_score", "fuv_denoiser"]
    references = {"isotropic", "gaussian", "gmm2", "gmm-class", "delta"}
    assert {r["reference"] for r in rows} == references
    assert {r["weights"] for r in rows} == {"raw", "ema"}
    assert len(rows) == 4 * 3 * len(references) * 2  # checkpoints x sigmas x references x weights
    values = np.array([[float(r["fuv_score"]), float(r["fuv_denoiser"])] for r in rows])
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    # training moves the network towards the analytic scores at high noise
    at = {(int(r["step"]), r["reference"], r["weights"], float(r["sigma"])): float(r["fuv_score"]) for r in rows}
    assert at[(60, "gaussian", "raw", 5.0)] < at[(0, "gaussian", "raw", 5.0)]


def test_another_config_in_the_same_directory_is_refused(tiny_run):
    with pytest.raises(ValueError, match="another configuration .*lr"):
        train(get_config("digits-tiny").replace(lr=1e-4), tiny_run, progress=False)


def test_sigkill_and_resume_give_the_uninterrupted_result(tmp_path, tiny_run):
    killed = tmp_path / "killed"
    process = subprocess.Popen([*COMMAND, "--out", str(killed)], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "20" / "commit_success.txt").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = subprocess.run([*COMMAND, "--out", str(killed)], cwd=ROOT, env=ENV, check=True, capture_output=True,
                            text=True)
    assert "resuming digits-tiny from step" in result.stdout
    step, resumed = final_params(killed)
    reference_step, expected = final_params(tiny_run)
    assert step == reference_step == 60
    np.testing.assert_array_equal(resumed, expected)
    steps = [int(r["step"]) for r in read_csv(killed / "probes.csv")]
    assert sorted(set(steps)) == [0, 20, 40, 60] and steps == sorted(steps)


def test_corrupt_newest_checkpoint_falls_back(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    _, expected = final_params(run_dir)
    for path in (run_dir / "checkpoints" / "60").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "commit" not in path.name:
            path.write_bytes(b"\0" * 16)  # corrupt every data file of the newest checkpoint
    with pytest.warns(UserWarning, match="checkpoint at step 60 is unreadable"):
        train(get_config("digits-tiny"), run_dir, progress=False, log=lambda *a: None)
    assert (run_dir / "corrupt_checkpoints" / "60").exists()
    step, params = final_params(run_dir)
    assert step == 60
    np.testing.assert_array_equal(params, expected)


def test_load_denoiser_recovers_the_probed_network(tiny_run, caplog):
    """The loaded networks (EMA and raw) reproduce the probe values written during training, and sample."""
    import train.run
    from gaussjax.data import load_dataset
    from gaussjax.samplers import heun_sampler
    from gaussjax.schedules import karras_sigmas
    from train import probes
    from train.checkpoints import load_denoiser

    assert train.run.load_denoiser is load_denoiser  # the old import path keeps working
    config = get_config("digits-tiny")
    flat = np.asarray(load_dataset("digits").flat)
    models = probes.fit_analytic_models(config, flat, None, tiny_run)  # cached in the run directory
    with caplog.at_level(logging.WARNING):
        denoisers = {weights: load_denoiser(tiny_run, weights=weights) for weights in ("ema", "raw")}
    assert not [r for r in caplog.records if "could not be restored" in r.getMessage()]
    rows = probes.probe_rows(probes.build_probe(config, flat, models), 60, denoisers)
    written = {(r["weights"], r["reference"], float(r["sigma"])): float(r["fuv_denoiser"])
               for r in read_csv(tiny_run / "probes.csv") if r["step"] == "60"}
    assert len(rows) == len(written)
    for row in rows:
        np.testing.assert_allclose(row["fuv_denoiser"], written[row["weights"], row["reference"], row["sigma"]],
                                   rtol=1e-3)

    denoiser = denoisers["ema"]
    samples = heun_sampler(denoiser, jax.random.normal(jax.random.key(0), (4, 64)) * 80.0, karras_sigmas(6)).x
    assert samples.shape == (4, 64) and np.all(np.isfinite(samples))
    with pytest.raises(ValueError, match="`step` = 7 has no checkpoint"):
        load_denoiser(tiny_run, step=7)
    with pytest.raises(ValueError, match="weights"):
        load_denoiser(tiny_run, weights="best")


@pytest.fixture
def no_compilation_cache():
    """No persistent compilation cache configured during the test (the session's restored afterwards)."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_a_library_call_leaves_jax_config_alone(tmp_path, tiny_run, no_compilation_cache):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)  # a finished run: train() sets up, resumes at the end and reports
    losses = (run_dir / "loss.csv").read_text()
    assert train(get_config("digits-tiny"), run_dir, progress=False, log=lambda *a: None) == run_dir
    assert jax.config.jax_compilation_cache_dir is None
    assert not (run_dir / ".jax_cache").exists()
    assert (run_dir / "loss.csv").read_text() == losses


def test_the_command_line_caches_compiled_programs_in_the_run_directory(tmp_path, no_compilation_cache):
    from train.__main__ import use_compilation_cache

    use_compilation_cache(tmp_path)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / ".jax_cache")
    use_compilation_cache(tmp_path / "elsewhere")  # one already configured is kept
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / ".jax_cache")
