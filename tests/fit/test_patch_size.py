"""`fit_patch_size`: the window per sigma that best predicts a reference denoiser, and the switching model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.evaluation import noised_data
from gaussjax.fit._patch_size import PatchSizeSchedule, fit_patch_size
from gaussjax.scores.patch import PatchMixture

SIGMAS = (0.1, 0.3, 1.0, 3.0)


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.uniform(jax.random.key(0), (12, 5, 6, 2), minval=-1, maxval=1), np.float32)


class SwitchingReference:
    """LS with a 3 x 3 window below sigma = 0.5 and 5 x 5 above: the 'network' the fit must recover."""

    def __init__(self, images):
        self.small, self.large = PatchMixture(images, 3), PatchMixture(images, 5)

    def denoise(self, x, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:-1])
        return jnp.where((sigma < 0.5)[..., None], self.small.denoise(x, sigma), self.large.denoise(x, sigma))


@pytest.mark.slow
def test_recovers_the_window_per_sigma(images):
    reference = SwitchingReference(images)
    flat = images.reshape(len(images), -1)
    rows, model = fit_patch_size(reference, lambda k: PatchMixture(images, k), SIGMAS, noised_data(flat),
                                 sizes=(1, 3, 5), key=jax.random.key(1), num_queries=8)
    assert len(rows) == len(SIGMAS) * 3
    best = {r["sigma"]: r["patch_size"] for r in rows if r["best"]}
    assert best == {0.1: 3, 0.3: 3, 1.0: 5, 3.0: 5}
    for row in rows:
        if row["best"]:
            assert row["r2_denoiser"] == pytest.approx(1.0, abs=1e-6)
        elif row["sigma"] in (0.3, 1.0):  # where the windows differ (at 3.0 every LS is near the mean image)
            assert row["r2_denoiser"] < 0.9999, row
    assert isinstance(model, PatchSizeSchedule) and model.sizes == (3, 5)
    assert model.size_per_sigma == best
    x = jnp.asarray(flat[:4]) + 0.2 * jax.random.normal(jax.random.key(2), (4, flat.shape[1]))
    sigma = jnp.asarray([0.1, 0.3, 1.0, 3.0])
    np.testing.assert_allclose(model.denoise(x, sigma), reference.denoise(x, sigma), rtol=1e-5, atol=1e-6)
    images_x = x.reshape(4, *images.shape[1:])
    np.testing.assert_allclose(jax.jit(model.denoise)(images_x, sigma),
                               reference.denoise(x, sigma).reshape(images_x.shape), rtol=1e-5, atol=1e-6)


def test_bad_arguments(images):
    flat = images.reshape(len(images), -1)
    with pytest.raises(ValueError, match="distinct"):
        fit_patch_size(None, lambda k: PatchMixture(images, k), SIGMAS, noised_data(flat), sizes=(3, 3),
                       key=jax.random.key(0))
    with pytest.raises(TypeError, match="local model"):
        fit_patch_size(None, lambda k: object(), SIGMAS, noised_data(flat), sizes=(3,), key=jax.random.key(0))
