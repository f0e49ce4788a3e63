"""Log-sum-exp weighted averages, streamed: the one softmax behind every mixture score.

A mixture's denoiser is a softmax-weighted average `sum_i w_i v_i(x)` with
`w = softmax(logits)` (paper Eq. 8 and 11). `SoftmaxSum` accumulates it over blocks
of components the way flash attention does: it keeps the running maximum logit
`max`, the rescaled normalizer `total = sum_i exp(logit_i - max)` and the rescaled
weighted sum, so that no exponential overflows at any sigma and no logits for all
components need to exist at once. `GaussianMixture` accumulates its K components in
one block; `DeltaMixture` streams N training points chunk by chunk, and the partial
sums of devices holding different points are merged with `merge_across`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import NamedTuple

import jax
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
    state: SoftmaxSum,
    scores: Float[Array, "B S"],
    weigh: Callable[[Float[Array, "B S"]], Float[Array, "B F"]],
    scale: Float[Array, " B"] | None = None,
) -> SoftmaxSum:
    """Add a block of components whose logits are `scores (B, S)`, times `scale (B,)` if given.

    `weigh(p)` receives the block's unnormalized weights `p = exp(logits - max) (B, S)`
    and returns `sum_s p[b, s] * value_s(x_b)`, shape `(B, F)` (for point masses a
    single matmul `p @ values`). With `scale` (an inverse temperature, `1 / sigma^2` for
    the delta score) the running max is kept in the units of `scores`, and the scale
    multiplies only differences to it: the largest score then weighs exactly 1 at any
    scale. (Scaling first would give logits ~1e17 at tiny sigma, whose rounding -- e.g.
    a product fused into the subtraction as an FMA -- alone moves a weight by e^(1e9).)
    """
    new_max = jnp.maximum(state.max, scores.max(axis=-1))
    shift = _finite_or_zero(new_max)
    rescale = _exp_scaled(state.max - shift, scale)
    p = _exp_scaled(scores - shift[:, None], None if scale is None else scale[:, None])
    return SoftmaxSum(
        new_max,
        state.total * rescale + p.sum(axis=-1),
        state.weighted * rescale[:, None] + weigh(p),
    )


def _exp_scaled(differences: Array, scale: Array | None) -> Array:
    """`exp(scale * differences)` for `differences <= 0` (-inf allowed) and `0 < scale < inf`, at most 1."""
    return jnp.exp(jnp.minimum(_scaled(differences, scale), 0))


def _scaled(differences: Array, scale: Array | None) -> Array:
    """`scale * differences`; -inf stays -inf whatever the (finite, > 0) scale, with finite gradients."""
    if scale is None:
        return differences
    infinite = jnp.isneginf(differences)
    return jnp.where(infinite, -jnp.inf, jnp.where(infinite, 0.0, differences) * scale)


def merge(a: SoftmaxSum, b: SoftmaxSum, scale: Float[Array, " B"] | None = None) -> SoftmaxSum:
    """The sum over the union of two disjoint sets of components (with the `scale` both were accumulated at)."""
    new_max = jnp.maximum(a.max, b.max)
    shift = _finite_or_zero(new_max)
    ra, rb = _exp_scaled(a.max - shift, scale), _exp_scaled(b.max - shift, scale)
    return SoftmaxSum(new_max, a.total * ra + b.total * rb, a.weighted * ra[:, None] + b.weighted * rb[:, None])


def merge_across(
    state: SoftmaxSum, axis_name: Hashable | tuple[Hashable, ...], scale: Float[Array, " B"] | None = None
) -> SoftmaxSum:
    """`merge` of the partial sums that the devices along mesh axis (or axes) `axis_name` hold (inside `shard_map`).

    The n-ary form of `merge`: with `m` the largest `max` over the devices (`pmax`), each device
    rescales its `total` and `weighted` by `exp(scale (max - m))` and the rescaled sums are added
    (`psum`), so every device gets the sum over the union of their (disjoint) components. `m` is
    a constant for differentiation (`stop_gradient`): the result depends on it only through
    rounding, so no derivative of `pmax` is needed, and the derivatives are those of one softmax.
    """
    new_max = jax.lax.pmax(jax.lax.stop_gradient(state.max), axis_name)
    # no clamp at 0 (`_exp_scaled`'s): max <= new_max exactly, and a clamp would halve the derivative where equal
    rescale = jnp.exp(_scaled(state.max - _finite_or_zero(new_max), scale))
    total, weighted = jax.lax.psum((state.total * rescale, state.weighted * rescale[:, None]), axis_name)
    return SoftmaxSum(new_max, total, weighted)


def from_mean(running_max: Float[Array, " B"], total: Float[Array, " B"], mean: Float[Array, "B F"]) -> SoftmaxSum:
    """The partial sum with largest score `running_max`, `total` and weighted mean `mean` (a fused kernel's result)."""
    return SoftmaxSum(running_max, total, mean * total[:, None])


def weighted_mean(state: SoftmaxSum) -> Float[Array, "B F"]:
    """`sum_i softmax(logits)_i value_i`, shape `(B, F)`."""
    return state.weighted / state.total[:, None]


def log_normalizer(state: SoftmaxSum) -> Float[Array, " B"]:
    """`logsumexp(logits)`, shape `(B,)` (for a state accumulated without `scale`)."""
    return state.max + jnp.log(state.total)
