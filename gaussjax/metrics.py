"""How well one score explains another: the fraction of unexplained variance (paper Eq. 28)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import as_float, check_finite_norms, is_concrete, summarize
from gaussjax._errors import InputValueError

__all__ = ["fraction_unexplained_variance", "per_sample_unexplained_variance"]


def _check_pair(reference, approx, *, per_sample: bool):
    """Same shape `(..., D)`, non-empty, real; when concrete, finite with a nonzero reference (per sample)."""
    reference, approx = as_float("reference", reference), as_float("approx", approx)
    if reference.shape != approx.shape or reference.ndim < 1:
        raise InputValueError(
            f"`reference` and `approx` must have the same shape (..., D), got {reference.shape} and {approx.shape}"
        )
    if reference.size == 0:
        raise InputValueError(f"`reference` and `approx` are empty (shape {reference.shape}): the FUV is undefined")
    check_finite_norms("reference", reference)
    check_finite_norms("approx", approx)
    if is_concrete(reference):  # on the devices when `reference` spans processes (`summarize`)
        if summarize(_zero_reference, reference)[int(per_sample)]:
            raise InputValueError("`reference` is zero" + (" in some samples" if per_sample else "")
                                  + ": the fraction of unexplained variance is undefined (0 / 0 or x / 0)")
    return reference, approx


def _zero_reference(xp, reference):
    """(the reference is zero everywhere, the reference is zero in some sample) of `reference (..., D)`."""
    norms = xp.sum(xp.square(reference), axis=-1)
    return xp.stack([~xp.any(norms > 0), xp.any(norms == 0)])


def fraction_unexplained_variance(
    reference: Float[ArrayLike, "*batch D"], approx: Float[ArrayLike, "*batch D"]
) -> Float[Array, ""]:
    """`E ||ref - approx||^2 / E ||ref||^2` over all samples: the paper's tables' FUV (Eq. 28).

    Args:
        reference, approx: `(..., D)` vectors (scores or denoiser outputs); the
            expectation runs over all leading axes.

    Returns:
        A scalar: 0 when `approx` equals `reference`, 1 for `approx = 0`.

    Raises:
        ValueError: for concrete inputs that are empty, not finite, or whose reference is
            all zero (the ratio is undefined). Traced inputs are not checked: a zero
            reference then gives inf (or NaN if `approx` is zero too).
    """
    reference, approx = _check_pair(reference, approx, per_sample=False)
    return jnp.sum(jnp.square(reference - approx)) / jnp.sum(jnp.square(reference))


def per_sample_unexplained_variance(
    reference: Float[ArrayLike, "*batch D"], approx: Float[ArrayLike, "*batch D"]
) -> Float[Array, "*batch"]:
    """`||ref - approx||^2 / ||ref||^2` for each sample, shape `(...)` (Eq. 28 pointwise).

    Checked as `fraction_unexplained_variance`, with a nonzero reference in every sample.
    """
    reference, approx = _check_pair(reference, approx, per_sample=True)
    return jnp.sum(jnp.square(reference - approx), axis=-1) / jnp.sum(jnp.square(reference), axis=-1)
