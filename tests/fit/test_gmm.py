"""`fit_gmm` against per-class / per-cluster NumPy means, biased covariances and eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.data import load_dataset
from gaussjax.fit import fit_gmm, kmeans


def class_reference(X, members):
    """Weight, mean, 1/N_i covariance and descending eigenvalues of the rows `X[members]`, by NumPy."""
    rows = np.asarray(X, np.float64)[members]
    cov = np.cov(rows.T, bias=True) if len(rows) > 1 else np.zeros((X.shape[1], X.shape[1]))
    return len(rows) / len(X), rows.mean(axis=0), cov, np.linalg.eigvalsh(cov)[::-1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def blobs(seed, n_per=60, k=5, d=10, spread=20.0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), n_per)
    return (spread * rng.normal(size=(k, d)))[truth] + rng.normal(size=(k * n_per, d))


@pytest.mark.parametrize("block_elements", [64 * 7, 2**22], ids=["7-row-blocks", "one-block"])
def test_per_class_gmm_matches_numpy_on_digits(digits, x64, monkeypatch, block_elements):
    # each class's rows are read in blocks of BLOCK_ELEMENTS / D rows (never copied whole)
    monkeypatch.setattr("gaussjax.fit._gmm.BLOCK_ELEMENTS", block_elements)
    X, labels = digits.flat, digits.labels
    # relabel the classes with scattered, unordered ids: components follow sorted label order
    ids = np.array([40, 7, 13, 2, 99, 58, 21, 3, 76, 11])
    model = fit_gmm(X, 10, labels=ids[labels])
    assert model.weights.shape == (10,) and model.means.shape == (10, 64)
    assert model.eigvals.shape == (10, 64) and model.eigvecs.shape == (10, 64, 64)
    assert model.means.dtype == jnp.float64
    for component, label in enumerate(np.sort(ids)):
        weight, mean, cov, values = class_reference(X, ids[labels] == label)
        np.testing.assert_allclose(model.weights[component], weight, rtol=1e-12)
        np.testing.assert_allclose(model.means[component], mean, atol=1e-12)
        np.testing.assert_allclose(model.eigvals[component], np.maximum(values, 0), atol=1e-12)
        U, lam = np.asarray(model.eigvecs[component]), np.asarray(model.eigvals[component])
        np.testing.assert_allclose((U * lam) @ U.T, cov, atol=1e-12)
        np.testing.assert_allclose(U.T @ U, np.eye(64), atol=1e-12)


def test_low_rank_components_keep_top_eigenpairs(digits, x64):
    X, labels = digits.flat, digits.labels
    model = fit_gmm(X, 10, rank=5, labels=labels)
    assert model.eigvals.shape == (10, 5) and model.eigvecs.shape == (10, 64, 5)
    for c in range(10):
        _, _, cov, values = class_reference(X, labels == c)
        ref_values, ref_vectors = np.linalg.eigh(cov)
        top = ref_vectors[:, ::-1][:, :5]
        np.testing.assert_allclose(model.eigvals[c], values[:5], rtol=1e-10)
        U = np.asarray(model.eigvecs[c])
        np.testing.assert_allclose(U @ U.T, top @ top.T, atol=1e-8)  # same subspace, signs aside


def test_kmeans_components(key):
    X = blobs(0)
    model = fit_gmm(X, 5, rank=3, key=key)
    _, labels = kmeans(X, 5, key=key)
    assert model.means.dtype == jnp.float32
    for k in range(5):
        weight, mean, _, values = class_reference(X, np.asarray(labels) == k)
        np.testing.assert_allclose(model.weights[k], weight, rtol=1e-6)
        np.testing.assert_allclose(model.means[k], mean, atol=1e-5)
        np.testing.assert_allclose(model.eigvals[k], values[:3], rtol=1e-4)


def test_tiny_clusters_are_finite_and_floored(x64):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 4))
    labels = np.array([0] + [1] * 2 + [2] * 17)  # a 1-point and a 2-point cluster, rank D = 4
    model = fit_gmm(X, 3, labels=labels)
    eigvals, eigvecs = np.asarray(model.eigvals), np.asarray(model.eigvecs)
    assert np.all(np.isfinite(eigvals)) and np.all(eigvals >= 0)
    np.testing.assert_array_equal(model.means[0], X[0])
    np.testing.assert_array_equal(eigvals[0], np.zeros(4))  # a delta component at its point
    difference = X[1] - X[2]  # two points: one direction of variance |d|^2 / 4, the rest zero
    np.testing.assert_allclose(eigvals[1], [difference @ difference / 4, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(abs(eigvecs[1][:, 0] @ difference), np.linalg.norm(difference), rtol=1e-12)
    for U in eigvecs:  # surplus directions are an orthonormal completion
        np.testing.assert_allclose(U.T @ U, np.eye(4), atol=1e-12)
    queries = np.stack([X[0], X[1], np.zeros(4), np.full(4, 30.0)])
    assert np.all(np.isfinite(np.asarray(model.score(jnp.asarray(queries), 0.5))))

    floored = fit_gmm(X, 3, labels=labels, eigval_floor=0.1)
    np.testing.assert_allclose(floored.eigvals, np.maximum(eigvals, 0.1), rtol=1e-12)
    assert np.all(np.diff(np.asarray(floored.eigvals), axis=1) <= 0)
    np.testing.assert_array_equal(floored.eigvecs, model.eigvecs)


def test_errors(key):
    X = blobs(2, n_per=4, k=2, d=3)
    labels = np.repeat([0, 1], 4)
    with pytest.raises(ValueError, match="exactly one of `key`"):
        fit_gmm(X, 2)
    with pytest.raises(ValueError, match="exactly one of `key`"):
        fit_gmm(X, 2, key=key, labels=labels)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(N,\) = \(8,\)"):
        fit_gmm(X, 2, labels=labels[:-1])
    with pytest.raises(ValueError, match=r"`labels` must have shape"):
        fit_gmm(X, 2, labels=labels[:, None])
    with pytest.raises(TypeError, match="`labels` must be integers"):
        fit_gmm(X, 2, labels=labels.astype(float))
    with pytest.raises(ValueError, match="2 distinct classes but `n_components` = 3"):
        fit_gmm(X, 3, labels=labels)
    for rank in (0, 4):
        with pytest.raises(ValueError, match=r"`rank` must be in \[1, D\] = \[1, 3\]"):
            fit_gmm(X, 2, rank, labels=labels)
    with pytest.raises(ValueError, match="`eigval_floor` must be a finite number >= 0"):
        fit_gmm(X, 2, labels=labels, eigval_floor=-1e-3)
    with pytest.raises(TypeError, match="`eigval_floor` must be a finite number >= 0, got str '0'"):
        fit_gmm(X, 2, labels=labels, eigval_floor="0")
    with pytest.raises(ValueError, match=r"K > N"):
        fit_gmm(X, 9, key=key)
    with pytest.raises(ValueError, match="`n_components` must be a positive integer, got 0"):
        fit_gmm(X, 0, key=key)
    with pytest.raises(TypeError, match="`key` must be a PRNG key"):
        fit_gmm(X, 2, key=3)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        fit_gmm(np.where(np.eye(8, 3) > 0, np.nan, X), 2, labels=labels)
    with pytest.raises(ValueError, match=r"`X` must have shape \(N, D\)"):
        fit_gmm(X[0], 2, labels=labels)
    # 4 distinct points cannot fill 6 k-means clusters
    duplicated = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32), 10, axis=0)
    with pytest.raises(ValueError, match="left 2 of 6 clusters empty"):
        fit_gmm(duplicated, 6, key=jax.random.key(0))
