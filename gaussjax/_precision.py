"""The one precision rule for matrix products: analytic scores, fitting and metrics run at full float32.

On GPUs (TF32) and TPUs (bfloat16 passes) JAX's default matmul precision rounds the
inputs of float32 products to 10 or 7 mantissa bits. The mixture and delta logits
`(x . y - ||y||^2 / 2) / sigma^2` multiply that rounding error by `1 / sigma^2`, so
it grows without bound as sigma falls (its size on real data: docs/index.md). So every
product in `gaussjax.scores`, `gaussjax.fit`, `gaussjax.metrics` (and the closed-form
solution, samplers and ODE solves) goes through `matmul`/`einsum` here, at the precision
set by `matmul_precision` (`jax.lax.Precision.HIGHEST` unless changed). The networks
(`gaussjax.nn`) keep JAX's fast default: they are trained with it and their error is not
amplified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from gaussjax._errors import InputTypeError, InputValueError

# Part of JAX's tracing and compilation cache keys: a change retraces every jitted function.
_PRECISION = jax.make_user_context(default_value=jax.lax.Precision.HIGHEST)
_NAMES = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16", "fastest")  # as jax.lax.Precision


def _as_precision(precision: jax.lax.Precision | str) -> jax.lax.Precision:
    """`precision` as a `jax.lax.Precision`; `TypeError`/`ValueError` naming the argument otherwise."""
    if isinstance(precision, jax.lax.Precision):
        return precision
    if not isinstance(precision, str):
        raise InputTypeError(f"`precision` must be a jax.lax.Precision or a string, got {type(precision).__name__}")
    if precision.lower() not in _NAMES:
        raise InputValueError(f"`precision` must be a jax.lax.Precision or one of {', '.join(_NAMES)}, got "
                              f"{precision!r}")
    return jax.lax.Precision(precision.lower())


@contextlib.contextmanager
def matmul_precision(precision: jax.lax.Precision | str) -> Iterator[None]:
    """Set the precision of the analytic code's matrix products inside a `with` block.

    Every matrix product of the analytic scores, the fitting, the metrics, the closed-form
    solution, the samplers and the ODE solves runs at `jax.lax.Precision.HIGHEST` by
    default: their logits scale rounding errors by `1 / sigma^2`, and on GPUs (TF32) and
    TPUs (bfloat16 passes) JAX's own default rounds the inputs of float32 products. On
    CPUs float32 products are computed in full float32 whatever the setting. The
    networks (`gaussjax.nn`) are not affected: they always use JAX's default.

    The setting is part of JAX's tracing and compilation cache keys (a
    `jax.make_user_context`), so a jitted function called inside the block is traced
    and compiled for it, whenever it was compiled before. It is local to the current
    thread: other threads keep their own setting. Blocks nest; the previous setting is
    restored on exit, also when the block raises.

    Args:
        precision: a `jax.lax.Precision` (`DEFAULT`, `HIGH`, `HIGHEST`) or one of its
            names, in any case: `"highest"` / `"float32"`, `"high"` / `"tensorfloat32"`,
            `"default"` / `"bfloat16"` / `"fastest"`.

    Raises:
        TypeError: if `precision` is neither a `jax.lax.Precision` nor a string.
        ValueError: if `precision` is a string that names no precision.
    """
    with _PRECISION(_as_precision(precision)):
        yield


def matmul(a: ArrayLike, b: ArrayLike) -> Array:
    """`a @ b` (`jnp.matmul` semantics) at the precision set by `matmul_precision`."""
    return jnp.matmul(a, b, precision=_PRECISION.value)


def einsum(subscripts: str, *operands: ArrayLike) -> Array:
    """`jnp.einsum(subscripts, *operands)` at the precision set by `matmul_precision`."""
    return jnp.einsum(subscripts, *operands, precision=_PRECISION.value)
