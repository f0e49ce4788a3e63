"""Accelerator numerics: every product of the analytic scores and of k-means runs at HIGHEST precision.

CPUs compute float32 products in full precision whatever the precision flag says, so
these tests read the flag instead: in the lowered StableHLO every `dot_general` of a
score, a log density (and their gradients) and of k-means must carry
`precision = [HIGHEST, HIGHEST]`, while the networks keep JAX's default. A jaxpr
interpreter that rounds the inputs of every product not at HIGHEST to TF32 (what an
A100/H100 does by default) shows what the flag protects against, numerically.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend import core as jex

import gaussjax._precision as precision
from gaussjax.data import load_dataset
from gaussjax.fit._kmeans import assign, kmeans
from gaussjax.nn import SongUNet
from gaussjax.scores import DeltaMixture, Gaussian, GaussianMixture, Isotropic

PRODUCT = re.compile(r"stablehlo\.(dot_general|convolution)\b")
PRECISION = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")


def _product_precisions(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """`(op, (lhs, rhs) precision)` for every dot_general and convolution in StableHLO `text`."""
    found = []
    for line in text.splitlines():
        op = PRODUCT.search(line)
        if op:
            config = PRECISION.search(line)
            values = tuple(re.findall(r"\b(DEFAULT|HIGHEST|HIGH)\b", config.group(1))) if config else ()
            found.append((op.group(1), values))
    return found


def _basis(rng, dim, rank, batch=()):
    return np.linalg.qr(rng.normal(size=(*batch, dim, dim)))[0][..., :rank]


def _models():
    rng = np.random.default_rng(0)
    dim = 6
    points = rng.normal(size=(40, dim)).astype(np.float32)
    return {
        "isotropic": Isotropic(rng.normal(size=dim)),
        "gaussian-full": Gaussian(rng.normal(size=dim), rng.uniform(0.1, 2, dim), _basis(rng, dim, dim)),
        "gaussian-low-rank": Gaussian(rng.normal(size=dim), rng.uniform(0.1, 2, 2), _basis(rng, dim, 2)),
        "mixture-full": GaussianMixture(np.ones(3), rng.normal(size=(3, dim)), rng.uniform(0.1, 2, (3, dim)),
                                        _basis(rng, dim, dim, (3,))),
        "mixture-low-rank": GaussianMixture(np.ones(3), rng.normal(size=(3, dim)), rng.uniform(0.1, 2, (3, 2)),
                                            _basis(rng, dim, 2, (3,))),
        "delta": DeltaMixture(points),
        "delta-chunked": DeltaMixture(points, chunk_size=8),  # 5 chunks streamed by lax.scan
    }


MODELS = _models()
METHODS = ("denoise", "score", "log_density", "grad_log_density")


def _method(model, name):
    if name == "grad_log_density":
        return jax.grad(lambda x, sigma: jnp.sum(model.log_density(x, sigma)))
    return getattr(model, name)


def test_stablehlo_precision_is_read_correctly():
    """The parser sees the flag that `jnp.matmul` lowers to, for both settings."""
    a = jnp.ones((3, 4))
    highest = jax.jit(precision.matmul).lower(a, a.T).as_text()
    default = jax.jit(jnp.matmul).lower(a, a.T).as_text()
    assert _product_precisions(highest) == [("dot_general", ("HIGHEST", "HIGHEST"))]
    assert _product_precisions(default) == [("dot_general", ("DEFAULT", "DEFAULT"))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MODELS))
def test_analytic_model_products_are_highest(name, method):
    model = MODELS[name]
    x = jax.ShapeDtypeStruct((5, model.dim), jnp.float32)
    sigma = jax.ShapeDtypeStruct((5,), jnp.float32)
    text = jax.jit(_method(model, method)).lower(x, sigma).as_text()
    products = _product_precisions(text)
    if name != "isotropic":  # the isotropic model has no products at all
        assert products, f"no dot_general in {name}.{method}: the check would pass vacuously"
    assert all(p == ("dot_general", ("HIGHEST", "HIGHEST")) for p in products), products


@pytest.mark.parametrize("batch_size", [None, 16])
def test_kmeans_products_are_highest(batch_size):
    X = jax.ShapeDtypeStruct((50, 6), jnp.float32)
    centers = jax.ShapeDtypeStruct((4, 6), jnp.float32)
    texts = [
        jax.jit(assign).lower(X, centers).as_text(),
        jax.jit(lambda X, key: kmeans(X, 4, key=key, batch_size=batch_size)).lower(X, jax.random.key(0)).as_text(),
    ]
    for text in texts:
        products = _product_precisions(text)
        assert products and all(p == ("dot_general", ("HIGHEST", "HIGHEST")) for p in products), products


@pytest.mark.parametrize("conv_impl", ["xla", "matmul"])
def test_networks_keep_the_default_precision(conv_impl):
    net = SongUNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=(1, 2),
                   num_blocks=1, attn_resolutions=(4,), conv_impl=conv_impl)
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    noise = jax.ShapeDtypeStruct((2,), jnp.float32)
    variables = jax.eval_shape(net.init, jax.random.key(0), x, noise)
    products = _product_precisions(jax.jit(net.apply).lower(variables, x, noise).as_text())
    assert {op for op, _ in products} >= ({"dot_general", "convolution"} if conv_impl == "xla" else {"dot_general"})
    assert all("HIGHEST" not in values for _, values in products), products


# -- what HIGHEST protects against: TF32 rounding of product inputs, emulated on the CPU --


def _tf32(x):
    return lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10) if x.dtype == jnp.float32 else x


def _emulate_closed(closed: jex.ClosedJaxpr) -> jex.ClosedJaxpr:
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type) for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *args: _emulate(closed.jaxpr, closed.consts, args))(*avals)


def _emulate(jaxpr: jex.Jaxpr, consts, args):
    """Evaluate `jaxpr`, rounding the inputs of every float32 dot_general not at HIGHEST to TF32."""
    env = dict(zip(jaxpr.constvars, consts, strict=True)) | dict(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for eqn in jaxpr.eqns:
        params = {k: _emulate_closed(v) if isinstance(v, jex.ClosedJaxpr) else v for k, v in eqn.params.items()}
        inputs = [read(v) for v in eqn.invars]
        if eqn.primitive.name == "dot_general":
            setting = params["precision"]
            if not (isinstance(setting, tuple) and all(p == lax.Precision.HIGHEST for p in setting)):
                inputs = [_tf32(a) for a in inputs]
        outputs = eqn.primitive.bind(*inputs, **params)
        env.update(zip(eqn.outvars, outputs if eqn.primitive.multiple_results else [outputs], strict=True))
    return [read(v) for v in jaxpr.outvars]


def on_tf32_hardware(fn):
    """`fn` as a GPU with TF32 matmuls (JAX's default there) would compute it."""

    def run(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outputs = _emulate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outputs)

    return run


def _naive_delta_denoiser(points, x, sigma):
    """The delta denoiser written with `@`: JAX's default precision (TF32 on recent GPUs)."""
    logits = (x @ points.T - 0.5 * jnp.sum(points**2, axis=-1)[None, :]) / sigma**2
    return jax.nn.softmax(logits, axis=-1) @ points


def test_delta_denoiser_is_immune_to_tf32_rounding():
    """On natural-image patches at sigma 0.1, TF32 products would cost 5e-3 relative error; ours cost none."""
    data = load_dataset("patches").flat  # (1664, 768)
    sigma = 0.1  # the logits scale rounding errors by 1 / sigma^2 = 100
    points = data[64:]
    x = data[:64] + sigma * np.random.default_rng(0).normal(size=(64, data.shape[1])).astype(np.float32)
    points64, x64 = points.astype(np.float64), x.astype(np.float64)
    logits = (x64 @ points64.T - 0.5 * np.sum(np.square(points64), axis=-1)) / sigma**2
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    reference = (weights / weights.sum(axis=-1, keepdims=True)) @ points64  # float64, exact
    model = DeltaMixture(jnp.asarray(points))

    def error(denoised):
        return np.linalg.norm(np.asarray(denoised, np.float64) - reference) / np.linalg.norm(reference)

    assert error(model.denoise(x, sigma)) < 1e-4
    assert error(on_tf32_hardware(lambda m, x: m.denoise(x, sigma))(model, x)) < 1e-4
    assert error(on_tf32_hardware(_naive_delta_denoiser)(jnp.asarray(points), jnp.asarray(x), sigma)) > 2e-3
