import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp, softmax

from gaussjax.scores import _softmax


def test_streamed_and_merged_equal_one_shot_softmax(x64, rng):
    logits = rng.normal(size=(3, 20)) * 50  # wide range: naive exp would overflow
    values = rng.normal(size=(20, 4))
    state = _softmax.empty(3, 4, jnp.float64)
    for start in range(0, 12, 5):  # blocks 0-4, 5-9, 10-11
        block = slice(start, min(start + 5, 12))
        state = _softmax.accumulate(state, jnp.asarray(logits[:, block]), lambda p, b=block: p @ values[b])
    rest = _softmax.accumulate(_softmax.empty(3, 4, jnp.float64), jnp.asarray(logits[:, 12:]),
                               lambda p: p @ values[12:])
    merged = _softmax.merge(state, rest)
    np.testing.assert_allclose(_softmax.weighted_mean(merged), softmax(logits, axis=1) @ values, rtol=1e-12)
    np.testing.assert_allclose(_softmax.log_normalizer(merged), logsumexp(logits, axis=1), rtol=1e-12)


def test_merge_with_empty_and_infinite_logits(x64):
    logits = jnp.array([[0.0, -jnp.inf, 1.0]])
    values = jnp.eye(3)
    full = _softmax.accumulate(_softmax.empty(1, 3, jnp.float64), logits, lambda p: p @ values)
    merged = _softmax.merge(_softmax.empty(1, 3, jnp.float64), full)
    np.testing.assert_allclose(_softmax.weighted_mean(merged), softmax(np.array([[0.0, -np.inf, 1.0]]), axis=1))
