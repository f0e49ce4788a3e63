"""Training as one job of several processes (`python -m train --coordinator ... --num-processes N --process-id I`).

Two CPU processes on localhost (one device each, gloo) train as one process does; the second job on a
run directory is refused by every process; a killed or stopped process ends the job within the
timeout with one error line on the survivor, leaves only complete checkpoints, and the same commands
resume to where an uninterrupted job ends.
"""

import csv
import os
import select
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from multiprocess import check_all_succeeded, run_processes, start_processes, wait_processes
from test_lock import lock_held_by_another_process  # another job's process 0, as `train.lock` holds it

import gaussjax.runs
from gaussjax.checks import InputValueError
from gaussjax.nn import EDMPrecond, SongUNet
from gaussjax.runs import Checkpointer
from train import distributed, failures
from train.__main__ import main
from train.configs import get_config
from train.step import init_state, make_optimizer

TIMEOUT = 10  # --distributed-timeout of the jobs here (seconds)
STEPS = 40  # checkpoints 0, 20, 40 of digits-tiny; loss rows every 10 steps

# One process of a job: `python -m train` with the job's coordinates from tests/multiprocess.py's environment.
TRAIN = """
import os, sys
from train.__main__ import main
sys.exit(main(["--config", "digits-tiny", "--no-progress", "--coordinator", os.environ["GJ_COORDINATOR"],
               "--num-processes", os.environ["GJ_NUM_PROCESSES"], "--process-id", os.environ["GJ_PROCESS_ID"],
               *sys.argv[1:]]))
"""


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def job_args(run_dir) -> tuple[str, ...]:
    return "--out", str(run_dir), "--steps", str(STEPS), "--distributed-timeout", str(TIMEOUT)


def restore_state(run_dir, step):
    """The full training state of `run_dir` at `step`, restored in this process (one process, one device)."""
    config = get_config("digits-tiny")
    precond = EDMPrecond(SongUNet(**config.network.for_images((8, 8, 1)).kwargs(), conv_impl="xla"))
    like = init_state(config, precond, (8, 8, 1), make_optimizer(config))
    return Checkpointer(run_dir, read_only=True).restore(step, like)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree_util.tree_leaves(tree)])


