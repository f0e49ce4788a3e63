"""`implementation="pallas"` on DeltaMixture and PatchMixture (LS, ELS): the same results as the XLA path, and
the same composability (jit with the model as an argument, vmap over queries and over sigma, grad and jvp in x);
the selection rule of `implementation`.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.data import load_dataset
from gaussjax.kernels import _selection

SIGMAS = (0.01, 0.1, 1.0, 80.0)


@pytest.fixture(scope="module")
def digits():
    return np.asarray(load_dataset("digits").images[:60])  # (60, 8, 8, 1) in [-1, 1]


def make(kind, images, implementation, dtype=np.float32):
    images = images.astype(dtype)
    if kind == "delta":
        return gj.DeltaMixture(images.reshape(len(images), -1), implementation=implementation)
    return gj.PatchMixture(images, 3, equivariant=kind == "els", chunk_size=16, implementation=implementation)


def queries(rng, images, batch=5, spread=0.2, dtype=np.float32):
    flat = images.reshape(len(images), -1)
    return (flat[rng.integers(len(flat), size=batch)] + spread * rng.normal(size=(batch, flat.shape[1]))).astype(dtype)


KINDS = ["delta", "ls", "els"]
# the fast tier runs the delta mixture; the patch machines (each interpreted kernel compiles for seconds) are slow
FAST_DELTA = ["delta", pytest.param("ls", marks=pytest.mark.slow), pytest.param("els", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", FAST_DELTA)
def test_pallas_matches_xla_at_every_sigma(kind, digits, rng):
    xla, pallas = make(kind, digits, "xla"), make(kind, digits, "pallas")
    x = queries(rng, digits)
    for sigma in SIGMAS:
        expected = np.asarray(xla.denoise(x, sigma), np.float64)
        error = np.max(np.abs(np.asarray(pallas.denoise(x, sigma)) - expected)) / np.max(np.abs(expected))
        assert error < 1e-5, (sigma, error)
    if kind == "delta":
        np.testing.assert_allclose(pallas.log_density(x, 0.3), xla.log_density(x, 0.3), rtol=1e-6)


@pytest.mark.parametrize("kind", FAST_DELTA)
def test_pallas_composes_with_jit_and_vmap(kind, digits, rng):
    model, reference = make(kind, digits, "pallas"), make(kind, digits, "xla")
    x, sigmas = queries(rng, digits, batch=3), np.array([0.05, 0.5, 5.0], np.float32)
    expected = reference.denoise(x, sigmas)
    jitted = jax.jit(lambda m, x, s: m.denoise(x, s))(model, x, sigmas)
    over_queries = jax.vmap(lambda x, s: model.denoise(x, s))(x, sigmas)
    over_sigma = jax.vmap(lambda s: model.denoise(x[0], s))(sigmas)
    np.testing.assert_allclose(jitted, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(over_queries, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(over_sigma, reference.denoise(np.broadcast_to(x[0], (3, 64)), sigmas),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_pallas_derivatives_in_x_and_sigma_equal_xla_autodiff(x64, kind, digits, rng):
    """float64, so that the kernel's custom_jvp and JAX's autodiff of the XLA path agree to rounding."""
    model, reference = make(kind, digits, "pallas", np.float64), make(kind, digits, "xla", np.float64)
    x, direction = queries(rng, digits, batch=2, dtype=np.float64), rng.normal(size=(2, 64))
    sigma = np.array([0.3, 1.5])

    def loss(m):
        return lambda x, s: jnp.sum(jnp.sin(m.denoise(x, s)))

    for got, want in zip(jax.grad(loss(model), argnums=(0, 1))(x, sigma),
                         jax.grad(loss(reference), argnums=(0, 1))(x, sigma), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    _, along = jax.jvp(lambda x: model.denoise(x, sigma), (x,), (direction,))
    _, expected = jax.jvp(lambda x: reference.denoise(x, sigma), (x,), (direction,))
    np.testing.assert_allclose(along, expected, rtol=1e-9, atol=1e-11)
    if kind == "delta":  # the gradient of the log density is the score
        gradient = jax.grad(lambda x: jnp.sum(model.log_density(x, sigma)))(x)
        np.testing.assert_allclose(gradient, reference.score(x, sigma), rtol=1e-9, atol=1e-9)


def test_implementation_must_be_a_choice(digits):
    for make_model in (lambda: gj.DeltaMixture(digits.reshape(60, -1), implementation="triton"),
                       lambda: gj.PatchMixture(digits, 3, implementation="cuda")):
        with pytest.raises(ValueError, match="`implementation` must be one of 'auto', 'xla', 'pallas'; got"):
            make_model()


@pytest.mark.parametrize("kind", KINDS)
def test_auto_is_the_xla_path_on_cpu_bitwise(kind, digits, rng):
    x = queries(rng, digits)
    auto, xla = make(kind, digits, "auto"), make(kind, digits, "xla")
    assert auto.implementation == "auto"
    np.testing.assert_array_equal(auto.denoise(x, 0.2), xla.denoise(x, 0.2))


def test_auto_selects_the_kernel_only_where_it_was_measured_faster(monkeypatch):
    assert not _selection.use_kernel("auto", jnp.float32)  # this machine: CPU
    assert _selection.use_kernel("pallas", jnp.float64) and not _selection.use_kernel("xla", jnp.float32)
    for backend in ("tpu", "gpu"):  # measured slower on an H200, unmeasured on TPUs: the XLA path
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert not _selection.use_kernel("auto", jnp.float32)
    monkeypatch.setattr(_selection, "AUTO_KERNEL_BACKENDS", frozenset({"tpu"}))
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert _selection.use_kernel("auto", jnp.float32) and not _selection.use_kernel("auto", jnp.float64)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    import gaussjax as gj
    assert len(jax.devices()) == 4
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(44, 6)).astype(np.float32)
    x, sigma = rng.normal(size=(9, 6)).astype(np.float32), rng.uniform(0.05, 3.0, 9).astype(np.float32)
    mesh = jax.make_mesh((4,), ("data",))
    model = gj.DeltaMixture(jax.device_put(points, NamedSharding(mesh, PartitionSpec("data"))), chunk_size=3,
                            implementation="pallas")
    plain = gj.DeltaMixture(points, implementation="xla")
    np.testing.assert_allclose(model.denoise(x, sigma), plain.denoise(x, sigma), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.log_density(x, sigma), plain.log_density(x, sigma), rtol=1e-5)
    print("sharded ok")
""")


@pytest.mark.slow
def test_sharded_points_with_the_kernel():
    """Each of 4 devices runs the kernel on its own points; the partial sums are merged exactly."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded ok" in result.stdout


def test_els_groups_chunks_per_kernel_call_with_padding(rng, monkeypatch):
    """ELS's kernel path takes several chunks per call; a last, partial group is padded with chunks that weigh 0."""
    from gaussjax.scores import patch

    images = rng.uniform(-1, 1, size=(12, 4, 4, 1)).astype(np.float32)  # chunk_size 2: 6 chunks of 2 x 16 components
    monkeypatch.setattr(patch, "BLOCK_ELEMENTS", 4 * 2 * 16 * 9)  # groups of 4 chunks (K = 9): 4 + 2, padded to 8
    x = (images[:3] + 0.3 * rng.normal(size=(3, 4, 4, 1))).astype(np.float32)
    fused = gj.PatchMixture(images, 3, equivariant=True, chunk_size=2, implementation="pallas").denoise(x, 0.4)
    xla = gj.PatchMixture(images, 3, equivariant=True, chunk_size=2, implementation="xla").denoise(x, 0.4)
    np.testing.assert_allclose(fused, xla, rtol=1e-5, atol=1e-6)
