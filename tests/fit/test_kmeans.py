"""`kmeans` against known partitions and NumPy nearest-center assignments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.data import load_dataset
from gaussjax.fit import _kmeans, kmeans


def blobs(seed, n_per=60, k=5, d=10, spread=20.0):
    """`k` unit Gaussian blobs whose centers are ~spread * sqrt(2d) apart; returns (X, true labels)."""
    rng = np.random.default_rng(seed)
    centers = spread * rng.normal(size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    X = centers[truth] + rng.normal(size=(k * n_per, d))
    order = rng.permutation(len(X))
    return X[order].astype(np.float32), truth[order]


def nearest_numpy(X, centers):
    """Index of the nearest center (float64, direct differences) and the gap to the second nearest."""
    d2 = np.sum((np.asarray(X, np.float64)[:, None, :] - np.asarray(centers, np.float64)[None]) ** 2, axis=-1)
    ordered = np.sort(d2, axis=1)
    gap = ordered[:, 1] - ordered[:, 0] if d2.shape[1] > 1 else np.full(len(X), np.inf)
    return np.argmin(d2, axis=1), gap


def same_partition(a, b):
    """Whether label vectors `a` and `b` define the same partition (equal up to relabelling)."""
    pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist(), strict=True))
    return len(pairs) == len(set(np.asarray(a).tolist())) == len(set(np.asarray(b).tolist()))


@pytest.mark.parametrize("batch_size", [None, 64])
def test_recovers_separated_blobs(key, batch_size):
    X, truth = blobs(0)
    centers, labels = kmeans(X, 5, key=key, batch_size=batch_size)
    assert centers.shape == (5, 10) and labels.shape == (300,) and labels.dtype == jnp.int32
    assert same_partition(labels, truth)
    for k in range(5):  # each center sits at its blob's mean (exactly, for converged Lloyd)
        tolerance = 1e-4 if batch_size is None else 0.5
        np.testing.assert_allclose(centers[k], X[np.asarray(labels) == k].mean(axis=0), atol=tolerance)


def test_deterministic_given_key(key):
    X, _ = blobs(1)
    first = kmeans(X, 5, key=key)
    second = kmeans(X, 5, key=key)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    legacy = kmeans(X, 5, key=jax.random.key_data(key))  # raw uint32 keys are accepted too
    np.testing.assert_array_equal(legacy[0], first[0])


def test_labels_are_nearest_returned_centers_and_lloyd_fixed_point():
    X = load_dataset("digits").flat
    centers, labels = kmeans(X, 8, key=jax.random.key(0), tol=0.0)
    reference, gap = nearest_numpy(X, centers)
    clear = gap > 1e-3  # float32 matmul-form distances may only disagree on near ties
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(np.asarray(labels)[clear], reference[clear])
    # tol = 0 runs Lloyd to its fixed point: every center is the mean of its points
    counts = np.bincount(labels, minlength=8)
    assert np.all(counts > 0)
    for k in range(8):
        np.testing.assert_allclose(centers[k], X[np.asarray(labels) == k].mean(axis=0), atol=1e-5)


def test_single_cluster_is_the_mean(key):
    X, _ = blobs(2, n_per=20, k=2, d=3)
    centers, labels = kmeans(X, 1, key=key)
    np.testing.assert_allclose(centers[0], X.mean(axis=0), atol=1e-5)
    np.testing.assert_array_equal(labels, np.zeros(len(X)))


def test_kmeans_plusplus_draws_proportional_to_squared_distance(key):
    X = np.array([[0.0], [1.0], [3.0]], np.float32)
    draws = 6000
    centers = jax.vmap(lambda k: _kmeans.kmeans_plusplus(k, jnp.asarray(X), 2))(jax.random.split(key, draws))
    first, second = (np.asarray(centers[:, j, 0]).round().astype(int) for j in (0, 1))
    index = {0: 0, 1: 1, 3: 2}
    observed = np.zeros((3, 3))
    np.add.at(observed, ([index[v] for v in first], [index[v] for v in second]), 1)
    squared = (X - X.T) ** 2  # P(first = i) = 1/3, P(second = j | i) = d_ij^2 / sum_j d_ij^2
    expected = squared / squared.sum(axis=1, keepdims=True) / 3
    assert np.all(np.diag(observed) == 0)
    np.testing.assert_allclose(observed / draws, expected, atol=4 * np.sqrt(0.25 / draws))


def test_empty_clusters_reseeded_at_distinct_farthest_points():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(30, 2)), 10 + rng.normal(size=(30, 2))]).astype(np.float32)
    # centers 2 and 3 are so far away that no point chooses them
    start = np.array([[0.0, 0.0], [10.0, 10.0], [1e3, 1e3], [-1e3, 1e3]], np.float32)
    new = np.asarray(_kmeans.lloyd_step(jnp.asarray(X), jnp.asarray(start)))
    nearest, _ = nearest_numpy(X, start)
    far_order = np.argsort(-np.sum((X - start[nearest]) ** 2, axis=1))
    for k in (0, 1):
        np.testing.assert_allclose(new[k], X[nearest == k].mean(axis=0), atol=1e-5)
    np.testing.assert_array_equal(new[2], X[far_order[0]])
    np.testing.assert_array_equal(new[3], X[far_order[1]])
    # iterated to convergence, no cluster stays empty
    centers = _kmeans.lloyd(jnp.asarray(X), jnp.asarray(start), 100, jnp.float32(0))
    labels, _ = _kmeans.assign(jnp.asarray(X), centers)
    assert np.all(np.bincount(labels, minlength=4) > 0)


def test_duplicated_points(key):
    distinct = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    truth = np.repeat(np.arange(4), 10)
    X = distinct[truth]
    centers, labels = kmeans(X, 4, key=key)  # K = number of distinct points
    assert same_partition(labels, truth)
    np.testing.assert_array_equal(np.asarray(centers)[np.asarray(labels)], X)
    # K larger than the number of distinct points: empty clusters cannot be avoided,
    # but re-seeding keeps every center on a data point and labels stay nearest-center
    centers, labels = kmeans(X, 6, key=key)
    assert np.all(np.isfinite(centers))
    assert all(np.any(np.all(c == distinct, axis=1)) for c in np.asarray(centers))
    np.testing.assert_array_equal(np.asarray(centers)[np.asarray(labels)], X)


def test_blockwise_assignment_matches_numpy(monkeypatch):
    rng = np.random.default_rng(4)
    X, centers = rng.normal(size=(101, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    monkeypatch.setattr(_kmeans, "BLOCK_ELEMENTS", 7 * 8)  # blocks of 8 rows, remainder 5
    labels, sq_dist = _kmeans.assign(jnp.asarray(X), jnp.asarray(centers))
    reference, _ = nearest_numpy(X, centers)
    np.testing.assert_array_equal(labels, reference)
    np.testing.assert_allclose(sq_dist, np.sum((X - centers[reference]) ** 2, axis=1), atol=1e-4)


def test_errors(key):
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"K > N"):
        kmeans(X, 5, key=key)
    with pytest.raises(ValueError, match="`n_clusters` must be a positive integer, got 0"):
        kmeans(X, 0, key=key)
    with pytest.raises(TypeError, match="`n_clusters` must be an integer"):
        kmeans(X, 2.0, key=key)
    with pytest.raises(TypeError, match="key"):
        kmeans(X, 2)
    with pytest.raises(TypeError, match="`key` is required"):
        kmeans(X, 2, key=None)
    with pytest.raises(TypeError, match="`key` must be a PRNG key"):
        kmeans(X, 2, key=0)
    with pytest.raises(ValueError, match="single PRNG key"):
        kmeans(X, 2, key=jax.random.split(key))
    with pytest.raises(ValueError, match=r"`X` must have shape \(N, D\)"):
        kmeans(np.zeros(4), 2, key=key)
    with pytest.raises(ValueError, match="`X` is empty"):
        kmeans(np.zeros((0, 2)), 1, key=key)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        kmeans(np.array([[np.nan, 0.0], [0.0, 0.0]]), 1, key=key)
    with pytest.raises(ValueError, match="`max_iter` must be a positive integer, got 0"):
        kmeans(X, 2, key=key, max_iter=0)
    with pytest.raises(ValueError, match="`tol` must be a finite number >= 0"):
        kmeans(X, 2, key=key, tol=-1.0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer, got 0"):
        kmeans(X, 2, key=key, batch_size=0)
