"""Shared test setup.

Every test runs with `jax_numpy_rank_promotion="raise"` (implicit broadcasting of
arrays of different rank is a bug here). Tests that need float64 take the `x64`
fixture, which enables it for that test only.
"""

import os
import tempfile

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
