"""Improved precision and recall (Kynkaanniemi et al. 2019): k-NN manifolds of feature sets."""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix
from gaussjax._errors import InputTypeError, InputValueError


class PrecisionRecall(NamedTuple):
    """Fraction of fake features on the real manifold, and of real features on the fake manifold."""

    precision: float
    recall: float


_HIGHEST = jax.lax.Precision.HIGHEST


def _row_blocks(rows: Float[Array, "n D"], block: int) -> Float[Array, "b block D"]:
    """`rows` zero-padded to a multiple of `block` and cut into `(n_blocks, block, D)`."""
    pad = -rows.shape[0] % block
    padded = jnp.concatenate([rows, jnp.zeros((pad, rows.shape[1]), rows.dtype)])
    return padded.reshape(-1, block, rows.shape[1])


def _squared_distances(queries, half_sq_queries, points, sq_points):
    """`||q - p||^2` for a block of queries against all points (clamped at 0 against rounding)."""
    cross = jnp.matmul(queries, points.T, precision=_HIGHEST)
    return jnp.maximum(2 * (half_sq_queries[:, None] - cross) + sq_points[None, :], 0)


_SMALL_K = 16  # up to this k: k - 1 passes of argmin, beyond: top_k (the choice: docs/quality.md, "Numerics")


def _kth_smallest(values: Float[Array, "b n"], k: int) -> Float[Array, " b"]:
    """The k-th smallest entry of each row, counting repeated values with their multiplicity."""
    if k > _SMALL_K:
        return -jax.lax.top_k(-values, k)[0][:, k - 1]
    rows = jnp.arange(values.shape[0])
    for _ in range(k - 1):  # remove the smallest entry (one occurrence) of each row, k - 1 times
        values = values.at[rows, jnp.argmin(values, axis=1)].set(jnp.inf)
    return jnp.min(values, axis=1)


def _kth_neighbour_sq_radii(points: Float[Array, "n D"], *, k: int, block: int) -> Float[Array, " n"]:
    """Squared distance from each point to its k-th nearest other point, a block of rows at a time."""
    n = points.shape[0]
    sq = jnp.sum(jnp.square(points), axis=1)

    def one(args):
        start, rows = args
        d2 = _squared_distances(rows, 0.5 * jnp.sum(jnp.square(rows), axis=1), points, sq)
        self_column = (start + jnp.arange(block))[:, None] == jnp.arange(n)[None, :]
        d2 = jnp.where(self_column, jnp.inf, d2)  # the point itself is not a neighbour
        return _kth_smallest(d2, k)

    blocks = _row_blocks(points, block)
    starts = jnp.arange(blocks.shape[0]) * block
    return jax.lax.map(one, (starts, blocks)).reshape(-1)[:n]


def _inside_count(probes, points, sq_radii, *, block: int) -> Int[Array, ""]:
    """Number of `probes` within the ball `||p - x_i||^2 <= r_i^2` of some point `x_i`."""
    sq = jnp.sum(jnp.square(points), axis=1)

    def one(rows):
        d2 = _squared_distances(rows, 0.5 * jnp.sum(jnp.square(rows), axis=1), points, sq)
        return jnp.any(d2 <= sq_radii[None, :], axis=1)

    inside = jax.lax.map(one, _row_blocks(probes, block)).reshape(-1)[: probes.shape[0]]
    return jnp.sum(inside.astype(jnp.int32))