def error_lines(finished) -> list[str]:
    return [line for line in finished.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A finished 2-process digits-tiny job of `STEPS` steps: its run directory and the processes' outputs."""
    run_dir = tmp_path_factory.mktemp("two-processes") / "run"
    finished = run_processes(TRAIN, 2, timeout=900, args=job_args(run_dir))
    check_all_succeeded(finished)
    return run_dir, finished


@pytest.mark.slow
def test_two_processes_train_as_one_process_does(two_process_run, tiny_run):
    run_dir, finished = two_process_run
    # Process 0 alone logs (and writes the files); process 1 prints nothing of the run.
    assert "run directory:" in finished[0].stdout and "run directory:" not in finished[1].stdout
    assert not error_lines(finished[0]) and not error_lines(finished[1])
    # The same global batches: the loss rows of the one-process run (tiny_run: 60 steps, the same first 40).
    two, one = read_csv(run_dir / "loss.csv"), read_csv(tiny_run / "loss.csv")[:4]
    assert [row["step"] for row in two] == [row["step"] for row in one] == ["10", "20", "30", "40"]
    for row, expected in zip(two, one, strict=True):
        np.testing.assert_allclose([float(v) for v in row.values()], [float(v) for v in expected.values()], rtol=1e-4)
    # One probe per checkpoint (rows written once), with the one-process FUVs.
    key = lambda r: (r["step"], r["sigma"], r["reference"], r["weights"], r["queries"])  # noqa: E731
    probes = {key(r): r for r in read_csv(run_dir / "probes.csv")}
    expected = {key(r): r for r in read_csv(tiny_run / "probes.csv") if int(r["step"]) <= STEPS}
    assert len(probes) == len(read_csv(run_dir / "probes.csv")) and probes.keys() == expected.keys()
    for column in ("fuv_score", "fuv_denoiser"):
        np.testing.assert_allclose([float(probes[k][column]) for k in expected],
                                   [float(expected[k][column]) for k in expected], rtol=1e-2)
    # The checkpoint the two processes wrote restores in one process, onto one device.
    state, expected_state = restore_state(run_dir, STEPS), restore_state(tiny_run, STEPS)
    assert int(state.step) == STEPS
    for tree, expected_tree in ((state.params, expected_state.params), (state.ema_params, expected_state.ema_params)):
        difference = np.linalg.norm(flat(tree) - flat(expected_tree)) / np.linalg.norm(flat(expected_tree))
        assert difference < 1e-4  # measured: about 1e-6 after 40 steps
    np.testing.assert_array_equal(np.asarray(state.key), np.asarray(expected_state.key))


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_by_every_process_of_a_job(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with lock_held_by_another_process(run_dir / ".lock") as holder:
        finished = run_processes(TRAIN, 2, timeout=300, args=job_args(run_dir))
    message = (f"error: run directory {run_dir} is in use by another training process (pid {holder.pid}); "
               "wait for it to end or choose another --out")
    for process in finished:
        assert process.returncode == 2, process.stderr[-3000:]
        assert error_lines(process) == [message]
    assert [path.name for path in run_dir.iterdir()] == [".lock"]  # refused before anything was written


def wait_for_checkpoint(run_dir, step: int, processes, timeout: float = 600) -> None:
    """Return once checkpoint `step` is complete (Orbax renames its directory when every process has written)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / str(step)).is_dir():
        assert all(p.poll() is None for p in processes), "a process ended before the checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint {step} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_process_ends_the_job_and_the_same_commands_resume_it(tmp_path, two_process_run):
    run_dir = tmp_path / "run"
    processes = start_processes(TRAIN, 2, args=job_args(run_dir))
    try:
        wait_for_checkpoint(run_dir, 20, processes)
    except BaseException:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    processes[1].send_signal(signal.SIGKILL)
    finished = wait_processes(processes, timeout=TIMEOUT + 60)
    survivor = finished[0]
    assert survivor.returncode == failures.LOST_PROCESS_STATUS, survivor.stderr[-3000:]
    assert survivor.seconds < TIMEOUT + 5  # seconds after the kill (wait_processes starts right after it)
    assert len(error_lines(survivor)) == 1 and "Traceback" not in survivor.stderr, survivor.stderr[-3000:]
    assert "another process of the job died or stopped responding; rerun the same command" in survivor.stderr
    # Only complete checkpoints: every step listed restores (an unfinished save is a temporary directory).
    steps = Checkpointer(run_dir, read_only=True).steps()
    assert steps and steps[0] == 0 and steps[-1] < STEPS
    for step in steps:
        assert int(restore_state(run_dir, step).step) == step

    resumed = run_processes(TRAIN, 2, timeout=900, args=job_args(run_dir))
    check_all_succeeded(resumed)
    assert f"resuming digits-tiny from step {steps[-1]}" in resumed[0].stdout
    expected_dir = two_process_run[0]
    assert (run_dir / "loss.csv").read_text() == (expected_dir / "loss.csv").read_text()
    assert (run_dir / "probes.csv").read_text() == (expected_dir / "probes.csv").read_text()
    np.testing.assert_array_equal(flat(restore_state(run_dir, STEPS).params),
                                  flat(restore_state(expected_dir, STEPS).params))


@pytest.mark.slow
def test_a_stopped_process_ends_the_job_within_the_timeout(tmp_path):
    """A process that stops responding (here: SIGSTOP of process 0, which also runs the coordinator)."""
    run_dir = tmp_path / "run"
    processes = start_processes(TRAIN, 2, args=job_args(run_dir))
    try:
        wait_for_checkpoint(run_dir, 20, processes)
        processes[0].send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        while processes[1].poll() is None and time.monotonic() - stopped_at < 3 * TIMEOUT:
            time.sleep(0.05)
        seconds = time.monotonic() - stopped_at
    finally:
        os.killpg(processes[0].pid, signal.SIGKILL)  # the stopped process
        finished = wait_processes(processes, timeout=60)
    survivor = finished[1]
    assert survivor.returncode != 0 and seconds < 2 * TIMEOUT, (seconds, survivor.stderr[-3000:])
    assert len(error_lines(survivor)) == 1, survivor.stderr[-3000:]
    assert error_lines(survivor)[0].startswith("error: process 1 of 2: ")
    assert "rerun the same command on every process" in error_lines(survivor)[0]
    assert "Check failure stack trace" not in survivor.stderr


# JAX's distributed runtime ending a process: its C++ log as written on standard error (jax 0.10.2, a peer stopped).
FATAL_REPORT = """\
E1204 14:32:33.732813   12174 coordination_service.cc:1549] [1549] Use error polling to propagate the following \
error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed. [type.googleapis.com/tensorflow.CoordinationServiceError='']
E1204 14:32:33.737396   12185 coordination_service_agent.cc:289] Polled an error from coordination service.
F1204 14:32:33.737579   12185 client.h:80] Terminating process because the JAX distributed service detected fatal \
errors. This most likely indicates that another task died. absl::Status: UNAVAILABLE: The following tasks are \
unhealthy (stopped sending heartbeats):
1
The tasks have crashed.

