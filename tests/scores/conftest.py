import numpy as np
import pytest


def random_eigenbasis(rng, dim, rank):
    """An exactly orthonormal (D, r) basis and positive eigenvalues (descending)."""
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :rank]
    return np.sort(rng.uniform(0.1, 3.0, rank))[::-1], basis


@pytest.fixture
def rng(request):
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