def _coverage_count(probes, points, k: int) -> Int[Array, ""]:
    """Number of `probes` inside the k-NN manifold of `points`."""
    rows = max(1, BLOCK_ELEMENTS // points.shape[0])  # query rows per block of distances
    sq_radii = _kth_neighbour_sq_radii(points, k=k, block=min(points.shape[0], rows))
    return _inside_count(probes, points, sq_radii, block=min(probes.shape[0], rows))


@functools.partial(jax.jit, static_argnames=("k",))
def _counts(real, fake, centre, *, k: int) -> tuple[Int[Array, ""], Int[Array, ""]]:
    """(fakes on the real manifold, reals on the fake manifold): one compiled program per call."""
    dtype = jnp.result_type(real.dtype, fake.dtype)
    real = real.astype(dtype) - centre.astype(dtype)[None, :]
    fake = fake.astype(dtype) - centre.astype(dtype)[None, :]
    return _coverage_count(fake, real, k), _coverage_count(real, fake, k)


def _centre(real) -> np.ndarray:
    """The mean of `real`, rounded to a multiple of a power of two `<=` the features' RMS spread.

    Subtracting it leaves distances unchanged and the residual offset below the
    spread (limiting float32 cancellation in `|q|^2 + |x|^2 - 2 q.x`), while integer
    features with a spread >= 1 stay integers, whose distances are then exact.
    """
    real = np.asarray(real)
    mean = real.mean(axis=0, dtype=np.float64)
    spread = float(np.sqrt(np.mean(real.var(axis=0, dtype=np.float64))))
    if not spread > 0:
        return np.zeros(real.shape[1])
    step = 2.0 ** np.floor(np.log2(spread))
    return np.round(mean / step) * step


def precision_recall(
    real: Float[ArrayLike, "Nr D"], fake: Float[ArrayLike, "Nf D"], k: int = 3
) -> PrecisionRecall:
    """Improved precision and recall of generated features (Kynkaanniemi et al. 2019).

    The real manifold is the union of the balls `B(x_i, r_i)` around the real
    features, with `r_i` the distance from `x_i` to its k-th nearest *other* real
    feature; likewise the fake manifold from the fake features.

        precision = (1/Nf) #{fake f : ||f - x_i|| <= r_i for some real x_i}
        recall    = (1/Nr) #{real x : ||x - f_j|| <= s_j for some fake f_j}

    (`<=` as in the reference implementation; exact duplicates count as neighbours
    at distance 0.)

    Args:
        real: `(Nr, D)` features of real images, `Nr > k`.
        fake: `(Nf, D)` features of generated images, same D, `Nf > k`.
        k: neighbourhood size (the paper's default is 3).

    Returns:
        `PrecisionRecall(precision, recall)` as Python floats in [0, 1].

    Computed in JAX (default float dtype: float32, or float64 under
    `jax_enable_x64` with float64 inputs), jitted. Squared distances
    `|q|^2 + |x|^2 - 2 q.x` are formed for one block of query rows against all
    points at a time (at most `gaussjax._blocks.BLOCK_ELEMENTS` entries, e.g. ~400
    rows for 10k points), so memory stays bounded; features are centred on the real
    mean first (rounded, see `_centre`), which leaves distances unchanged and
    limits float32 cancellation.

    Raises TypeError/ValueError naming the argument for non-real, non-2-D,
    non-finite or mismatched features, and for `k` not an integer in
    `[1, min(Nr, Nf) - 1]`.

    Example:
        Real points 0, 1, 2, 3 (balls of radius 1 with `k = 1`) hold the fake 0.5 but not 10;
        the fake balls (radius 9.5) hold every real point:

        >>> precision_recall(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]]), k=1)
        PrecisionRecall(precision=0.5, recall=1.0)
    """
    real = check_data_matrix("real", real)
    fake = check_data_matrix("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise InputValueError(f"`real` and `fake` must have the same dimension D, got {real.shape[1]} and "
                              f"{fake.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputTypeError(f"`k` must be an integer, got {type(k).__name__} {k!r}")
    smallest = min(real.shape[0], fake.shape[0])
    if not 1 <= k < smallest:
        raise InputValueError(
            f"`k` must be in [1, min(Nr, Nf) - 1] = [1, {smallest - 1}] (each point needs k other points), got {k}"
        )
    on_real, on_fake = _counts(real, fake, _centre(real), k=int(k))
    return PrecisionRecall(int(on_real) / fake.shape[0], int(on_fake) / real.shape[0])
