"""`moments` / `fit_gaussian` against NumPy's mean, biased covariance and eigh."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.data import iter_chunks, load_dataset
from gaussjax.fit import fit_gaussian, moments


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def reference(X):
    """Mean, 1/N covariance and descending eigenpairs by NumPy in float64."""
    X = np.asarray(X, dtype=np.float64)
    cov = np.cov(X.T, bias=True)
    values, vectors = np.linalg.eigh(cov)
    return X.mean(axis=0), cov, values[::-1], vectors[:, ::-1]


def anisotropic(seed, n=500, d=12, offset=0.0):
    """Random data with well-separated covariance eigenvalues (so eigenvectors are well defined)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return offset + (rng.normal(size=(n, d)) * np.geomspace(3.0, 0.1, d)) @ rotation.T


def test_moments_match_numpy_on_digits(digits):
    mean, cov, count = moments(digits.flat)
    ref_mean, ref_cov, _, _ = reference(digits.flat)
    assert count == len(digits)
    assert mean.dtype == cov.dtype == np.float64
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12)


def test_fit_gaussian_on_digits_float32(digits):
    model = fit_gaussian(digits.flat)
    _, ref_cov, ref_values, _ = reference(digits.flat)
    assert model.mean.dtype == model.eigvals.dtype == model.eigvecs.dtype == jnp.float32
    assert model.mean.shape == (64,) and model.eigvals.shape == (64,) and model.eigvecs.shape == (64, 64)
    np.testing.assert_allclose(model.mean, digits.flat.astype(np.float64).mean(axis=0), atol=1e-6)
    values, vectors = np.asarray(model.eigvals, np.float64), np.asarray(model.eigvecs, np.float64)
    np.testing.assert_allclose(values, np.maximum(ref_values, 0), atol=1e-5)
    np.testing.assert_allclose((vectors * values) @ vectors.T, ref_cov, atol=1e-5)


def test_fit_gaussian_x64_random_data(x64):
    X = anisotropic(0)
    model = fit_gaussian(X)
    ref_mean, ref_cov, ref_values, ref_vectors = reference(X)
    assert model.mean.dtype == model.eigvals.dtype == model.eigvecs.dtype == jnp.float64
    values, vectors = np.asarray(model.eigvals), np.asarray(model.eigvecs)
    np.testing.assert_allclose(model.mean, ref_mean, atol=1e-12)
    np.testing.assert_allclose(values, ref_values, rtol=1e-10)
    assert np.all(np.diff(values) <= 0) and np.all(values >= 0)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(12), atol=1e-12)
    # eigenvectors agree with NumPy's up to sign
    np.testing.assert_allclose(np.abs(vectors.T @ ref_vectors), np.eye(12), atol=1e-8)
    np.testing.assert_allclose((vectors * values) @ vectors.T, ref_cov, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3, 11])
def test_rank_truncation_keeps_top_eigenpairs(x64, rank):
    X = anisotropic(1)
    model = fit_gaussian(X, rank=rank)
    _, _, ref_values, ref_vectors = reference(X)
    assert model.eigvals.shape == (rank,) and model.eigvecs.shape == (12, rank)
    np.testing.assert_allclose(model.eigvals, ref_values[:rank], rtol=1e-10)
    projector = np.asarray(model.eigvecs) @ np.asarray(model.eigvecs).T
    np.testing.assert_allclose(projector, ref_vectors[:, :rank] @ ref_vectors[:, :rank].T, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [1, 97, 500, 1442, 5000])
