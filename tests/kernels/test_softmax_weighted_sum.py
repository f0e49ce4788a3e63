"""`gaussjax.kernels.softmax_weighted_sum` on CPU (the Triton kernel, interpreted) against float64 NumPy and
the XLA path, and its derivatives (`custom_jvp`) against autodiff of a dense float64 softmax.

Data: points uniform in [-1, 1]^D (image-like), queries near some of them; `N` is never a multiple of
the key blocks (16-64), batches are odd, sigma runs from 0.01 (one point dominates) to 80 (all weigh).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.kernels import WeightedSum, softmax_weighted_sum
from gaussjax.scores import DeltaMixture

SIGMAS = (0.01, 0.1, 1.0, 80.0)


def weighted_sum64(queries, keys, bias, scale, values=None):
    """float64 NumPy: `(mean (B, F), max score (B,), log-normalizer (B,))` of the softmax over keys."""
    q, k, c = (np.asarray(a, np.float64) for a in (queries, keys, bias))
    v = k if values is None else np.asarray(values, np.float64)
    scores = q @ k.T + c
    logits = np.broadcast_to(np.asarray(scale, np.float64), (len(q),))[:, None] * scores
    top = logits.max(axis=1, keepdims=True)
    weights = np.exp(logits - top)
    normalizer = weights.sum(axis=1)
    return (weights / normalizer[:, None]) @ v, scores.max(axis=1), top[:, 0] + np.log(normalizer)


def data(rng, batch, num_keys, dim, spread=0.05):
    points = rng.uniform(-1, 1, size=(num_keys, dim)).astype(np.float32)
    near = points[rng.integers(num_keys, size=batch)]
    queries = (near + spread * rng.normal(size=(batch, dim))).astype(np.float32)
    return queries, points, (-0.5 * np.sum(points.astype(np.float64) ** 2, axis=1)).astype(np.float32)


def relative_error(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def check_delta_case(rng, batch, num_keys, dim):
    """The delta denoiser's case at every sigma: kernel vs float64 and vs DeltaMixture's XLA path."""
    queries, points, bias = data(rng, batch, num_keys, dim)
    xla = DeltaMixture(points, implementation="xla")
    for sigma in SIGMAS:
        fused = softmax_weighted_sum(queries, points, bias, 1 / sigma**2)
        mean64, max64, log_normalizer64 = weighted_sum64(queries, points, bias, 1 / sigma**2)
        assert isinstance(fused, WeightedSum) and fused.mean.shape == (batch, dim) and fused.mean.dtype == np.float32
        assert relative_error(fused.mean, mean64) < 1e-5, sigma
        assert relative_error(fused.mean, np.asarray(xla.denoise(queries, sigma), np.float64)) < 1e-5, sigma
        np.testing.assert_allclose(fused.max, max64, rtol=1e-6, atol=1e-5)
        log_normalizer = np.asarray(fused.max, np.float64) / sigma**2 + np.log(np.asarray(fused.total, np.float64))
        np.testing.assert_allclose(log_normalizer, log_normalizer64, rtol=1e-5)


@pytest.mark.parametrize("batch, num_keys", [pytest.param(1, 1, marks=pytest.mark.slow), (17, 70)])
def test_matches_float64_and_xla_in_2d(rng, batch, num_keys):
    check_delta_case(rng, batch, num_keys, 2)


@pytest.mark.slow
def test_matches_float64_and_xla_at_784(rng):
    check_delta_case(rng, 5, 70, 784)


@pytest.mark.slow
def test_matches_float64_and_xla_at_3072(rng):
    check_delta_case(rng, 3, 131, 3072)


def test_values_per_query_scale_and_removed_keys(rng):
    """Values other than the keys, one scale per query, and keys removed by bias -inf weigh exactly 0."""
    queries, keys, bias = data(rng, 7, 45, 10)
    values = rng.normal(size=(45, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 100.0, 7).astype(np.float32)
    removed = bias.copy()
    removed[::3] = -np.inf
    values_poisoned = values.copy()
    values_poisoned[::3] = 1e30  # any finite value: a removed key's weight is exactly 0
    fused = softmax_weighted_sum(queries, keys, removed, scale, values_poisoned)
    kept = np.arange(45) % 3 != 0
    mean64, max64, _ = weighted_sum64(queries, keys[kept], bias[kept], scale, values[kept])
    assert relative_error(fused.mean, mean64) < 1e-5
    np.testing.assert_allclose(fused.max, max64, rtol=1e-6)


@pytest.mark.slow
def test_float64(x64, rng):
    queries, keys, bias = data(rng, 3, 20, 4)
    fused = softmax_weighted_sum(queries.astype(np.float64), keys.astype(np.float64), bias.astype(np.float64), 25.0)
    assert fused.mean.dtype == np.float64
    np.testing.assert_allclose(fused.mean, weighted_sum64(queries, keys, bias, 25.0)[0], rtol=1e-12, atol=1e-13)


def test_no_queries():
    fused = softmax_weighted_sum(np.zeros((0, 3), np.float32), np.ones((4, 3), np.float32), np.zeros(4), 1.0)
    assert fused.mean.shape == (0, 3) and fused.max.shape == (0,)


def test_shape_errors():
    q, k, c = np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="`queries`"):
        softmax_weighted_sum(np.zeros((2, 5)), k, c, 1.0)
    with pytest.raises(ValueError, match="`keys` must hold at least one key"):
        softmax_weighted_sum(q, np.zeros((0, 3)), np.zeros(0), 1.0)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(N,\)"):
        softmax_weighted_sum(q, k, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="`values`"):
        softmax_weighted_sum(q, k, c, 1.0, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`scale`"):
        softmax_weighted_sum(q, k, c, np.ones(3))


# -- derivatives: jvp, grad, jacfwd in the queries and sigma, against a dense float64 softmax ---------------


def dense(queries, keys, bias, sigma, values):
    """The same weighted sum with XLA ops (a dense softmax), for JAX's own autodiff."""
    logits = (queries @ keys.T + bias[None, :]) / jnp.square(sigma)[:, None]
    return jax.nn.softmax(logits, axis=1) @ values


