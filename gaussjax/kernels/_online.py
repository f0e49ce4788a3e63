"""The in-kernel arithmetic of the online softmax, shared by every lowering: one block of keys at a time.

For queries `q (b, K)` with inverse temperatures `s (b, 1)` and a block of keys `k (n, K)`,
biases `c (1, n)` and values `v (n, F)`, the block's scores and logits are

    score_ij = q_i . k_j + c_j,        logit_ij = s_i score_ij,

and the running state of the rows is `max` (the largest score seen, in *score* units, as
`gaussjax.scores._softmax.accumulate` keeps it), `total = sum_j exp(s (score_j - max))` and the
weighted sum `acc = sum_j exp(s (score_j - max)) v_j`. The scale multiplies only differences to
the running max, so the largest score weighs exactly 1 at any `s` (at sigma = 0.01, `s = 1e4`:
scaling the scores first would leave `exp` arguments of ~1e4 times the data scale, whose float32
rounding alone moves a weight by orders of magnitude). A key with bias `-inf` (padding) weighs
exactly 0. Every product is a `lax.dot_general` at `DOT_PRECISION`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# What every dot in the kernels requests. float32 operands are multiplied exactly in float32:
# Triton lowers HIGHEST to `tt.dot` with `inputPrecision = ieee` (no TF32), Mosaic to
# `#tpu.contract_precision<fp32>` (the multi-pass bfloat16 product exact to float32), and the
# interpreter to an XLA dot at HIGHEST.
DOT_PRECISION = jax.lax.Precision.HIGHEST

_NT = (((1,), (1,)), ((), ()))  # a (m, k) . b (n, k) -> (m, n): contract the last axes
_NN = (((1,), (0,)), ((), ()))  # a (m, k) . b (k, n) -> (m, n)


def dot_nt(a, b):
    """`a @ b.T` at `DOT_PRECISION`, accumulated in `a`'s dtype."""
    return jax.lax.dot_general(a, b, _NT, precision=DOT_PRECISION, preferred_element_type=a.dtype)


def dot_nn(a, b):
    """`a @ b` at `DOT_PRECISION`, accumulated in `a`'s dtype."""
    return jax.lax.dot_general(a, b, _NN, precision=DOT_PRECISION, preferred_element_type=a.dtype)


def rescale(old_max, scores, scale):
    """The online-softmax step for a block of `scores (b, n)` after rows whose largest score is `old_max (b, 1)`.

    Returns `(new_max (b, 1), alpha (b, 1), p (b, n))`: the new running max, the factor
    `exp(s (old_max - new_max))` that rescales the old `total` and `acc`, and the block's
    weights `p = exp(s (score - new_max))`, all in `[0, 1]` (0 for `-inf` scores and for
    the `-inf` max before any key).
    """
    new_max = jnp.maximum(old_max, jnp.max(scores, axis=1, keepdims=True))
    shift = jnp.where(new_max > -jnp.inf, new_max, jnp.zeros_like(new_max))  # no key yet: any finite shift
    alpha = jnp.exp(jnp.minimum(scale * (old_max - shift), 0.0))
    p = jnp.exp(jnp.minimum(scale * (scores - shift), 0.0))
    return new_max, alpha, p
