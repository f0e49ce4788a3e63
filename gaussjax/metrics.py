"""How well one score explains another: the fraction of unexplained variance (paper Eq. 28)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _check_pair(reference, approx):
    reference, approx = jnp.asarray(reference), jnp.asarray(approx)
    if reference.shape != approx.shape or reference.ndim < 1:
        raise ValueError(
            f"`reference` and `approx` must have the same shape (..., D), got {reference.shape} and {approx.shape}"
        )
    return reference, approx


def fraction_unexplained_variance(
    reference: Float[ArrayLike, "*batch D"], approx: Float[ArrayLike, "*batch D"]
) -> Float[Array, ""]:
    """`E ||ref - approx||^2 / E ||ref||^2` over all samples: the paper's tables' FUV (Eq. 28).

    Args:
        reference, approx: `(..., D)` vectors (scores or denoiser outputs); the
            expectation runs over all leading axes.

    Returns:
        A scalar: 0 when `approx` equals `reference`, 1 for `approx = 0`.
    """
    reference, approx = _check_pair(reference, approx)
    return jnp.sum(jnp.square(reference - approx)) / jnp.sum(jnp.square(reference))


def per_sample_unexplained_variance(
    reference: Float[ArrayLike, "*batch D"], approx: Float[ArrayLike, "*batch D"]
) -> Float[Array, "*batch"]:
    """`||ref - approx||^2 / ||ref||^2` for each sample, shape `(...)` (Eq. 28 pointwise)."""
    reference, approx = _check_pair(reference, approx)
    return jnp.sum(jnp.square(reference - approx), axis=-1) / jnp.sum(jnp.square(reference), axis=-1)
