"""NeuralDenoiser: the network behind the Denoiser protocol, usable by samplers and score comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import TINY, B, evaluate

import gaussjax
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet


@pytest.fixture(scope="module")
def denoiser(tiny_random):
    return NeuralDenoiser(*tiny_random)


def test_protocol_and_layouts(denoiser):
    assert isinstance(denoiser, gaussjax.Denoiser)
    assert not hasattr(denoiser, "log_density")  # a denoiser, not a density
    assert denoiser.dim == 64 and denoiser.image_shape == (8, 8, 1)
    x = 2.0 * jax.random.normal(jax.random.key(0), (B, 64))
    sigma = jnp.geomspace(0.1, 20.0, B)
    flat = denoiser.denoise(x, sigma)
    image = denoiser.denoise(x.reshape(B, 8, 8, 1), sigma)
    assert flat.shape == (B, 64) and image.shape == (B, 8, 8, 1)
    np.testing.assert_array_equal(image.reshape(B, 64), flat)
    # The module in eval mode, on images in the pixel order of reshape (row-major HWC).
    direct = evaluate(denoiser.module, denoiser.params, x.reshape(B, 8, 8, 1), sigma, None)
    np.testing.assert_array_equal(flat, direct.reshape(B, 64))
    np.testing.assert_allclose(denoiser.score(x, sigma), (flat - x) / np.square(sigma)[:, None], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(denoiser.score(x.reshape(B, 8, 8, 1), sigma).reshape(B, 64),
                               denoiser.score(x, sigma), rtol=1e-6)
    # Leading batch axes and a scalar sigma.
    batched = denoiser.denoise(x.reshape(2, B // 2, 64), 0.5)
    np.testing.assert_allclose(batched.reshape(B, 64), denoiser.denoise(x, jnp.full((B,), 0.5)), rtol=1e-6)


@pytest.mark.slow
def test_jit_with_the_denoiser_as_argument(denoiser):
    @jax.jit
    def score(model, x, sigma):
        return model.score(x, sigma)

    x = jax.random.normal(jax.random.key(1), (B, 64))
    np.testing.assert_allclose(score(denoiser, x, 0.7), denoiser.score(x, 0.7), rtol=1e-5, atol=1e-6)
    other = NeuralDenoiser(denoiser.module, jax.tree_util.tree_map(lambda p: 2 * p, denoiser.params))
    assert not np.allclose(score(other, x, 0.7), score(denoiser, x, 0.7))
    leaves = jax.tree_util.tree_leaves(denoiser)
    assert len(leaves) == len(jax.tree_util.tree_leaves(denoiser.params))


@pytest.mark.slow
def test_heun_sampler_and_compare_scores(denoiser):
    x_T = 80.0 * jax.random.normal(jax.random.key(2), (5, 64))
    out = gaussjax.heun_sampler(denoiser, x_T, gaussjax.karras_sigmas(4))
    assert out.x.shape == (5, 64) and np.all(np.isfinite(out.x)) and out.nfe == 7

    points = jax.random.uniform(jax.random.key(3), (20, 64), minval=-1, maxval=1)
    rows = gaussjax.evaluation.compare_scores(
        denoiser, {"iso": gaussjax.Isotropic(points.mean(0))}, gaussjax.evaluation.noised_data(points), [0.5, 5.0],
        key=jax.random.key(4), num_queries=B,
    )
    assert [(r["sigma"], r["candidate"]) for r in rows] == [(0.5, "iso"), (5.0, "iso")]
    assert all(np.isfinite(r["fuv_score"]) and r["fuv_denoiser"] >= 0 for r in rows)


@pytest.mark.slow
def test_dtype_is_preserved(denoiser, x64):
    """The network runs in float32 (as EDM's); a float64 query gets a float64 answer."""
    x = jax.ShapeDtypeStruct((B, 64), jnp.float64)
    assert jax.eval_shape(denoiser.denoise, x, 1.0).dtype == jnp.float64
    assert jax.eval_shape(denoiser.score, x, 1.0).dtype == jnp.float64


def test_class_labels():
    precond = EDMPrecond(SongUNet(**TINY, label_dim=3))
    x = jnp.zeros((4, 64))
    variables = jax.eval_shape(precond.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
    for labels in (jnp.eye(3)[0], jnp.eye(3)[jnp.arange(4) % 3], None):
        model = NeuralDenoiser(precond, variables, class_labels=labels)
        assert jax.eval_shape(model.denoise, x, 1.0).shape == (4, 64)
    with pytest.raises(ValueError, match="class_labels"):
        jax.eval_shape(NeuralDenoiser(precond, variables, class_labels=jnp.eye(3)).denoise, x, 1.0)
    with pytest.raises(ValueError, match=r"class_labels.*\(\.\.\., 3\)"):
        NeuralDenoiser(precond, variables, class_labels=jnp.ones(2))


def test_bad_arguments(denoiser):
    with pytest.raises(ValueError, match=r"D = 64 or \(\.\.\., H, W, C\) = \(\.\.\., 8, 8, 1\)"):
        denoiser.denoise(jnp.zeros((2, 63)), 1.0)
    with pytest.raises(ValueError, match="x"):
        denoiser.denoise(jnp.zeros((2, 8, 8, 2)), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        denoiser.denoise(jnp.zeros((2, 64)), 0.0)
    with pytest.raises(ValueError, match="sigma"):
        denoiser.score(jnp.zeros((2, 64)), jnp.ones(3))
    with pytest.raises(ValueError, match="image_shape"):
        NeuralDenoiser(denoiser.module, denoiser.params, image_shape=(4, 16, 1))
    with pytest.raises(TypeError, match="EDMPrecond"):
        NeuralDenoiser(SongUNet(**TINY), denoiser.params)
    with pytest.raises(ValueError, match="unconditional"):
        NeuralDenoiser(denoiser.module, denoiser.params, class_labels=jnp.ones(3))


@pytest.mark.slow
def test_vmap_and_grad_through_the_network(denoiser):
    x = jax.random.normal(jax.random.key(5), (B, 64))
    sigma = jnp.geomspace(0.2, 5.0, B)
    np.testing.assert_allclose(jax.vmap(denoiser.denoise)(x, sigma), denoiser.denoise(x, sigma), rtol=1e-5, atol=1e-6)

    def loss(x):
        return jnp.sum(jnp.sin(denoiser.denoise(x, sigma)))

    direction = jax.random.normal(jax.random.key(6), x.shape)
    h = 1e-2
    finite_difference = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)  # float32: loose
    along_grad = jnp.vdot(jax.grad(loss)(x), direction)
    _, along_jvp = jax.jvp(loss, (x,), (direction,))
    np.testing.assert_allclose(along_grad, finite_difference, rtol=2e-2)
    np.testing.assert_allclose(along_jvp, along_grad, rtol=1e-4)


@pytest.mark.parametrize("labels", [[np.nan, 0.0, 1.0], [[0.0, 1.0, 0.0], [np.inf, 0.0, 0.0]], [1e39, 0.0, 0.0]])
def test_class_labels_must_be_finite(labels):
    """D8: NaN labels made every output NaN. Refused when the denoiser is built and when the network is called."""
    precond = EDMPrecond(SongUNet(**TINY, label_dim=3))
    variables = jax.eval_shape(precond.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
    with pytest.raises(ValueError, match="`class_labels` contains NaN or infinite values"):
        NeuralDenoiser(precond, variables, class_labels=np.array(labels))
    with pytest.raises(ValueError, match="`class_labels` contains NaN or infinite values"):
        jax.eval_shape(lambda v: precond.apply(v, jnp.zeros((2, 8, 8, 1)), jnp.ones(2), np.array(labels)), variables)


def test_with_conv_impl_keeps_the_network_and_its_parameters(denoiser):
    x = jax.random.normal(jax.random.key(5), (3, 64))
    outputs = {}
    for impl in ("xla", "matmul"):  # lax.conv_general_dilated vs im2col products: two independent formulations
        other = denoiser.with_conv_impl(impl)
        assert other.module.net.conv_impl == impl and other.params is denoiser.params
        assert other.image_shape == denoiser.image_shape
        outputs[impl] = np.asarray(other.denoise(x, 0.7), np.float64)
    assert np.abs(outputs["xla"]).max() > 0.1  # random weights: the network's own term is not ~0
    np.testing.assert_allclose(outputs["xla"], outputs["matmul"], rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="`conv_impl` must be one of 'auto', 'xla', 'matmul'; got 'cudnn'"):
        denoiser.with_conv_impl("cudnn")
