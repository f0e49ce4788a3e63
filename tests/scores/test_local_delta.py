import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from gaussjax import fit_gaussian
from gaussjax.scores import DeltaMixture
from gaussjax.scores.local_delta import LocalDeltaMixture

SIGMA = np.array([0.05, 0.3, 1.0, 4.0])


def direct_local_delta(images, eigvals, eigvecs, x, sigma, threshold, temperature):
    """Lukoianov et al.'s masked delta mixture by loops over queries and output coordinates, float64."""
    flat, queries = images.reshape(len(images), -1), x.reshape(len(x), -1)
    out = np.zeros(queries.shape)
    for b in range(len(queries)):
        wiener = eigvecs @ np.diag(eigvals / (eigvals + sigma[b] ** 2)) @ eigvecs.T
        for m in range(flat.shape[1]):
            field = np.abs(wiener[:, m]) >= threshold * wiener[m, m]
            distances = np.sum(field * (queries[b] - flat) ** 2, axis=1)
            out[b, m] = softmax(-distances / (2 * sigma[b] ** 2 * temperature)) @ flat[:, m]
    return out.reshape(x.shape)


@pytest.fixture
def data(rng):
    images = rng.normal(size=(5, 4, 5, 2))
    return images, rng.normal(size=(4, 4, 5, 2)), fit_gaussian(images.reshape(5, -1))


@pytest.mark.parametrize("threshold, temperature", [(0.1, 1.0), (0.3, 0.5), (0.6, 2.0), (1.0, 1.0)])
def test_matches_direct_loops(x64, data, threshold, temperature):
    images, x, gaussian = data
    model = LocalDeltaMixture(images, gaussian, threshold=threshold, temperature=temperature, chunk_size=2)
    expected = direct_local_delta(
        images, np.asarray(gaussian.eigvals), np.asarray(gaussian.eigvecs), x, SIGMA, threshold, temperature
    )
    np.testing.assert_allclose(model.denoise(x, SIGMA), expected, rtol=1e-10, atol=1e-10)


def test_full_field_is_the_delta_mixture(x64, data):
    images, x, gaussian = data
    expected = DeltaMixture(images.reshape(5, -1)).denoise(x.reshape(4, -1), SIGMA)
    model = LocalDeltaMixture(images, gaussian, threshold=0.0)
    np.testing.assert_allclose(model.denoise(x.reshape(4, -1), SIGMA), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_chunk_sizes_and_query_blocks_agree(x64, data, chunk_size, monkeypatch):
    import gaussjax.scores.local_delta as module

    images, x, gaussian = data
    reference = LocalDeltaMixture(images, gaussian, chunk_size=5).denoise(x, SIGMA)
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 2 * 40 * 40)  # blocks of 2 queries
    chunked = LocalDeltaMixture(images, gaussian, chunk_size=chunk_size).denoise(x, SIGMA)
    np.testing.assert_allclose(chunked, reference, rtol=1e-12, atol=1e-12)


def test_layouts_jit_vmap_and_score(x64, data):
    images, x, gaussian = data
    model = LocalDeltaMixture(images, gaussian, threshold=0.2, chunk_size=3)
    eigvals, eigvecs = np.asarray(gaussian.eigvals), np.asarray(gaussian.eigvecs)
    expected = direct_local_delta(images, eigvals, eigvecs, x, SIGMA, 0.2, 1.0)
    np.testing.assert_allclose(model.denoise(x.reshape(4, -1), SIGMA), expected.reshape(4, -1), rtol=1e-10, atol=1e-10)
    jitted = jax.jit(lambda m, x, s: m.denoise(x, s))(model, jnp.asarray(x), jnp.asarray(SIGMA))
    np.testing.assert_allclose(jitted, expected, rtol=1e-10, atol=1e-10)
    mapped = jax.vmap(lambda x, s: model.denoise(x[None], s[None])[0])(jnp.asarray(x), jnp.asarray(SIGMA))
    np.testing.assert_allclose(mapped, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(model.score(x, SIGMA), (expected - x) / SIGMA[:, None, None, None] ** 2,
                               rtol=1e-9, atol=1e-9)


def test_errors(data):
    images, _, gaussian = data
    with pytest.raises(ValueError, match=r"`threshold` must be in \[0, 1\]"):
        LocalDeltaMixture(images, gaussian, threshold=1.5)
    with pytest.raises(ValueError, match=r"`threshold` must be in \[0, 1\]"):
        LocalDeltaMixture(images, gaussian, threshold=-0.1)
    with pytest.raises(ValueError, match="`temperature` must be finite and > 0"):
        LocalDeltaMixture(images, gaussian, temperature=0.0)
    with pytest.raises(TypeError, match="`temperature` must be a real number"):
        LocalDeltaMixture(images, gaussian, temperature="hot")
    with pytest.raises(ValueError, match="`gaussian` has dimension 20, but the images have H W C = 40"):
        LocalDeltaMixture(images, fit_gaussian(images[..., 0].reshape(5, -1)))
    with pytest.raises(TypeError, match="`gaussian` must be a gaussjax.Gaussian"):
        LocalDeltaMixture(images, None)
    with pytest.raises(ValueError, match=r"`images` must be a 4-D array"):
        LocalDeltaMixture(images.reshape(5, -1), gaussian)