RPC: /xla.coordination.CoordinationService/PollForError [type.googleapis.com/tensorflow.CoordinationServiceError='']
*** Check failure stack trace: ***
    @     0x7f1d34640634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
    @     0x7f1d3baa71f5  (unknown)
"""


def watch(text: str) -> str:
    """What the watcher of `train.failures` passes on of `text` (then end of input)."""
    result = subprocess.run([sys.executable, "-c", failures.WATCHER, "process 0 of 2", "10"], input=text.encode(),
                            capture_output=True, timeout=60, check=True)
    return result.stdout.decode()


def test_the_watcher_replaces_the_runtime_report_with_one_line_and_passes_the_rest():
    assert watch("step 10\nW1204 other.cc:1] a warning\nno newline") == "step 10\nW1204 other.cc:1] a warning\n" \
                                                                         "no newline"
    lines = watch("loss 0.5\n" + FATAL_REPORT).splitlines()
    assert lines[0] == "loss 0.5" and len(lines) == 2
    assert lines[1] == (
        "error: process 0 of 2: JAX's distributed runtime ended this process (UNAVAILABLE: The following tasks are "
        "unhealthy (stopped sending heartbeats): 1 The tasks have crashed. RPC: "
        "/xla.coordination.CoordinationService/PollForError): another process of the job died, sent no heartbeat "
        "for 10 s (--distributed-timeout) or never joined; rerun the same command on every process to resume from "
        "the last complete checkpoint")
    held = FATAL_REPORT.split("F1204")[0]  # the service's log lines without the fatal report: passed on unchanged
    assert watch(held) == held


def test_the_watcher_passes_a_progress_bar_update_at_once():
    watcher = subprocess.Popen([sys.executable, "-c", failures.WATCHER, "process 0 of 2", "10"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    try:
        watcher.stdin.write(b"\r 50%|#####     | 20/40")
        watcher.stdin.flush()
        assert select.select([watcher.stdout], [], [], 30)[0], "nothing passed on within 30 s"
        assert os.read(watcher.stdout.fileno(), 1000) == b"\r 50%|#####     | 20/40"
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=30)
        watcher.stdout.close()


@pytest.mark.parametrize("args, message", [
    (["--coordinator", "127.0.0.1:1234"], "go together (missing: --num-processes, --process-id)"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "`--coordinator` must be HOST:PORT (a port 1-65535), got 'localhost'"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "`--process-id` must be in 0 ... 1"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "`--num-processes` must be >= 1"),
    (["--distributed", "--distributed-timeout", "0"], "`--distributed-timeout` must be >= 1 second"),
])
def test_job_options_are_checked_before_anything_starts(args, message, capsys):
    assert main(["--config", "digits-tiny", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_a_single_process_joins_no_job_and_agrees_with_itself():
    assert not distributed.join()  # no options: nothing called
    distributed.agree(None)
    error = InputValueError("refused")
    with pytest.raises(InputValueError, match="refused"):
        distributed.agree(error)
    assert gaussjax.runs.agree(error, (ValueError,)) is error and gaussjax.runs.agree(None, (ValueError,)) is None
    with pytest.raises(TypeError, match=r"`error` must be an instance of one of `kinds`"):
        gaussjax.runs.agree(KeyError("k"), (ValueError, OSError))


def test_lost_processes_are_told_from_other_errors():
    gloo = ValueError("UNKNOWN: Gloo all-reduce failed: [pair.cc:538] Read error [127.0.0.1]:7044: Connection reset "
                      "by peer")
    assert failures.is_lost_process(gloo)
    assert failures.is_lost_process(jax.errors.JaxRuntimeError("DEADLINE_EXCEEDED: Barrier timed out"))
    assert not failures.is_lost_process(ValueError("`lr` must be > 0"))
    assert not failures.is_lost_process(KeyError("Gloo"))
