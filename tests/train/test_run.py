import csv
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.runs import Checkpointer, NonFiniteError, UnreadableCheckpointError, load_checkpoint, load_denoiser
from train.configs import get_config
from train.run import train
from train.step import TrainState

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


def test_loss_falls_and_files_are_written(tiny_run):
    losses = [float(r["loss"]) for r in read_csv(tiny_run / "loss.csv")]
    assert len(losses) == 6  # 60 steps, a row every 10
    assert np.mean(losses[-2:]) < 0.8 * losses[0]
    assert (tiny_run / "config.json").exists() and (tiny_run / "analytic_models.npz").exists()
    assert Checkpointer(tiny_run).steps() == [0, 20, 40, 60]


def test_probes_csv_schema_and_values(tiny_run):
    rows = read_csv(tiny_run / "probes.csv")
    assert list(rows[0]) == ["step", "sigma", "reference", "weights", "queries", "fuv_score", "fuv_denoiser",
                             "r2_denoiser", "mse_denoiser"]
    references = {"isotropic", "gaussian", "gmm2", "gmm-class", "delta"}
    assert {r["reference"] for r in rows} == references
    assert {r["weights"] for r in rows} == {"raw", "ema"}
    assert {r["queries"] for r in rows} == {"train", "test"}
    # checkpoints x sigmas x references x (raw and EMA on train queries, EMA only on held-out ones)
    assert len(rows) == 4 * 3 * len(references) * 3
    assert {r["weights"] for r in rows if r["queries"] == "test"} == {"ema"}
    values = np.array([[float(r[c]) for c in ("fuv_score", "fuv_denoiser", "mse_denoiser")] for r in rows])
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    # R^2 and FUV of the denoiser differ only in the centring of the reference: R^2 <= 1 - FUV
    r2, fuv = (np.array([float(r[c]) for r in rows]) for c in ("r2_denoiser", "fuv_denoiser"))
    assert np.all(r2 <= 1 - fuv + 1e-6)
    # training moves the network towards the analytic scores at high noise
    at = {(int(r["step"]), r["reference"], r["weights"], float(r["sigma"])): float(r["fuv_score"]) for r in rows}
    assert at[(60, "gaussian", "raw", 5.0)] < at[(0, "gaussian", "raw", 5.0)]


def test_another_config_in_the_same_directory_is_refused(tiny_run):
    with pytest.raises(ValueError, match="another configuration .*lr"):
        train(get_config("digits-tiny").replace(lr=1e-4), tiny_run, progress=False)


@pytest.mark.slow
def test_sigkill_and_resume_give_the_uninterrupted_result(tmp_path, tiny_run):
    killed = tmp_path / "killed"
    process = subprocess.Popen([*COMMAND, "--out", str(killed)], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "20" / "commit_success.txt").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    assert (killed / ".lock").read_text() == f"{process.pid}\n"  # the trainer holds the run directory
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
    assert (killed / "probes.csv").read_text() == (tiny_run / "probes.csv").read_text()


