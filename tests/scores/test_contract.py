"""The model contract: `Denoiser` (denoise; score derived), `Density` (adds log_density), one image layout,
one pytree mechanism (equinox) and one jitted model call.

The contract holds for a model called directly and for one passed through `jax.jit` (its arrays
traced): `chex.variants`, which needs a `chex.TestCase` class (absl's parameterized unrolls it).
"""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import gaussjax as gj
from gaussjax._pytree import jit_call
from gaussjax.fit._patch_size import PatchSizeSchedule
from gaussjax.scores import (
    DeltaMixture,
    Denoiser,
    Density,
    GaussianMixture,
    Isotropic,
    LocalDeltaMixture,
    PatchMixture,
    PatchPosteriorMean,
)

N, H, W, C = 4, 3, 4, 2
D = H * W * C


def random_images():
    return np.random.default_rng(0).normal(size=(N, H, W, C))


@pytest.fixture(scope="module")
def images():
    return random_images()


def densities(images):
    flat = images.reshape(N, -1)
    gaussian = gj.fit_gaussian(flat)
    mixture = GaussianMixture(np.ones(2), flat[:2], np.stack([gaussian.eigvals[:3]] * 2),
                              np.stack([gaussian.eigvecs[:, :3]] * 2))
    return [Isotropic(flat.mean(0)), gaussian, mixture, DeltaMixture(flat)]


def local_models(images):
    ls, els = PatchMixture(images, 3), PatchMixture(images, 3, equivariant=True)
    schedule = PatchSizeSchedule((ls, els), (3, 5), (0.5, 2.0), (0, 1), (H, W, C))
    local_delta = LocalDeltaMixture(images, gj.fit_gaussian(images.reshape(N, -1)))
    return [ls, els, PatchPosteriorMean(images, 2, 1), local_delta, schedule]


def test_densities_have_a_log_density_and_local_models_do_not(images):
    """Local models are denoisers only: no `log_density` attribute at all (they used to inherit one that raised)."""
    for model in densities(images):
        assert isinstance(model, Density) and callable(model.log_density)
    for model in local_models(images):
        assert isinstance(model, Denoiser) and not isinstance(model, Density)
        assert not hasattr(model, "log_density")


class Shrink(Denoiser):
    """A user's denoiser: only `dim` and `denoise`, `D(x) = x / (1 + sigma^2)` (a standard normal's)."""

    size: int = eqx.field(static=True)

    @property
    def dim(self):
        return self.size

    def denoise(self, x, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma), x.shape[:-1])  # a scalar, or one per vector
        return x / (1 + jnp.square(sigma))[..., None]


class TestDerivedScore(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_score_is_derived_from_denoise(self):
        """A subclass that defines only `denoise` gets `score = (D - x) / sigma^2`: here the N(0, I) score
        -x / (1 + sigma^2)."""
        score = self.variant(lambda model, x, sigma: model.score(x, sigma))
        x = np.random.default_rng(1).normal(size=(2, 3, 5))
        sigma = np.array([0.5, 2.0, 7.0])
        np.testing.assert_allclose(score(Shrink(5), x, sigma), -x / (1 + sigma**2)[:, None], rtol=1e-6)
        np.testing.assert_allclose(score(Shrink(5), x, 0.5), -x / 1.25, rtol=1e-6)
        with pytest.raises(ValueError, match="sigma"):  # a concrete sigma is checked (a traced one cannot be)
            Shrink(5).score(x, 0.0)


def test_denoiser_and_density_are_abstract():
    class NoDenoise(Denoiser):
        dim = 3

    class NoLogDensity(Density):
        dim = 3

        def _denoise(self, x, sigma):
            return x

    for cls in (Denoiser, NoDenoise, Density, NoLogDensity):
        with pytest.raises(TypeError, match="abstract"):
            cls()


class TestLocalModels(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("patch_mixture", 0), ("equivariant_patch_mixture", 1), ("patch_posterior_mean", 2),
                                    ("local_delta_mixture", 3), ("patch_size_schedule", 4))
    def test_local_models_take_flat_and_image_queries_alike(self, index):
        model = local_models(random_images())[index]
        x = np.random.default_rng(2).normal(size=(2, 3, H, W, C))
        sigma = np.array([[0.4, 1.0, 3.0], [0.7, 1.5, 0.6]])

        @self.variant  # one function, so one compilation with jit
        def calls(model, x, sigma):
            return model.denoise(x, sigma), model.denoise(x.reshape(2, 3, D), sigma), model.score(x, sigma)

        on_images, on_vectors, score = calls(model, x, sigma)
        chex.assert_equal_shape([on_images, score, x])
        np.testing.assert_array_equal(on_vectors, on_images.reshape(2, 3, D))
        np.testing.assert_allclose(score, (on_images - x) / sigma[..., None, None, None] ** 2, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=rf"`x` must have shape \(\.\.\., D\) with D = {D} or "
                                             rf"\(\.\.\., H, W, C\) = \(\.\.\., {H}, {W}, {C}\), got \(2, {D - 1}\)"):
            self.variant(lambda model, x: model.denoise(x, 1.0))(model, np.zeros((2, D - 1)))


def test_models_are_equinox_modules_with_static_metadata(images):
    """One pytree mechanism: the leaves are the arrays; sizes and shapes are static (they select code)."""
    for model in densities(images) + local_models(images) + [gj.VPSchedule(np.array([0.5, 0.9]))]:
        assert isinstance(model, eqx.Module)
        chex.assert_tree_has_only_ndarrays(model)
    ls = local_models(images)[0]
    chex.assert_trees_all_equal_shapes_and_dtypes(jax.tree_util.tree_leaves(ls), [ls.chunks, ls.half_sq_norms])


def test_one_compilation_per_model_structure(images):
    """The jitted call traces a model's arrays: another model of the same structure and shapes reuses the
    compilation."""
    flat = images.reshape(N, -1)
    first, second = gj.fit_gaussian(flat), gj.fit_gaussian(flat[::-1] + 1.0)
    x = np.random.default_rng(3).normal(size=(3, D)).astype(np.float32)
    first.denoise(x, 0.5)
    compiled = jit_call._cache_size()
    mean, eigvals, eigvecs = (np.asarray(a, np.float64) for a in (second.mean, second.eigvals, second.eigvecs))
    expected = mean + (x - mean) @ eigvecs @ np.diag(eigvals / (eigvals + 0.25)) @ eigvecs.T  # Eq. 12
    np.testing.assert_allclose(second.denoise(x, 0.5), expected, rtol=1e-4, atol=1e-5)
    assert jit_call._cache_size() == compiled
    gj.evaluation.compare_scores(first, {"other": second}, gj.noised_data(flat), [0.5], key=jax.random.key(0),
                                 num_queries=3)
    gj.evaluation.compare_scores(second, {"other": first}, gj.noised_data(flat), [0.5], key=jax.random.key(0),
                                 num_queries=3)
    assert jit_call._cache_size() == compiled + 1  # model.denoise (the probe's call), once for both models