def test_jvp_in_queries_and_sigma(x64, rng):
    queries, keys, bias = (a.astype(np.float64) for a in data(rng, 4, 37, 6, spread=0.3))
    values, sigmas = rng.normal(size=(37, 3)), np.full(4, 0.5)
    directions = (rng.normal(size=queries.shape), rng.normal(size=4))
    _, along = jax.jvp(lambda q, s: softmax_weighted_sum(q, keys, bias, 1 / jnp.square(s), values).mean,
                       (queries, sigmas), directions)
    _, expected = jax.jvp(lambda q, s: dense(q, keys, bias, s, values), (queries, sigmas), directions)
    np.testing.assert_allclose(along, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [0.1, 0.5, 3.0])
@pytest.mark.parametrize("keys_as_values", [True, False])
def test_derivatives_in_queries_and_sigma(x64, rng, sigma, keys_as_values):
    queries, keys, bias = (a.astype(np.float64) for a in data(rng, 4, 37, 6, spread=0.3))
    values = keys if keys_as_values else rng.normal(size=(37, 3))
    sigmas = np.full(4, sigma)

    def fused(q, s):
        return softmax_weighted_sum(q, keys, bias, 1 / jnp.square(s), None if keys_as_values else values).mean

    def reference(q, s):
        return dense(q, keys, bias, s, values)

    directions = (rng.normal(size=queries.shape), rng.normal(size=4))
    _, along = jax.jvp(fused, (queries, sigmas), directions)
    _, expected = jax.jvp(reference, (queries, sigmas), directions)
    np.testing.assert_allclose(along, expected, rtol=1e-10, atol=1e-12)

    def loss(f):
        return lambda q, s: jnp.sum(jnp.sin(f(q, s)))

    for got, want in zip(jax.grad(loss(fused), argnums=(0, 1))(queries, sigmas),
                         jax.grad(loss(reference), argnums=(0, 1))(queries, sigmas), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    jacobian = jax.jacfwd(lambda x: fused(x[None], sigmas[:1])[0])(queries[0])
    np.testing.assert_allclose(jacobian, jax.jacrev(lambda x: reference(x[None], sigmas[:1])[0])(queries[0]),
                               rtol=1e-10, atol=1e-12)


def test_tangent_is_centred_at_small_sigma(rng):
    """float32, sigma = 0.01: one key dominates, the Jacobian (Cov_w / sigma^2) is ~0; it must not be rounding noise
    of size `|k|^2 / sigma^2` (an uncentred E[t v] - E[t] E[v] would leave ~1e-7 * 1e4 * D)."""
    queries, keys, bias = data(rng, 3, 50, 64, spread=0.01)
    _, tangent = jax.jvp(lambda q: softmax_weighted_sum(q, keys, bias, 1e4).mean, (queries,),
                         (rng.normal(size=queries.shape).astype(np.float32),))
    assert np.max(np.abs(tangent)) < 1e-3


@pytest.mark.slow
def test_log_normalizer_gradient_is_the_weighted_mean(x64, rng):
    """d/dq [s max + log total] = s E_w[k]: the max's zero tangent and the total's tangent add up."""
    queries, keys, bias = (a.astype(np.float64) for a in data(rng, 3, 20, 5, spread=0.3))

    def log_normalizer(q):
        fused = softmax_weighted_sum(q, keys, bias, 4.0)
        return jnp.sum(4.0 * fused.max + jnp.log(fused.total))

    mean64 = weighted_sum64(queries, keys, bias, 4.0)[0]
    np.testing.assert_allclose(jax.grad(log_normalizer)(queries), 4.0 * mean64, rtol=1e-10)


def test_derivative_in_keys_is_refused(rng):
    queries, keys, bias = data(rng, 2, 5, 3)
    with pytest.raises(ValueError, match="implementation='xla'"):
        jax.grad(lambda k: jnp.sum(softmax_weighted_sum(queries, k, bias, 1.0).mean))(keys)


@pytest.mark.slow
def test_vmap_over_queries_and_scale(rng):
    queries, keys, bias = data(rng, 6, 30, 4, spread=0.3)
    scales = rng.uniform(1.0, 20.0, 6).astype(np.float32)
    mapped = jax.vmap(lambda q, s: softmax_weighted_sum(q[None], keys, bias, s).mean[0])(queries, scales)
    assert relative_error(mapped, weighted_sum64(queries, keys, bias, scales)[0]) < 1e-5
    per_scale = jax.vmap(lambda s: softmax_weighted_sum(queries, keys, bias, s).mean)(scales[:3])
    for s, mean in zip(scales[:3], per_scale, strict=True):
        assert relative_error(mean, weighted_sum64(queries, keys, bias, s)[0]) < 1e-5
