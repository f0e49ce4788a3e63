"""A tiny training run shared by all analysis tests of the session (all xdist workers).

The first worker to need it trains `digits-tiny` (about half a minute) under a file lock;
the others wait for it and reuse the directory.
"""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp().parent  # the same for every worker of this session
    run_dir = shared / "analysis-tiny-run"
    with open(shared / "analysis-tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "probes.csv").exists() or "60," not in (run_dir / "probes.csv").read_text():
            command = [sys.executable, "-m", "train", "--config", "digits-tiny", "--no-progress", "--out", str(run_dir)]
            subprocess.run(command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), check=True, capture_output=True)
    return run_dir
