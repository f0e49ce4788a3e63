import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from gaussjax.data import load_dataset
from gaussjax.scores import DeltaMixture, Gaussian, GaussianMixture


def direct_log_density(points, x, sigma):
    """log (1/N) sum_i N(x; y_i, sigma^2 I), by a direct log-sum-exp over all points."""
    sq = np.sum((x[:, None, :] - points[None]) ** 2, axis=-1)
    dim = points.shape[1]
    return logsumexp(-sq / (2 * sigma**2), axis=1) - np.log(len(points)) - dim / 2 * np.log(2 * np.pi * sigma**2)


def test_log_density_matches_direct_logsumexp_and_score_is_gradient(x64, rng):
    points, x = rng.normal(size=(50, 4)), rng.normal(size=(6, 4))
    model = DeltaMixture(points, chunk_size=16)
    np.testing.assert_allclose(model.log_density(x, 0.4), direct_log_density(points, x, 0.4), rtol=1e-10)
    gradient = jax.vmap(jax.grad(model.log_density), in_axes=(0, None))(jnp.asarray(x), 0.4)
    np.testing.assert_allclose(model.score(x, 0.4), gradient, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 50, 64])
def test_chunked_equals_unchunked(x64, rng, chunk_size):
    points, x = rng.normal(size=(50, 5)), rng.normal(size=(2, 3, 5))
    sigma = np.array([[0.05, 0.5, 5.0], [0.2, 1.0, 20.0]])
    reference = DeltaMixture(points, chunk_size=50)
    chunked = DeltaMixture(points, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked.denoise(x, sigma), reference.denoise(x, sigma), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.log_density(x, sigma), reference.log_density(x, sigma), rtol=1e-12)
    np.testing.assert_allclose(chunked.points, points)


def test_equals_rank_zero_mixture_with_equal_weights(x64, rng):
    points, x = rng.normal(size=(9, 4)), rng.normal(size=(5, 4))
    mixture = GaussianMixture(np.ones(9), points, np.zeros((9, 0)), np.zeros((9, 4, 0)))
    delta = DeltaMixture(points, chunk_size=4)
    for sigma in (0.1, 1.0, 10.0):
        np.testing.assert_allclose(delta.score(x, sigma), mixture.score(x, sigma), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(delta.log_density(x, sigma), mixture.log_density(x, sigma), rtol=1e-10)


def test_many_query_blocks(rng, monkeypatch):
    import gaussjax.scores.delta as delta_module

    monkeypatch.setattr(delta_module, "BLOCK_ELEMENTS", 64)  # force blocks of 64 // chunk queries
    points, x = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(37, 3)).astype(np.float32)
    blocked = DeltaMixture(points, chunk_size=16).denoise(x, 0.5)
    sq = np.sum((x[:, None] - points[None]) ** 2, axis=-1) / (2 * 0.25)
    w = np.exp(-(sq - sq.min(axis=1, keepdims=True)))
    np.testing.assert_allclose(blocked, (w / w.sum(1, keepdims=True)) @ points, rtol=1e-4, atol=1e-5)


def test_small_sigma_on_digits_returns_nearest_training_point(key):
    points = load_dataset("digits").flat
    model = DeltaMixture(points)
    index = jax.random.choice(key, len(points), (32,), replace=False)
    x = points[np.asarray(index)] + 1e-3 * np.asarray(jax.random.normal(key, (32, 64)))
    denoised, score = model.denoise(x, 1e-3), model.score(x, 1e-3)
    assert np.all(np.isfinite(denoised)) and np.all(np.isfinite(score))
    distances = np.sum((x[:, None, :] - points[None]) ** 2, axis=-1)
    nearest = points[np.argmin(distances, axis=1)]
    np.testing.assert_allclose(denoised, nearest, atol=1e-5)


def test_far_field_gaussian_approximation(key):
    """Sec. 4.1 (Eq. 24-27): the delta score approaches the Gaussian score of equal mean and
    covariance, with FUV falling at least as fast as tr(Sigma) / sigma^2."""
    points = np.asarray(load_dataset("digits").flat, np.float64)
    mean = points.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(np.cov(points, rowvar=False, bias=True))
    gaussian = Gaussian(mean, np.clip(eigvals, 0, None), eigvecs)
    delta = DeltaMixture(points)
    trace = eigvals.sum()
    sigmas = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
    noise = np.asarray(jax.random.normal(key, (256, 64)))
    fuvs = []
    for sigma in sigmas:
        x = (mean + sigma * noise).astype(np.float32)
        exact, approx = delta.score(x, sigma), gaussian.score(x, sigma)
        fuvs.append(float(np.sum((exact - approx) ** 2) / np.sum(exact**2)))
    fuvs = np.array(fuvs)
    assert np.all(fuvs < trace / sigmas**2)
    assert np.all(np.diff(np.log(fuvs)) / np.diff(np.log(sigmas)) < -2)


def test_errors(rng):
    with pytest.raises(ValueError, match="`points` is empty"):
        DeltaMixture(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"`points` must have shape \(N, D\)"):
        DeltaMixture(np.zeros(3))
    with pytest.raises(ValueError, match="`points` contains NaN"):
        DeltaMixture(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer, got 0"):
        DeltaMixture(np.zeros((3, 2)), chunk_size=0)
    with pytest.raises(ValueError, match="D = 2"):
        DeltaMixture(np.zeros((3, 2))).score(np.zeros(3), 1.0)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    from gaussjax.scores import DeltaMixture
    assert len(jax.devices()) == 4
    rng = np.random.default_rng(0)
    points = rng.normal(size=(44, 6)).astype(np.float32)
    x = rng.normal(size=(9, 6)).astype(np.float32)
    sigma = rng.uniform(0.2, 3.0, 9).astype(np.float32)
    plain = DeltaMixture(points, chunk_size=5)
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
        sharded_points = jax.device_put(points, NamedSharding(mesh, PartitionSpec("data")))
        model = DeltaMixture(sharded_points, chunk_size=3)  # 4 devices x 4 chunks x 3 rows, 4 padded
        assert model.mesh is not None and len(model.chunks.sharding.device_set) == 4
        assert DeltaMixture(jax.device_put(points, NamedSharding(mesh, PartitionSpec()))).mesh is None
        np.testing.assert_allclose(model.denoise(x, sigma), plain.denoise(x, sigma), rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(model.log_density(x, sigma), plain.log_density(x, sigma), rtol=2e-6)
        with jax.set_mesh(mesh):
            jitted = jax.jit(lambda m, x: m.score(x, sigma))(model, x)
        np.testing.assert_allclose(jitted, plain.score(x, sigma), rtol=2e-5, atol=2e-5)
    print("sharded ok")
""")


@pytest.mark.slow
def test_sharded_points_equal_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded ok" in result.stdout
