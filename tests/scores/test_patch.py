"""PatchMixture (Kamb & Ganguli's LS and ELS machines) against direct NumPy float64 evaluations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.scores import DeltaMixture
from gaussjax.scores.patch import PatchMixture
from gaussjax.scores.patch_posterior import PatchPosteriorMean

N, H, W, C = 5, 4, 5, 2  # non-square, several channels: catches transposed axes


def window(image, h, w, k):
    """The k x k x C window of `image (H, W, C)` centred at (h, w), zeros outside the image."""
    r = k // 2
    out = np.zeros((k, k, image.shape[-1]))
    for dy in range(k):
        for dx in range(k):
            y, x = h + dy - r, w + dx - r
            if 0 <= y < image.shape[0] and 0 <= x < image.shape[1]:
                out[dy, dx] = image[y, x]
    return out.ravel()


def softmax_average(sq_distances, values, sigma):
    """sum_j softmax_j(-d_j / (2 sigma^2)) values_j, with `sq_distances (J,)`, `values (J, C)`."""
    logits = -(sq_distances - sq_distances.min()) / (2 * sigma**2)
    w = np.exp(logits)
    return (w / w.sum()) @ values


def direct_ls(images, x, sigma, k):
    """LS: D(x)_p = sum_i softmax_i(-||P_p x - P_p y_i||^2 / 2 sigma^2) y_i[p], by loops."""
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        for h in range(x.shape[1]):
            for w in range(x.shape[2]):
                query = window(x[b], h, w, k)
                d = np.array([np.sum((query - window(y, h, w, k)) ** 2) for y in images])
                out[b, h, w] = softmax_average(d, images[:, h, w], sigma[b])
    return out


def direct_els(images, x, sigma, k):
    """ELS: D(x)_p = sum_{i,q} softmax_{i,q}(-||P_p x - P_q y_i||^2 / 2 sigma^2) y_i[q], by loops."""
    train = [(window(y, h, w, k), y[h, w]) for y in images for h in range(H) for w in range(W)]
    train_patches, centres = np.array([t[0] for t in train]), np.array([t[1] for t in train])
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        for h in range(H):
            for w in range(W):
                d = np.sum((window(x[b], h, w, k)[None] - train_patches) ** 2, axis=1)
                out[b, h, w] = softmax_average(d, centres, sigma[b])
    return out


@pytest.fixture
def data(rng):
    return rng.normal(size=(N, H, W, C)), rng.normal(size=(3, H, W, C))


SIGMAS = np.array([0.3, 1.0, 4.0])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ls_matches_direct_evaluation(x64, data, k):
    images, x = data
    model = PatchMixture(images, k, chunk_size=2)
    np.testing.assert_allclose(model.denoise(x, SIGMAS), direct_ls(images, x, SIGMAS, k), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_els_matches_direct_evaluation(x64, data, k):
    images, x = data
    model = PatchMixture(images, k, equivariant=True, chunk_size=2)
    np.testing.assert_allclose(model.denoise(x, SIGMAS), direct_els(images, x, SIGMAS, k), rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_full_window_ls_is_the_delta_mixture(x64, data):
    images, x = data
    model = PatchMixture(images, 2 * max(H, W) - 1, chunk_size=3)
    delta = DeltaMixture(images.reshape(N, -1))
    for sigma in (0.2, 1.0, 10.0):
        np.testing.assert_allclose(
            model.denoise(x.reshape(3, -1), sigma), delta.denoise(x.reshape(3, -1), sigma), rtol=1e-10, atol=1e-10
        )


def test_els_with_one_pixel_windows_is_a_softmax_over_all_pixel_values(x64, data):
    images, x = data
    values, rows = images.reshape(-1, C), x.reshape(3, H * W, C)
    logits = -np.sum((rows[:, :, None] - values[None, None]) ** 2, axis=-1) / (2 * SIGMAS[:, None, None] ** 2)
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    expected = (w / w.sum(-1, keepdims=True)) @ values
    model = PatchMixture(images, 1, equivariant=True)
    np.testing.assert_allclose(model.denoise(x, SIGMAS), expected.reshape(x.shape), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("equivariant", [False, True])
def test_chunk_sizes_agree(x64, data, equivariant):
    images, x = data
    outputs = [PatchMixture(images, 3, equivariant=equivariant, chunk_size=s).denoise(x, SIGMAS) for s in (1, 2, N)]
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-12, atol=1e-12)


def test_many_query_blocks(x64, data, monkeypatch):
    import gaussjax.scores.patch as patch_module

    monkeypatch.setattr(patch_module, "BLOCK_ELEMENTS", 64)  # blocks of a few rows, the last one padded
    images, x = data
    ls, els = PatchMixture(images, 3, chunk_size=2), PatchMixture(images, 3, equivariant=True, chunk_size=2)
    np.testing.assert_allclose(ls.denoise(x, SIGMAS), direct_ls(images, x, SIGMAS, 3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(els.denoise(x, SIGMAS), direct_els(images, x, SIGMAS, 3), rtol=1e-10, atol=1e-10)


def test_tiny_sigma_snaps_each_pixel_to_the_centre_of_its_nearest_patch(x64, data):
    images, x = data
    k, sigma = 3, 1e-4
    ls, els = np.zeros_like(x), np.zeros_like(x)
    train = [(window(y, h, w, k), y[h, w]) for y in images for h in range(H) for w in range(W)]
    for b in range(3):
        for h in range(H):
            for w in range(W):
                query = window(x[b], h, w, k)
                nearest = np.argmin([np.sum((query - window(y, h, w, k)) ** 2) for y in images])
                ls[b, h, w] = images[nearest, h, w]
                els[b, h, w] = train[np.argmin([np.sum((query - t[0]) ** 2) for t in train])][1]
    np.testing.assert_allclose(PatchMixture(images, k, chunk_size=2).denoise(x, sigma), ls, rtol=1e-10, atol=1e-10)
    model = PatchMixture(images, k, equivariant=True, chunk_size=2)
    np.testing.assert_allclose(model.denoise(x, sigma), els, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("equivariant", [False, True])
@pytest.mark.slow
def test_layouts_score_jit_and_vmap(x64, data, equivariant):
    images, x = data
    model = PatchMixture(images, 3, equivariant=equivariant)
    expected = model.denoise(x, SIGMAS)
    np.testing.assert_allclose(model.denoise(x.reshape(3, -1), SIGMAS), expected.reshape(3, -1), rtol=1e-12)
    batched = np.stack([x, x[::-1]])  # (2, 3, H, W, C) with sigma (2, 3)
    out = model.denoise(batched, np.stack([SIGMAS, SIGMAS[::-1]]))
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    np.testing.assert_allclose(out[1], expected[::-1], rtol=1e-12)
    np.testing.assert_allclose(model.score(x, SIGMAS), (expected - x) / SIGMAS[:, None, None, None] ** 2, rtol=1e-10)
    jitted = jax.jit(lambda m, q, s: m.denoise(q, s))(model, jnp.asarray(x), jnp.asarray(SIGMAS))
    np.testing.assert_allclose(jitted, expected, rtol=1e-12)
    mapped = jax.jit(jax.vmap(lambda q, s: model.denoise(q, s)))(jnp.asarray(x), jnp.asarray(SIGMAS))
    np.testing.assert_allclose(mapped, expected, rtol=1e-12)


def test_bad_inputs_raise_clear_errors(data):
    images, x = data
    with pytest.raises(ValueError, match="`patch_size` must be odd"):
        PatchMixture(images, 2)
    with pytest.raises(ValueError, match=r"at most 2 max\(H, W\) - 1 = 9"):
        PatchMixture(images, 11)
    with pytest.raises(ValueError, match="`images` must be a 4-D array"):
        PatchMixture(images.reshape(N, -1), 3)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer, got 0"):
        PatchMixture(images, 3, chunk_size=0)
    model = PatchMixture(images, 3)
    with pytest.raises(ValueError, match="`x` must have shape"):
        model.denoise(x[..., :1], 0.5)
    assert not hasattr(model, "log_density")  # a denoiser, not a density


EMPTY_BATCH_MODELS = {
    "LS": lambda images: PatchMixture(images, 3),
    "ELS": lambda images: PatchMixture(images, 3, equivariant=True),
    "PSPC": lambda images: PatchPosteriorMean(images, 3, 2),
}


@pytest.mark.parametrize("model", EMPTY_BATCH_MODELS)
@pytest.mark.parametrize("method", ["denoise", "score"])
@pytest.mark.parametrize("shape", [(0, H * W * C), (0, H, W, C), (2, 0, H, W, C)], ids=["flat", "images", "2x0"])
def test_an_empty_query_batch_gives_an_empty_result(data, model, method, shape):
    # D11: block sizes were divided by the batch size, and reshape(0, -1) is ambiguous (ZeroDivisionError)
    images, _ = data
    model = EMPTY_BATCH_MODELS[model](images.astype(np.float32))
    x = jnp.zeros(shape, jnp.float32)
    sigma = jnp.full(shape[:-1] if len(shape) == 2 else shape[:-3], 0.5, jnp.float32)
    eager = getattr(model, method)(x, sigma)
    jitted = jax.jit(lambda m, q, s: getattr(m, method)(q, s))(model, x, sigma)
    for out in (eager, jitted):
        assert out.shape == shape and out.dtype == jnp.float32
