"""The one precision rule for matrix products: analytic scores, fitting and metrics run at full float32.

On GPUs (TF32) and TPUs (bfloat16 passes) JAX's default matmul precision rounds the
inputs of float32 products to 10 or 7 mantissa bits. The mixture and delta logits
`(x . y - ||y||^2 / 2) / sigma^2` multiply that rounding error by `1 / sigma^2`: at
sigma 0.05-0.3 it moves several percent of the softmax weight on natural-image
patches. So every product in `gaussjax.scores`, `gaussjax.fit`, `gaussjax.metrics`
(and the closed-form solution, samplers and ODE solves) goes through `matmul`/`einsum`
here, at `PRECISION`. The networks (`gaussjax.nn`) keep JAX's fast default: they are
trained with it and their error is not amplified.

`PRECISION` is the switch: `jax.lax.Precision.HIGHEST` (6 passes of bfloat16 on TPU,
plain float32 on GPU and CPU; on CPU it costs nothing). To trade this accuracy for
speed, set `gaussjax._precision.PRECISION` before the first call; already compiled
functions keep the precision they were traced with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

PRECISION = jax.lax.Precision.HIGHEST


def matmul(a: ArrayLike, b: ArrayLike) -> Array:
    """`a @ b` (`jnp.matmul` semantics) at `PRECISION`."""
    return jnp.matmul(a, b, precision=PRECISION)


def einsum(subscripts: str, *operands: ArrayLike) -> Array:
    """`jnp.einsum(subscripts, *operands)` at `PRECISION`."""
    return jnp.einsum(subscripts, *operands, precision=PRECISION)
