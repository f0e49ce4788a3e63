"""Shared test setup.

Every test runs with `jax_numpy_rank_promotion="raise"` (implicit broadcasting of
arrays of different rank is a bug here). Tests that need float64 take the `x64`
fixture, which enables it for that test only.
"""

import jax
import pytest


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
