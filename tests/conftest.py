"""Shared test setup.

Every test runs with `jax_numpy_rank_promotion="raise"` (implicit broadcasting of
arrays of different rank is a bug here). Tests that need float64 take the `x64`
fixture, which enables it for that test only; tests that need a trained network take
`tiny_run`, one small training run shared by the whole session.

Tiers: `pytest -n 2` runs the fast tier (everything not marked `slow`, see `addopts` in
pyproject.toml); `pytest -n 2 -m slow` runs the rest. Mark `slow` what trains a network,
builds or runs a whole document or report, or takes more than a few seconds on its own.
"""

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from train.xla_flags import prefer_eigen_kernels

# XLA flags for the whole session and the subprocesses tests start, set before JAX starts:
# LLVM -O0 compiles these small programs ~2.5x faster (compilation dominates the suite), and
# the same XLA:CPU kernels as `python -m train`, so in-process and CLI runs agree bitwise.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
prefer_eigen_kernels()

import jax  # noqa: E402
import pytest  # noqa: E402

# One persistent compilation cache for the whole session, shared with the subprocesses tests
# start (training runs compile the same programs again and again).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gaussjax-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--touched-modules", action="store_true",
                     help="fail if a module of gaussjax/, train/ or analysis/ ran no code (tests/touched_modules.py)")


def pytest_configure(config):
    if config.getoption("--touched-modules"):
        import touched_modules

        config.pluginmanager.register(touched_modules, "touched_modules")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The directory of a finished `python -m train --config digits-tiny` run (60 steps, checkpoints 0, 20, 40, 60).

    One run for the whole session, shared by every xdist worker: the first to need it trains it under a
    file lock, the others wait for it. Tests read it; a test that changes a run
    copies it first.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's directory
    run_dir = shared / "tiny-run"
    with open(shared / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "probes.csv").exists() or "60," not in (run_dir / "probes.csv").read_text():
            command = [sys.executable, "-m", "train", "--config", "digits-tiny", "--no-progress", "--out", str(run_dir)]
            env = dict(os.environ, JAX_PLATFORMS="cpu")
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return run_dir


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def x64():
    """Run the test with `jax_enable_x64` on (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key(request):
    """A PRNG key that is the same on every run of a given test, and differs between tests."""
    import zlib

    return jax.random.key(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A file that no refused pickle may create (tests of the restricted readers); fails if it exists afterwards."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists()