@pytest.mark.slow
def test_resume_after_a_damaged_checkpoint_falls_back_with_one_warning(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    _, expected = final_params(run_dir)
    # A damaged OCDBT manifest: the restore fails while ~1,000 other reads are in flight, whose
    # completion on Orbax's closed event loop used to print as many "Event loop is closed" tracebacks.
    (run_dir / "checkpoints" / "60" / "default" / "manifest.ocdbt").write_bytes(b"\0" * 16)
    result = subprocess.run([*COMMAND, "--out", str(run_dir)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming digits-tiny from step 40" in result.stdout
    noise = [line for line in result.stderr.splitlines() if "Event loop is closed" in line or "never retrieved" in line]
    assert not noise, f"{len(noise)} lines of asyncio noise: {noise[:3]}"
    lines = result.stderr.splitlines()
    assert len(lines) <= 5, result.stderr[-3000:]  # the warning (2 lines), at most a stray asyncio RuntimeWarning
    assert f"checkpoint at step 60 is unreadable ({run_dir / 'checkpoints' / '60'}: " in lines[0]
    assert (run_dir / "corrupt_checkpoints" / "60").exists()
    step, params = final_params(run_dir)
    assert step == 60
    np.testing.assert_array_equal(params, expected)


@pytest.mark.slow  # restores a copy of the tiny run checkpoint by checkpoint
def test_load_denoiser_skips_damaged_checkpoints_and_names_a_requested_one(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    for path in (run_dir / "checkpoints" / "60" / "default" / "ocdbt.process_0" / "d").iterdir():
        os.truncate(path, path.stat().st_size // 2)  # a copy cut short
    partial = run_dir / "checkpoints" / "40"
    for path in [*partial.glob("**/commit_success.txt"), partial / "default" / "_METADATA"]:
        path.unlink()  # a checkpoint whose writing was cut short
    with pytest.warns(UserWarning) as warned:
        denoiser, step = load_checkpoint(run_dir, weights="raw")
    skipped = [re.match(r"checkpoint at step (\d+) is unreadable \((.*?): ", str(w.message)) for w in warned]
    assert [match.groups() for match in skipped if match] == [
        (str(step), str(run_dir / "checkpoints" / str(step))) for step in (60, 40)]
    assert step == 20  # the step actually read, not the newest one listed
    expected = Checkpointer(tiny_run).restore_params(20, "raw")
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(denoiser.params), expected)
    with pytest.warns(UserWarning):
        same = load_denoiser(run_dir, weights="raw")
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(same.params), expected)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["0", "20", "40", "60"]  # nothing moved
    assert not (run_dir / "corrupt_checkpoints").exists()
    path = re.escape(str(run_dir / "checkpoints" / "60"))
    with pytest.raises(UnreadableCheckpointError, match=rf"checkpoint at step 60 is unreadable \({path}: "):
        load_denoiser(run_dir, step=60)
    for step in (60.0, "60", True):
        with pytest.raises(TypeError, match=f"`step` must be an integer, got {type(step).__name__}"):
            load_denoiser(run_dir, step=step)


@pytest.mark.slow  # a training of its own
def test_a_diverging_run_stops_at_its_first_non_finite_loss(tmp_path):
    run_dir = tmp_path / "run"
    config = get_config("digits-tiny").replace(lr=1e30, steps=20)  # finite, but the first steps overflow
    with pytest.raises(NonFiniteError, match=r"loss became (nan|inf|-inf) in steps 1-10; the run stopped at step 10 "
                                             r"without saving or probing it \(last good checkpoint: step 0 in "):
        train(config, run_dir, progress=False, log=lambda *a: None)
    assert Checkpointer(run_dir).steps() == [0]
    assert not (run_dir / "loss.csv").exists()
    assert {r["step"] for r in read_csv(run_dir / "probes.csv")} == {"0"}
    # Nor is a non-finite state saved, whichever way it comes.
    state = TrainState(step=jnp.asarray(10), params={"w": jnp.array([1.0, jnp.nan])}, ema_params={"w": jnp.ones(2)},
                       opt_state=(), key=jnp.zeros(2, jnp.uint32))
    with pytest.raises(NonFiniteError, match=r"state at step 10 holds NaN or infinite values \(in \.params\['w'\]\)"):
        Checkpointer(run_dir).save(state)
    assert Checkpointer(run_dir).steps() == [0]


@pytest.mark.slow
def test_load_denoiser_recovers_the_probed_network(tiny_run, caplog):
    """The loaded networks (EMA and raw) reproduce the probe values written during training, and sample."""
    from gaussjax.data import load_dataset
    from gaussjax.samplers import heun_sampler
    from gaussjax.schedules import karras_sigmas
    from train import probes

    config = get_config("digits-tiny")
    flat = np.asarray(load_dataset("digits").flat)
    models = probes.fit_analytic_models(config, flat, None, tiny_run)  # cached in the run directory
    with caplog.at_level(logging.WARNING):
        denoisers = {weights: load_denoiser(tiny_run, weights=weights) for weights in ("ema", "raw")}
    assert not [r for r in caplog.records if "could not be restored" in r.getMessage()]
    built = probes.build_probes(config, flat, models, probes.load_test_flat(config))
    rows = probes.probe_rows(built, 60, denoisers)
    written = {(r["weights"], r["queries"], r["reference"], float(r["sigma"])): float(r["fuv_denoiser"])
               for r in read_csv(tiny_run / "probes.csv") if r["step"] == "60"}
    assert len(rows) == len(written)
    for row in rows:
        key = row["weights"], row["queries"], row["reference"], row["sigma"]
        np.testing.assert_allclose(row["fuv_denoiser"], written[key], rtol=1e-3)

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_load_denoiser_prints_nothing(tiny_run):
    """A user's `load_denoiser` call prints no Orbax warning (read-only notice, partial-restore notice)."""
    code = f"from gaussjax.runs import load_denoiser; load_denoiser({str(tiny_run)!r}); " \
           f"load_denoiser({str(tiny_run)!r}, step=20, weights='raw')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    printed = result.stdout + result.stderr
    for notice in ("Given directory is read only", "could not be restored", "WARNING"):
        assert notice not in printed, printed[-2000:]
