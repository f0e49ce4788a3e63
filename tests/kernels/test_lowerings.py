"""The GPU and TPU lowerings checked without their hardware: the TPU kernel run by the TPU interpreter (grid
order randomised), both cross-lowered with `jax.export` (the exported module must hold the kernel's custom
call, not an XLA fallback), the block shapes against each target's rules, and the precision of every dot.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.extend import core as jex
from test_softmax_weighted_sum import data, relative_error, weighted_sum64

import gaussjax as gj
from gaussjax.kernels import DOT_PRECISION, _mosaic, _tiling, softmax_weighted_sum

TRITON_CALL = "__gpu$xla.gpu.triton"
CUSTOM_CALLS = {"tpu": "tpu_custom_call", "cuda": TRITON_CALL}
DISABLED = {"tpu": [], "cuda": [jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]}
# (B, N, K, F): tiny; MNIST-size delta; CIFAR-size delta; an ELS chunk (5x5x3 patches, 3 channels)
SHAPES = [(5, 70, 2, 2), (3, 131, 784, 784), (2, 130, 3072, 3072), (9, 200, 75, 3)]


# -- the TPU kernel under the TPU interpreter ----------------------------------------------------------------


def mosaic(queries, keys, bias, scale, seed):
    args = (jnp.asarray(queries), jnp.full(len(queries), scale, jnp.float32), jnp.asarray(keys),
            jnp.asarray(bias), jnp.asarray(keys))
    return _mosaic.weighted_sum(*args, interpret=pltpu.InterpretParams(random_seed=seed))


@pytest.mark.parametrize("sigma", [0.01, pytest.param(1.0, marks=pytest.mark.slow),
                                   pytest.param(80.0, marks=pytest.mark.slow)])
def test_tpu_kernel_interpreted_with_random_grid_order(rng, sigma):
    """3 query blocks x 3 key blocks (128 x 512), the parallel query axis visited in a random order."""
    queries, keys, bias = data(rng, 300, 1100, 2)
    assert _tiling.tpu_tiles(300, 1100, 2, 2)[:2] == (128, 512)
    mean64, max64, _ = weighted_sum64(queries, keys, bias, 1 / sigma**2)
    for seed in (0, 1):
        mean, running_max, _ = mosaic(queries, keys, bias, 1 / sigma**2, seed)
        assert relative_error(mean, mean64) < 1e-5
        np.testing.assert_allclose(running_max, max64, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_interpreter_catches_a_key_axis_declared_parallel(rng, monkeypatch):
    """The check has teeth: with the key (reduction) axis declared parallel the interpreter shuffles it too,
    the sums start and end at the wrong blocks, and the result is wrong for some seed."""
    queries, keys, bias = data(rng, 16, 1100, 2)
    mean64 = weighted_sum64(queries, keys, bias, 1.0)[0]
    monkeypatch.setattr(_mosaic, "DIMENSION_SEMANTICS", ("parallel", "parallel"))
    errors = [relative_error(mosaic(queries, keys, bias, 1.0, seed)[0], mean64) for seed in range(4)]
    assert max(errors) > 1e-2


# -- block shapes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, num_keys, key_dim, value_dim", SHAPES + [(1, 1, 1, 1), (1000, 60000, 3072, 3072)])
def test_block_shapes_follow_each_targets_rules(batch, num_keys, key_dim, value_dim):
    gpu = _tiling.gpu_tiles(batch, num_keys, key_dim, value_dim)
    for size in gpu[:4]:  # queries, keys, key and value chunks
        assert size & (size - 1) == 0 and _tiling.GPU_MIN_BLOCK <= size <= _tiling.GPU_MAX_BLOCK
    assert gpu.splits * gpu.steps * gpu.keys >= num_keys > (gpu.splits - 1) * gpu.steps * gpu.keys  # no empty split
    rows, keys, kp, fp = _tiling.tpu_tiles(batch, num_keys, key_dim, value_dim)
    assert rows % 8 == 0 and keys % 128 == 0 and kp % 128 == 0 and fp % 128 == 0
    assert kp >= key_dim and fp >= value_dim
    assert 4 * (2 * keys * (kp + fp) + rows * (2 * kp + 3 * fp)) <= _tiling.TPU_VMEM_LIMIT_BYTES


# -- cross-lowering -------------------------------------------------------------------------------------------


def exported_text(fn, platform, *args) -> str:
    exported = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=DISABLED[platform])(*args)
    return exported.mlir_module()


def assert_kernel_only(text: str, platform: str):
    assert CUSTOM_CALLS[platform] in text
    assert "stablehlo.dot_general" not in text  # no XLA matmul: the products are inside the kernel


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("batch, num_keys, key_dim, value_dim", SHAPES)
def test_cross_lowers_to_the_kernel(platform, batch, num_keys, key_dim, value_dim):
    args = (jax.ShapeDtypeStruct((batch, key_dim), jnp.float32), jax.ShapeDtypeStruct((num_keys, key_dim), jnp.float32),
            jax.ShapeDtypeStruct((num_keys,), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.float32),
            jax.ShapeDtypeStruct((num_keys, value_dim), jnp.float32))
    text = exported_text(lambda q, k, c, s, v: softmax_weighted_sum(q, k, c, s, v), platform, *args)
    assert_kernel_only(text, platform)


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_models_cross_lower_to_the_kernel(platform, rng):
    points = rng.uniform(-1, 1, size=(40, 12)).astype(np.float32)
    images = points.reshape(40, 2, 2, 3)
    x, sigma = np.zeros((3, 12), np.float32), np.full(3, 0.5, np.float32)
    models = [gj.DeltaMixture(points, implementation="pallas"),
              gj.PatchMixture(images, 3, implementation="pallas"),
              gj.PatchMixture(images, 3, equivariant=True, implementation="pallas")]
    for model in models:
        text = exported_text(lambda m, x, s: m.denoise(x, s), platform, model, x, sigma)
        assert CUSTOM_CALLS[platform] in text
    delta = exported_text(lambda m, x, s: m.log_density(x, s), platform, models[0], x, sigma)
    assert_kernel_only(delta, platform)


# -- precision -------------------------------------------------------------------------------------------------


def sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex.Jaxpr):
                yield item


def equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for inner in sub_jaxprs(eqn.params):
            yield from equations(inner)


def test_every_dot_in_every_kernel_requests_float32_exact_products():
    args = (jnp.zeros((5, 784)), jnp.zeros((70, 784)), jnp.zeros(70), jnp.ones(5), jnp.zeros((70, 3)))
    jaxpr = jax.make_jaxpr(lambda q, k, c, s, v: softmax_weighted_sum(q, k, c, s, v))(*args).jaxpr
    kernels = [eqn for eqn in equations(jaxpr) if eqn.primitive.name == "pallas_call"]
    # interpreted (CPU and any other platform), Triton (CUDA), Mosaic (TPU): platform_dependent traces them all
    assert len(kernels) == 4
    assert DOT_PRECISION == jax.lax.Precision.HIGHEST
    for kernel in kernels:
        dots = [eqn for eqn in equations(kernel.params["jaxpr"]) if eqn.primitive.name == "dot_general"]
        assert len(dots) == 2  # the scores q . k and the weighted sum p . v
        for dot in dots:
            assert dot.params["precision"] == (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
            assert dot.params["preferred_element_type"] == jnp.float32

