import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's id: the same data on every run, different data per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
