"""`FeatureStats` against np.mean / np.cov, and `frechet_distance` against pytorch-fid's sqrtm formula."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gaussjax.quality._stats import FeatureStats, feature_stats, frechet_distance


def pytorch_fid(mu1, sigma1, mu2, sigma2):
    """pytorch-fid's `calculate_frechet_distance` (without its eps offset): sqrtm of the product."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular products
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    covmean = np.real(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def exact_from_samples(Xa, Xb):
    """FD from the samples: tr((A B)^1/2) = nuclear norm of Xa_c Xb_c^T / sqrt((Na - 1)(Nb - 1)).

    The nonzero eigenvalues of A B are the squared singular values of that small
    matrix, so this is accurate even when A and B are rank-deficient (unlike sqrtm).
    """
    ca, cb = Xa - Xa.mean(axis=0), Xb - Xb.mean(axis=0)
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((len(Xa) - 1) * (len(Xb) - 1))
    diff = Xa.mean(axis=0) - Xb.mean(axis=0)
    return diff @ diff + np.trace(np.cov(Xa, rowvar=False)) + np.trace(np.cov(Xb, rowvar=False)) - 2 * trace_sqrt


def samples(seed, n, d=64, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return offset + scale * rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)


# ---------------------------------------------------------------- FeatureStats


def test_from_features_matches_numpy():
    X = samples(0, 300, d=16, offset=1e4)  # a large common offset must not cancel the covariance
    stats = FeatureStats.from_features(X.astype(np.float32))
    X32 = X.astype(np.float32).astype(np.float64)
    assert stats.count == 300 and stats.dim == 16
    assert stats.mean.dtype == stats.cov.dtype == np.float64
    np.testing.assert_allclose(stats.mean, X32.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(X32, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(stats.cov, stats.cov.T)


def test_merge_update_and_stream_equal_the_concatenation(x64):
    X = samples(1, 257, d=8)
    mean, cov = X.mean(axis=0), np.cov(X, rowvar=False)
    parts = [X[:2], X[2:100], X[100:101], X[101:]]
    merged = FeatureStats.from_features(parts[0]).merge(FeatureStats.from_features(parts[1]))
    merged = merged.update(parts[2]).merge(FeatureStats.from_features(parts[3]))
    updated = FeatureStats.from_features(parts[0])
    for part in parts[1:]:
        updated = updated.update(part)
    double = jax.jit(lambda batch: batch * 2.0)  # a jitted "network", float64 under x64
    streamed = feature_stats(double, [jnp.asarray(p / 2) for p in parts] + [np.zeros((0, 8))])
    for stats in (merged, updated, streamed):
        assert stats.count == 257
        np.testing.assert_allclose(stats.mean, mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(stats.cov, cov, rtol=0, atol=1e-12)


def test_feature_stats_progress_bar(capsys):
    stats = feature_stats(lambda b: b, (np.eye(3) for _ in range(2)), progress=True)
    assert stats.count == 6
    assert "feature stats" in capsys.readouterr().err


def test_immutable():
    stats = FeatureStats.from_features(np.arange(6.0).reshape(3, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.count = 4
    with pytest.raises(ValueError):
        stats.mean[0] = 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: FeatureStats.from_features(np.zeros((0, 3))), ValueError, "`features`"),
        (lambda: FeatureStats.from_features(np.array([[1e200, 0], [-1e200, 0]])), ValueError,
         "`features`.*overflows float64"),
        (lambda: FeatureStats.from_features(np.ones(3)), ValueError, "`features`.*shape"),
        (lambda: FeatureStats.from_features(np.array([[1.0, np.nan], [0, 1]])), ValueError, "`features`.*NaN"),
        (lambda: FeatureStats.from_features(np.ones((3, 2), complex)), TypeError, "`features`.*complex"),
        (lambda: FeatureStats.from_features(np.eye(3)).update(np.ones((2, 4))), ValueError, "`batch`.*D = 4"),
        (lambda: FeatureStats.from_features(np.eye(3)).update(np.full((1, 3), np.inf)), ValueError, "`batch`"),
        (lambda: FeatureStats.from_features(np.eye(3)).merge(FeatureStats.from_features(np.eye(2))), ValueError,
         "`other`.*D = 2"),
        (lambda: FeatureStats.from_features(np.eye(3)).merge((np.zeros(3), np.eye(3))), TypeError, "`other`"),
        (lambda: FeatureStats(np.zeros(2), np.eye(2), 0), ValueError, "`count`"),
        (lambda: FeatureStats(np.zeros(2), np.eye(2), 1), ValueError, "`cov` must be zero"),
        (lambda: FeatureStats(np.zeros(2), np.eye(2), 2.0), TypeError, "`count`"),
        (lambda: FeatureStats(np.zeros(2), np.eye(3), 5), ValueError, "`cov`.*shape"),
        (lambda: FeatureStats(np.zeros(2), np.array([[1.0, 1], [0, 1]]), 5), ValueError, "`cov`.*symmetric"),
        (lambda: feature_stats(lambda b: b, np.ones((4, 2))), TypeError, "`batches`"),
        (lambda: feature_stats(None, [np.ones((4, 2))]), TypeError, "`feature_fn`"),
        (lambda: feature_stats(lambda b: b, [np.zeros((0, 2))]), ValueError, "`batches` holds no feature"),
        (lambda: frechet_distance(feature_stats(lambda b: b, [np.ones((1, 2))]), FeatureStats.from_features(np.eye(2))),
         ValueError, "`a` holds N = 1.*N >= 2"),
        (lambda: frechet_distance((np.zeros(2), np.array([[1.0, 2], [2, 1]])), (np.zeros(2), np.eye(2))), ValueError,
         r"`a\[1\]` must be positive semi-definite.*-1"),
        (lambda: frechet_distance(FeatureStats.from_features(np.eye(2)), (np.zeros(2), -np.eye(2))), ValueError,
         r"`b\[1\]` must be positive semi-definite"),
        (lambda: feature_stats(lambda b: b, [np.eye(2), np.eye(3)]), ValueError, r"batch 1\).*D = 3"),
        (lambda: feature_stats(lambda b: b, [np.eye(2), np.ones(2)]), ValueError, r"batch 1\).*shape"),
        (lambda: frechet_distance(FeatureStats.from_features(np.eye(3)), np.eye(3)), TypeError, "`b`"),
        (lambda: frechet_distance(FeatureStats.from_features(np.eye(3)), FeatureStats.from_features(np.eye(2))),
         ValueError, "same dimension"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------- frechet_distance


def test_frechet_distance_matches_sqrtm_full_rank():
    Xa, Xb = samples(2, 100), samples(3, 130, scale=1.3, offset=0.2)
    a, b = FeatureStats.from_features(Xa), FeatureStats.from_features(Xb)
    value = frechet_distance(a, b)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, pytorch_fid(a.mean, a.cov, b.mean, b.cov), rtol=1e-10)
    np.testing.assert_allclose(value, exact_from_samples(Xa, Xb), rtol=1e-10)
    assert frechet_distance(b, a) == pytest.approx(value, rel=1e-12)
    assert frechet_distance((a.mean, a.cov), (b.mean, b.cov)) == value


@pytest.mark.parametrize(("na", "nb"), [(30, 40), (20, 300), (300, 20)])
def test_frechet_distance_rank_deficient(na, nb):
    """N < D for one or both sets: the covariances are singular (rank N - 1)."""
    Xa, Xb = samples(4, na), samples(5, nb, scale=0.8, offset=0.1)
    a, b = FeatureStats.from_features(Xa), FeatureStats.from_features(Xb)
    value = frechet_distance(a, b)
    np.testing.assert_allclose(value, exact_from_samples(Xa, Xb), rtol=1e-12)
    # sqrtm of the singular product is itself only ~1e-8 accurate here
    np.testing.assert_allclose(value, pytorch_fid(a.mean, a.cov, b.mean, b.cov), rtol=5e-8)
    assert frechet_distance(b, a) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("n", [40, 200])
def test_frechet_distance_to_itself_is_zero(n):
    a = FeatureStats.from_features(samples(6, n))
    assert abs(frechet_distance(a, a)) <= 1e-10 * np.trace(a.cov)


def test_frechet_distance_one_dimensional_closed_form():
    m1, s1, m2, s2 = 0.3, 1.7, -1.1, 0.4
    a = FeatureStats(np.array([m1]), np.array([[s1**2]]), 10)
    b = FeatureStats(np.array([m2]), np.array([[s2**2]]), 10)
    assert frechet_distance(a, b) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-14)
    zero = FeatureStats(np.array([m2]), np.zeros((1, 1)), 10)  # a point mass: rank 0
    assert frechet_distance(a, zero) == pytest.approx((m1 - m2) ** 2 + s1**2, rel=1e-14)


# ------------------------------------------ ill-conditioned and streamed statistics (issue 21)


def low_rank_plus_noise(seed, n, d, rank, noise):
    """Features with a rank-`rank` structure over two decades of scale plus isotropic noise.

    Their covariance has a bulk of `d - rank` eigenvalues at the noise floor `noise**2`, far
    below the largest (condition numbers of 1e6-1e8), as real Inception statistics have.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, rank)))[0]
    return (rng.normal(size=(n, rank)) * np.logspace(0, 2, rank)) @ basis.T + noise * rng.normal(size=(n, d))


def mpmath_frechet_distance(mean_a, A, mean_b, B, digits=40):
    """FD at `digits` significant digits (mpmath): tr((A B)^1/2) as the eigenvalues of A^1/2 B A^1/2.

    A different method from the library's (symmetric square root and symmetric eigenvalues,
    in extended precision, against Cholesky factors and a float64 SVD).
    """
    mp = pytest.importorskip("mpmath")
    with mp.workdps(digits):
        Am, Bm = mp.matrix(A.tolist()), mp.matrix(B.tolist())
        values, vectors = mp.eigsy(Am)
        root = vectors * mp.diag([mp.sqrt(max(v, 0)) for v in values]) * vectors.T
        inner = mp.eigsy(root * Bm * root, eigvals_only=True)
        trace_sqrt = mp.fsum(mp.sqrt(max(v, 0)) for v in inner)
        diff = [mp.mpf(float(u)) - mp.mpf(float(v)) for u, v in zip(mean_a, mean_b, strict=True)]
        traces = mp.fsum(Am[i, i] + Bm[i, i] for i in range(len(diff)))
        return float(mp.fsum(x * x for x in diff) + traces - 2 * trace_sqrt)


def spd_with_condition(rng, d, condition):
    """A symmetric positive definite `(d, d)` matrix with eigenvalues log-spaced from 1 to 1/condition."""
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    matrix = (basis * np.logspace(0, -np.log10(condition), d)) @ basis.T
    return 0.5 * (matrix + matrix.T)


@pytest.mark.parametrize("condition", [1.0, 1e4, 1e8, 1e12])
def test_frechet_distance_against_mpmath(condition):
    rng = np.random.default_rng(int(np.log10(condition)))
    d = 10
    A, B = spd_with_condition(rng, d, condition), 2.5 * spd_with_condition(rng, d, condition)
    mean_a, mean_b = 1e-3 * rng.normal(size=d), 1e-3 * rng.normal(size=d)
    reference = mpmath_frechet_distance(mean_a, A, mean_b, B)
    assert frechet_distance((mean_a, A), (mean_b, B)) == pytest.approx(reference, rel=1e-13, abs=1e-14 * np.trace(A))
    assert abs(frechet_distance((mean_a, A), (mean_a, A))) <= 1e-13 * np.trace(A)


def test_frechet_distance_keeps_the_noise_floor():
    """The bulk of small eigenvalues counts in full (it was dropped below sqrt(D eps) of the largest)."""
    Xa = low_rank_plus_noise(7, 600, 256, 16, 0.05)
    Xb = 1.1 * low_rank_plus_noise(8, 600, 256, 16, 0.05)
    a, b = FeatureStats.from_features(Xa), FeatureStats.from_features(Xb)
    assert np.linalg.cond(a.cov) > 1e5
    value = frechet_distance(a, b)
    np.testing.assert_allclose(value, exact_from_samples(Xa, Xb), rtol=1e-10)
    assert abs(frechet_distance(a, a)) <= 1e-10 * np.trace(a.cov)


@pytest.mark.slow
def test_frechet_distance_inception_sized_ill_conditioned():
    """Inception's 2,048-d, 2,200 samples each, condition numbers ~1e8, against the samples' SVD."""
    Xa = low_rank_plus_noise(9, 2200, 2048, 64, 0.05)
    Xb = low_rank_plus_noise(10, 2200, 2048, 64, 0.06) + 0.01
    a, b = FeatureStats.from_features(Xa), FeatureStats.from_features(Xb)
    assert np.linalg.cond(a.cov) > 1e7
    np.testing.assert_allclose(frechet_distance(a, b), exact_from_samples(Xa, Xb), rtol=1e-9)
    assert abs(frechet_distance(a, a)) <= 1e-10 * np.trace(a.cov)


def test_chunks_of_any_size_merge_in_any_order(x64):
    X = samples(11, 800, d=12, offset=3.0)
    sizes = [37, 163, 1, 354, 245]
    chunks = np.split(X, np.cumsum(sizes)[:-1])
    parts = [FeatureStats.from_features(chunk) for chunk in chunks]
    assert parts[2].count == 1 and not parts[2].cov.any()
    for order in ([0, 1, 2, 3, 4], [2, 4, 0, 3, 1], [4, 3, 2, 1, 0]):
        merged = parts[order[0]]
        for index in order[1:]:
            merged = merged.merge(parts[index])
        updated = FeatureStats.from_features(chunks[order[0]])
        for index in order[1:]:
            updated = updated.update(chunks[index])
        for stats in (merged, updated):
            assert stats.count == 800
            np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=0, atol=1e-12)
            np.testing.assert_allclose(stats.cov, np.cov(X, rowvar=False), rtol=0, atol=1e-12)
    streamed = feature_stats(lambda batch: batch, chunks)
    np.testing.assert_allclose(streamed.cov, np.cov(X, rowvar=False), rtol=0, atol=1e-12)
    one = FeatureStats.from_features(X[:1]).update(X[1:2])  # two single rows make a covariance
    np.testing.assert_allclose(one.cov, np.cov(X[:2], rowvar=False), rtol=1e-14)
