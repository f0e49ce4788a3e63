import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from gaussjax.scores import DeltaMixture
from gaussjax.scores.patch_posterior import PatchPosteriorMean

SIGMA = np.array([0.05, 0.3, 1.0, 4.0])


def direct_pspc(images, x, sigma, p, stride):
    """PSPC-Square by loops: crop posterior means on the crop grid, averaged per pixel, float64."""
    n, h, w, c = images.shape

    def starts(size):
        grid = list(range(0, size - p + 1, stride))
        return grid if grid[-1] == size - p else grid + [size - p]

    out = np.zeros(x.shape)
    counts = np.zeros((h, w, c))
    for r in starts(h):
        for col in starts(w):
            counts[r : r + p, col : col + p] += 1
            crops = images[:, r : r + p, col : col + p].reshape(n, -1)
            for b in range(len(x)):
                query = x[b, r : r + p, col : col + p].ravel()
                weights = softmax(-np.sum((query - crops) ** 2, axis=1) / (2 * sigma[b] ** 2))
                out[b, r : r + p, col : col + p] += (weights @ crops).reshape(p, p, c)
    assert np.all(counts > 0)
    return out / counts


@pytest.fixture
def data(rng):
    return rng.normal(size=(5, 4, 5, 2)), rng.normal(size=(4, 4, 5, 2))


@pytest.mark.parametrize("p, stride", [(2, 2), (3, 1), (3, 3), (3, 2), (4, 4)])
def test_matches_direct_loops(x64, data, p, stride):
    images, x = data
    model = PatchPosteriorMean(images, p, stride, chunk_size=2)
    np.testing.assert_allclose(model.denoise(x, SIGMA), direct_pspc(images, x, SIGMA, p, stride),
                               rtol=1e-10, atol=1e-10)


def test_one_crop_is_the_delta_mixture(x64, rng):
    images, x = rng.normal(size=(5, 4, 4, 2)), rng.normal(size=(4, 32))
    expected = DeltaMixture(images.reshape(5, -1)).denoise(x, SIGMA)
    np.testing.assert_allclose(PatchPosteriorMean(images, 4, 1).denoise(x, SIGMA), expected, rtol=1e-10, atol=1e-10)


def test_single_pixels_are_per_pixel_softmaxes(x64, data):
    images, x = data
    """A 1 x 1 crop holds one pixel's C channels: the softmax weighs the pixel's values in the N images."""
    images, x = data
    pixels, queries = images.reshape(5, 20, 2), x.reshape(4, 20, 2)
    distances = np.sum((queries[:, None] - pixels[None]) ** 2, axis=-1)  # (B, N, pixels)
    weights = softmax(-distances / (2 * SIGMA[:, None, None] ** 2), axis=1)
    expected = np.einsum("bnq,nqc->bqc", weights, pixels).reshape(4, 4, 5, 2)
    np.testing.assert_allclose(PatchPosteriorMean(images, 1, 1).denoise(x, SIGMA), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 100])
def test_chunk_sizes_agree(x64, data, chunk_size):
    images, x = data
    reference = PatchPosteriorMean(images, 2, 1, chunk_size=5).denoise(x, SIGMA)
    chunked = PatchPosteriorMean(images, 2, 1, chunk_size=chunk_size).denoise(x, SIGMA)
    np.testing.assert_allclose(chunked, reference, rtol=1e-12, atol=1e-12)


def test_many_query_blocks(x64, data, monkeypatch):
    import gaussjax.scores.patch_posterior as module

    images, x = data
    reference = PatchPosteriorMean(images, 2, 2).denoise(x, SIGMA)
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 1)  # one query per block
    np.testing.assert_allclose(PatchPosteriorMean(images, 2, 2).denoise(x, SIGMA), reference, rtol=1e-12)


def test_layouts_jit_vmap_and_score(x64, data):
    images, x = data
    model = PatchPosteriorMean(images, 3, 2, chunk_size=2)
    expected = direct_pspc(images, x, SIGMA, 3, 2)
    flat = model.denoise(x.reshape(4, -1), SIGMA)
    assert flat.shape == (4, 40)
    np.testing.assert_allclose(flat, expected.reshape(4, -1), rtol=1e-10, atol=1e-10)
    jitted = jax.jit(lambda m, x, s: m.denoise(x, s))(model, jnp.asarray(x), jnp.asarray(SIGMA))
    np.testing.assert_allclose(jitted, expected, rtol=1e-10, atol=1e-10)
    mapped = jax.vmap(lambda x, s: model.denoise(x[None], s[None])[0])(jnp.asarray(x), jnp.asarray(SIGMA))
    np.testing.assert_allclose(mapped, expected, rtol=1e-10, atol=1e-10)
    score = model.score(x, SIGMA)
    np.testing.assert_allclose(score, (expected - x) / SIGMA[:, None, None, None] ** 2, rtol=1e-9, atol=1e-9)
    assert not hasattr(model, "log_density")  # a denoiser, not a density


def test_errors(data):
    images, _ = data
    with pytest.raises(ValueError, match="`patch_size` = 5 exceeds the image size 4 x 5"):
        PatchPosteriorMean(images, 5, 1)
    with pytest.raises(ValueError, match="`stride` must be a positive integer, got 0"):
        PatchPosteriorMean(images, 2, 0)
    with pytest.raises(ValueError, match="`stride` = 3 exceeds `patch_size` = 2"):
        PatchPosteriorMean(images, 2, 3)
    with pytest.raises(ValueError, match="`patch_size` must be a positive integer, got 0"):
        PatchPosteriorMean(images, 0, 1)
    with pytest.raises(ValueError, match=r"`images` must be a 4-D array"):
        PatchPosteriorMean(images.reshape(5, -1), 2, 1)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer, got 0"):
        PatchPosteriorMean(images, 2, 1, chunk_size=0)
    with pytest.raises(ValueError, match="D = 40"):
        PatchPosteriorMean(images, 2, 1).denoise(np.zeros((2, 3)), 1.0)
