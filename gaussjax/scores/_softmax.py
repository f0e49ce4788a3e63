"""Log-sum-exp weighted averages, streamed: the one softmax behind every mixture score.

A mixture's denoiser is a softmax-weighted average `sum_i w_i v_i(x)` with
`w = softmax(logits)` (paper Eq. 8 and 11). `SoftmaxSum` accumulates it over blocks
of components the way flash attention does: it keeps the running maximum logit
`max`, the rescaled normalizer `total = sum_i exp(logit_i - max)` and the rescaled
weighted sum, so that no exponential overflows at any sigma and no logits for all
components need to exist at once. `GaussianMixture` accumulates its K components in
one block; `DeltaMixture` streams N training points chunk by chunk and merges
partial sums across devices with `merge`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float


class SoftmaxSum(NamedTuple):
    """Partial softmax-weighted sum over the components seen so far, for a batch of B queries."""

    max: Float[Array, " B"]  # largest logit so far (-inf before any)
    total: Float[Array, " B"]  # sum_i exp(logit_i - max)
    weighted: Float[Array, "B F"]  # sum_i exp(logit_i - max) * value_i


def empty(batch: int, features: int, dtype) -> SoftmaxSum:
    """The sum over no components."""
    return SoftmaxSum(
        jnp.full((batch,), -jnp.inf, dtype), jnp.zeros((batch,), dtype), jnp.zeros((batch, features), dtype)
    )


def _finite_or_zero(m: Array) -> Array:
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


def accumulate(
    state: SoftmaxSum, logits: Float[Array, "B S"], weigh: Callable[[Float[Array, "B S"]], Float[Array, "B F"]]
) -> SoftmaxSum:
    """Add a block of components with `logits (B, S)`.

    `weigh(p)` receives the block's unnormalized weights `p = exp(logits - max) (B, S)`
    and returns `sum_s p[b, s] * value_s(x_b)`, shape `(B, F)` (for point masses a
    single matmul `p @ values`).
    """
    new_max = jnp.maximum(state.max, logits.max(axis=-1))
    shift = _finite_or_zero(new_max)
    rescale = jnp.exp(state.max - shift)
    p = jnp.exp(logits - shift[:, None])
    return SoftmaxSum(
        new_max,
        state.total * rescale + p.sum(axis=-1),
        state.weighted * rescale[:, None] + weigh(p),
    )


def merge(a: SoftmaxSum, b: SoftmaxSum) -> SoftmaxSum:
    """The sum over the union of two disjoint sets of components."""
    new_max = jnp.maximum(a.max, b.max)
    shift = _finite_or_zero(new_max)
    ra, rb = jnp.exp(a.max - shift), jnp.exp(b.max - shift)
    return SoftmaxSum(new_max, a.total * ra + b.total * rb, a.weighted * ra[:, None] + b.weighted * rb[:, None])


def weighted_mean(state: SoftmaxSum) -> Float[Array, "B F"]:
    """`sum_i softmax(logits)_i value_i`, shape `(B, F)`."""
    return state.weighted / state.total[:, None]


def log_normalizer(state: SoftmaxSum) -> Float[Array, " B"]:
    """`logsumexp(logits)`, shape `(B,)`."""
    return state.max + jnp.log(state.total)
