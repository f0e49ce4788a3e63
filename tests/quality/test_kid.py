"""`kernel_inception_distance` against the unbiased MMD^2 formula evaluated in float64 NumPy."""

import jax
import numpy as np
import pytest

from gaussjax.quality._kid import KID, _subset_indices, kernel_inception_distance


def mmd2_unbiased(x, y):
    """Binkowski et al. (2018), cubic kernel, written from the formula in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3), ((y @ y.T / d + 1) ** 3), ((x @ y.T / d + 1) ** 3)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return within - 2 * kxy.sum() / m**2


def features(seed, n=150, d=32, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + 0.5 + shift).astype(np.float32)


def mean_kernel(x):
    x = np.asarray(x, np.float64)
    return np.mean((x @ x.T / x.shape[1] + 1) ** 3)


@pytest.mark.parametrize("shift", [0.0, 0.2])
def test_whole_set_matches_formula_float32(shift):
    """One subset of the full size is a permutation of each set; MMD^2 does not depend on the order."""
    a, b = features(0), features(1, shift=shift)
    kid = kernel_inception_distance(a, b, key=jax.random.key(0), num_subsets=1, subset_size=10_000)
    assert isinstance(kid, KID) and isinstance(kid.mean, float) and kid.std == 0.0
    reference = mmd2_unbiased(a, b)
    # float32: ~1e-8 of the kernel's scale where the terms cancel (shift 0), ~1e-7 relative otherwise
    assert abs(kid.mean - reference) <= 1e-8 * mean_kernel(a) + 1e-6 * abs(reference)


def test_subsets_average_of_formula(x64):
    """Float64, several subsets of size m < N: mean/std of the formula on the documented subsets."""
    a, b = features(4, n=60).astype(np.float64), features(5, n=50, shift=0.3).astype(np.float64)
    key = jax.random.key(7)
    result = kernel_inception_distance(a, b, key=key, num_subsets=3, subset_size=40)
    # the subsets: 40 distinct rows of each set per subset, as documented (keys split as the module does)
    # the module's own choice of subsets (the values are then computed independently, from the formula)
    indices = _subset_indices(key, sizes=(60, 50), num_subsets=3, subset_size=40)
    values = []
    for index_a, index_b in zip(*map(np.asarray, indices), strict=True):
        assert len(set(index_a)) == len(set(index_b)) == 40  # without replacement
        assert 0 <= index_a.min() and index_a.max() < 60 and 0 <= index_b.min() and index_b.max() < 50
        values.append(mmd2_unbiased(a[index_a], b[index_b]))
    assert result.mean == pytest.approx(np.mean(values), rel=1e-11)
    assert result.std == pytest.approx(np.std(values), rel=1e-9)
    assert result.std > 0


def kid(a, b, seed=2):
    return kernel_inception_distance(a, b, key=jax.random.key(seed), num_subsets=10, subset_size=100)  # one shape


def test_statistical_behaviour():
    """Same distribution: ~0 (either sign); shifted: clearly positive, growing with the shift."""
    same, near, far = (kid(features(6, n=200), features(7, n=200, shift=shift)) for shift in (0.0, 0.3, 0.6))
    assert near.mean > 5 * near.std and far.mean > 3 * near.mean
    assert abs(same.mean) < 0.05 * near.mean and same.std < near.std


def test_key_reproducible_and_matters():
    a, b = features(9, n=200), features(10, n=200, shift=0.1)
    assert kid(a, b, 3) == kid(a, b, 3)
    assert kid(a, b, 3) != kid(a, b, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(features_b=np.ones((5, 3))), ValueError, "same dimension"),
        (dict(features_a=np.ones(5)), ValueError, "`features_a`"),
        (dict(features_b=np.full((5, 4), np.nan)), ValueError, "`features_b`.*NaN"),
        (dict(key=None), TypeError, "`key`"),
        (dict(num_subsets=0), ValueError, "`num_subsets`"),
        (dict(subset_size=1.5), TypeError, "`subset_size`"),
        (dict(subset_size=1), ValueError, "m = min"),
        (dict(features_b=np.ones((1, 4))), ValueError, "m = min"),
    ],
)
def test_errors(kwargs, error, match):
    arguments = dict(features_a=np.ones((5, 4)), features_b=np.ones((6, 4)), key=jax.random.key(0))
    with pytest.raises(error, match=match):
        kernel_inception_distance(**{**arguments, **kwargs})


@pytest.mark.parametrize("magnitude", [1e6, 1e13, 1e18])
def test_huge_features_do_not_overflow(magnitude):
    """Features whose cubic kernel overflows float32 give the float64 formula's value, not NaN."""
    a, b = features(2, n=40, d=8) * magnitude, features(3, n=40, d=8, shift=0.3) * magnitude
    kid = kernel_inception_distance(a, b, key=jax.random.key(0), num_subsets=1, subset_size=40)
    reference = mmd2_unbiased(a, b)
    assert np.isfinite(kid.mean) and reference != 0
    assert kid.mean == pytest.approx(reference, rel=1e-4)


def test_overflowing_float64_is_refused(x64):
    a = features(4, n=10, d=4).astype(np.float64) * 1e60
    with pytest.raises(ValueError, match="overflows float64.*`features_a`"):
        kernel_inception_distance(a, a + 1e59, key=jax.random.key(0), num_subsets=1)
