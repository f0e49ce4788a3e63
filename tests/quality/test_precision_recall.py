"""`precision_recall` against brute-force k-NN radii (full distance matrix, np.sort) in NumPy."""

import numpy as np
import pytest

from gaussjax.quality._precision_recall import PrecisionRecall, precision_recall


def brute_force(real, fake, k):
    """Kynkaanniemi et al. (2019) from the definition, in float64 with explicit differences."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def distances(p, q):
        return np.sqrt(np.sum(np.square(p[:, None, :] - q[None, :, :]), axis=-1))

    def radii(points):  # row i sorted: [0 (itself), nearest other, ...]; column k = k-th nearest other
        return np.sort(distances(points, points), axis=1)[:, k]

    fake_to_real = distances(fake, real)
    precision = np.mean(np.any(fake_to_real <= radii(real)[None, :], axis=1))
    recall = np.mean(np.any(fake_to_real.T <= radii(fake)[None, :], axis=1))
    return precision, recall


def test_matches_brute_force_float32():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 16)).astype(np.float32) + 5.0  # an offset, as nonnegative network features have
    fake = (rng.normal(size=(200, 16)) * 1.3 + 5.2).astype(np.float32)
    result = precision_recall(real, fake, k=3)
    assert isinstance(result, PrecisionRecall) and isinstance(result.precision, float)
    expected = brute_force(real, fake, 3)
    # float32 distances could flip a point lying within rounding of a ball's surface (none does here)
    np.testing.assert_allclose(result, expected, atol=1.5 / 200)
    assert 0 < result.precision < 1 and 0 < result.recall <= 1


@pytest.mark.parametrize("k", [1, 4])
def test_matches_brute_force_exactly_with_ties(k):
    """Small-integer features: many equal distances and duplicate points; distances are then exact."""
    rng = np.random.default_rng(10 + k)
    real = rng.integers(0, 3, size=(60, 4))  # 81 possible points: duplicates and ties everywhere
    fake = rng.integers(0, 3, size=(60, 4)) + (rng.random((60, 4)) < 0.3)
    assert precision_recall(real, fake, k=k) == pytest.approx(brute_force(real, fake, k), abs=0)


def test_matches_brute_force_x64_many_blocks_top_k(x64, monkeypatch):
    """Float64, with blocks of a few rows (and padding), and the top_k route for k > _SMALL_K.

    (Both constants are read when `_counts` is traced; this test's shapes are its own.)
    """
    import gaussjax.quality._precision_recall as module

    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 7 * 40)  # 7 query rows per block, 40 = 5 * 7 + 5 rows
    monkeypatch.setattr(module, "_SMALL_K", 2)  # k = 4 takes lax.top_k (the other tests: the argmin passes)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 8)), rng.normal(size=(33, 8)) * 0.8 + 0.3
    assert precision_recall(real, fake, k=4) == pytest.approx(brute_force(real, fake, 4), abs=0)


def test_largest_k_and_identical_sets():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(12, 3)), rng.normal(size=(10, 3))
    assert precision_recall(real, fake, k=9) == pytest.approx(brute_force(real, fake, 9), abs=0)
    assert precision_recall(real, real[:10], k=9) == (1.0, pytest.approx(brute_force(real, real[:10], 9)[1], abs=0))
    assert precision_recall(real, fake + 100.0, k=9) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(k=0), ValueError, r"`k` must be in .*\[1, 4\]"),
        (dict(k=5), ValueError, r"`k` must be in .*\[1, 4\]"),
        (dict(k=2.0), TypeError, "`k`"),
        (dict(k=True), TypeError, "`k`"),
        (dict(fake=np.ones((5, 2))), ValueError, "same dimension"),
        (dict(real=np.ones(6)), ValueError, "`real`"),
        (dict(fake=np.full((5, 3), np.inf)), ValueError, "`fake`.*infinite"),
        (dict(real=np.ones((6, 3), complex)), TypeError, "`real`"),
    ],
)
def test_errors(kwargs, error, match):
    arguments = dict(real=np.zeros((6, 3)), fake=np.ones((5, 3)), k=3)
    with pytest.raises(error, match=match):
        precision_recall(**{**arguments, **kwargs})