def test_chunks_equal_whole_array(digits, chunk_size):
    X = digits.flat
    whole = moments(X)
    streamed = moments(X[i : i + chunk_size] for i in range(0, len(X), chunk_size))
    assert streamed[2] == whole[2] == len(X)
    np.testing.assert_allclose(streamed[0], whole[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(streamed[1], whole[1], rtol=0, atol=1e-13)


def test_fit_gaussian_from_iter_chunks(digits, x64):
    from_chunks = fit_gaussian(iter_chunks(digits, 300), rank=10)
    from_array = fit_gaussian(digits.flat, rank=10)
    np.testing.assert_allclose(from_chunks.mean, from_array.mean, atol=1e-13)
    np.testing.assert_allclose(from_chunks.eigvals, from_array.eigvals, atol=1e-12)
    # eigenvector signs are fixed by convention, so the vectors themselves agree
    np.testing.assert_allclose(from_chunks.eigvecs, from_array.eigvecs, atol=1e-8)


@pytest.mark.slow
def test_streaming_holds_one_chunk_at_a_time():
    rng = np.random.default_rng(2)
    previous = []

    def chunks():
        for _ in range(5):
            gc.collect()
            assert all(ref() is None for ref in previous), "an earlier chunk is still referenced"
            chunk = rng.normal(size=(40, 6)).astype(np.float32)
            previous.append(weakref.ref(chunk))
            yield chunk
            del chunk

    _, _, count = moments(chunks())
    assert count == 200


def test_large_common_offset_keeps_covariance():
    # float64 data 1e8 + N(0, Sigma): a naive E[xx^T] - E[x]E[x]^T loses every digit
    noise = anisotropic(3, n=2000, d=4)
    X = 1e8 + noise
    _, ref_cov, _, _ = reference(X - 1e8)  # the shift is exact in float64 (Sterbenz)
    for data in (X, (X[i : i + 333] for i in range(0, len(X), 333))):
        mean, cov, _ = moments(data)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-6, atol=1e-8)
    # float32 images of data with a 1e4 offset: the fitted spectrum is still right
    X32 = (1e4 + anisotropic(4, n=2000, d=4)).astype(np.float32)
    _, _, ref_values, _ = reference(X32.astype(np.float64) - 1e4)
    np.testing.assert_allclose(fit_gaussian(X32).eigvals, ref_values, rtol=1e-4)


def test_integer_and_jax_inputs(x64):
    X = np.random.default_rng(5).integers(0, 10, size=(50, 3))
    mean, cov, _, _ = reference(X)
    np.testing.assert_allclose(moments(X)[1], cov, atol=1e-12)
    np.testing.assert_allclose(moments(jnp.asarray(X, jnp.float64))[0], mean, atol=1e-12)


def test_single_point_has_zero_covariance():
    model = fit_gaussian(np.array([[1.0, -2.0, 3.0]]))
    np.testing.assert_array_equal(model.mean, [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(model.eigvals, np.zeros(3))


def test_errors():
    X = np.ones((5, 3))
    for bad in (0, 4, -1):
        with pytest.raises(ValueError, match=r"`rank` must be in \[1, D\] = \[1, 3\]"):
            fit_gaussian(X, rank=bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="`rank` must be an integer"):
            fit_gaussian(X, rank=bad)
    with pytest.raises(ValueError, match=r"`rank` must be in \[1, D\] = \[1, 3\]"):
        fit_gaussian(iter([X, X]), rank=4)  # D known only once the stream is read
    with pytest.raises(ValueError, match="empty"):
        fit_gaussian(np.ones((0, 3)))
    with pytest.raises(ValueError, match="empty"):
        moments(iter([]))
    with pytest.raises(ValueError, match="empty"):
        moments([np.ones((0, 3))])
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        moments(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        moments(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="chunk 1 contains NaN"):
        moments([np.ones((2, 2)), np.array([[np.inf, 0.0]])])
    with pytest.raises(ValueError, match="chunk 1 has D = 4, but earlier chunks have D = 3"):
        moments([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match=r"chunk 0 must have shape \(n, D\)"):
        moments(iter([np.ones(3)]))
    with pytest.raises(ValueError, match=r"chunk 0 must have shape \(n, D\)"):
        moments([np.ones((2, 2, 2))])
    with pytest.raises(TypeError, match="chunk 0 must be real"):
        moments(iter([np.ones((2, 2)) + 1j]))


def test_a_list_of_rows_is_one_data_matrix(x64):
    """Issue 15 (15): `fit_gaussian(X.tolist())` read each row as a chunk of its own."""
    X = np.random.default_rng(0).normal(size=(30, 4))
    expected = fit_gaussian(X)
    for rows in (X.tolist(), list(X), tuple(map(tuple, X))):
        fitted = fit_gaussian(rows)
        np.testing.assert_allclose(fitted.mean, expected.mean, rtol=1e-12)
        np.testing.assert_allclose(fitted.eigvals, expected.eigvals, rtol=1e-10)
    with pytest.raises(TypeError, match="iterable of"):
        moments(5)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(moments)(jnp.ones((2, 2)))
