"""The exact score of a training set: a mixture of point masses (paper Eq. 9-11; App. D.7)."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_positive_int
from gaussjax._precision import matmul
from gaussjax.kernels import _selection
from gaussjax.kernels._weighted_sum import softmax_weighted_sum
from gaussjax.scores import _sharded, _softmax
from gaussjax.scores._base import Density, gaussian_log_normalizer

MIN_CHUNK, MAX_CHUNK = 256, 16384


def auto_chunk_size(num_points: int, dim: int) -> int:
    """Points per chunk: about `BLOCK_ELEMENTS / D`, evened out so padding is at most 7 rows."""
    target = min(max(BLOCK_ELEMENTS // dim, MIN_CHUNK), MAX_CHUNK)
    num_chunks = -(-num_points // target)
    per_chunk = -(-num_points // num_chunks)
    return min(-(-per_chunk // 8) * 8, num_points)


class DeltaMixture(Density):
    """(1/N) sum_i delta(y - y_i): the exact score of the training set {y_i} (Eq. 9-11).

        D(x, sigma) = sum_i w_i y_i,   w_i = softmax_i((x . y_i - ||y_i||^2 / 2) / sigma^2)

    (the `-||x||^2 / 2` part of `-||x - y_i||^2 / 2` is the same for every i and cancels).
    The points are streamed in chunks with an online log-sum-exp (`_softmax.SoftmaxSum`),
    two matmuls per chunk (at full float32 precision on every backend, see
    `gaussjax._precision`), so no (queries x N) array exists and peak memory stays
    bounded for any N. The chunked layout (and the norms `||y_i||^2 / 2`) is prepared
    once here.

    `points` may be a `jax.Array` whose rows are split over a mesh, of this process's
    devices or of every process's (a global array, e.g. from
    `jax.make_array_from_process_local_data`): each device then lays out and streams its
    own rows, the queries are replicated on every device, and the partial sums are merged
    across devices exactly (`_softmax.merge_across`); the validation runs on the devices
    too, with the same verdict on every process. An array replicated over a mesh is used
    as an ordinary array on this process. Pass such a model to `jax.jit` as an argument:
    JAX refuses to close over an array that spans processes (docs/scaling.md).

    `implementation` selects how the sums are computed: `"xla"` the chunked matmuls above,
    `"pallas"` the fused kernel `gaussjax.kernels.softmax_weighted_sum` (one pass over all
    points per device, no logits in memory; interpreted, slowly, on CPU), `"auto"` the XLA path
    except where the kernel was measured faster (none yet: on an H200 it is slower; decided
    when the model is traced, `gaussjax/kernels/_selection.py`, docs/kernels.md). The kernel path is differentiable in
    `x` and `sigma`, not in the points.

    Args:
        points: `(N, D)` training points.
        chunk_size: points per chunk, at most the rows of one device (static; default: about
            4M elements per chunk).
        implementation: `"auto"`, `"xla"` or `"pallas"` (static).

    Raises:
        ValueError: `points` is not `(N, D)`, is empty, holds NaN or infinite values or
            values whose squared norms overflow; it is sharded along D; `chunk_size < 1`;
            `implementation` is none of the three.
    """

    chunks: Float[Array, "C S D"]  # each shard's rows, then zero padding to whole chunks
    half_sq_norms: Float[Array, "C S"]  # ||y_i||^2 / 2, +inf on padding (weight exactly 0)
    num_points: int = eqx.field(static=True)
    rows: _sharded.RowSharding | None = eqx.field(static=True, default=None)  # how the points are split
    implementation: str = eqx.field(static=True, default="auto")  # "auto" | "xla" | "pallas"

    def __init__(
        self, points: Float[ArrayLike, "N D"], chunk_size: int | None = None, *, implementation: str = "auto"
    ):
        implementation = _selection.check_implementation(implementation)
        rows = _sharded.row_sharding("points", points)
        if rows is None:  # replicated, or a one-device mesh: an ordinary array on one of this process's devices
            points = _sharded.local_copy(points)
        points = check_data_matrix("points", points)
        num_points, dim = points.shape
        per_shard = num_points // _sharded.num_shards(rows)  # (JAX splits an axis only into equal blocks)
        if chunk_size is None:
            chunk_size = auto_chunk_size(per_shard, dim)
        chunk_size = min(check_positive_int("chunk_size", chunk_size), per_shard)  # no chunk past a shard's rows
        layout = functools.partial(_layout, num_chunks=-(-per_shard // chunk_size), chunk_size=chunk_size)
        self.chunks, self.half_sq_norms = _sharded.layout(layout, rows, points)
        self.num_points = num_points
        self.rows = rows
        self.implementation = implementation

    @property
    def mesh(self) -> Mesh | None:
        """The mesh whose devices hold the points, if they are split over several (else None)."""
        return None if self.rows is None else self.rows.mesh

    @property
    def dim(self) -> int:
        return self.chunks.shape[-1]

    @property
    def chunk_size(self) -> int:
        return self.chunks.shape[1]

    @property
    def points(self) -> Float[Array, "N D"]:
        """The training points `(N, D)` (sharded as given)."""
        per_shard = self.num_points // _sharded.num_shards(self.rows)
        return _sharded.layout(lambda chunks: chunks.reshape(-1, self.dim)[:per_shard], self.rows, self.chunks)

    def _softmax_sum(self, x, inv_variance) -> _softmax.SoftmaxSum:
        """The sums over all points for queries `x (B, D)` at `1 / sigma^2` `(B,)`, by the selected implementation."""
        if _selection.use_kernel(self.implementation, self.chunks.dtype):
            return _sharded.stream(_fused, self.rows, (self.chunks, self.half_sq_norms), (x, inv_variance),
                                   inv_variance)
        return self._streamed_sum(x, inv_variance)

    def _streamed_sum(self, x, inv_variance) -> _softmax.SoftmaxSum:
        """Stream all points for queries `x (B, D)` at `1 / sigma^2` `(B,)`, in blocks of queries.

        A block holds at most `BLOCK_ELEMENTS / S` queries (its logits, `(block, S)`) and at most
        `BLOCK_ELEMENTS / D` (its queries and sums, `(block, D)`).
        """
        batch = x.shape[0]
        block = max(1, min(batch, BLOCK_ELEMENTS // self.chunk_size, BLOCK_ELEMENTS // self.dim))
        num_blocks = -(-batch // block)
        pad = num_blocks * block - batch
        x_blocks = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_blocks, block, self.dim)
        inv_blocks = jnp.pad(inv_variance, (0, pad), constant_values=1.0).reshape(num_blocks, block)

        def block_sum(queries):  # queries: (x (block, D), 1 / sigma^2 (block,)), the latter also the scale
            return _sharded.stream(_stream, self.rows, (self.chunks, self.half_sq_norms), queries, queries[1])

        sums = jax.lax.map(block_sum, (x_blocks, inv_blocks))
        return jax.tree_util.tree_map(lambda a: a.reshape(num_blocks * block, *a.shape[2:])[:batch], sums)

    def _denoise(self, x, sigma):
        return _softmax.weighted_mean(self._softmax_sum(x, 1.0 / jnp.square(sigma)))

    def _log_density(self, x, sigma):
        inv_variance = 1.0 / jnp.square(sigma)
        total = self._softmax_sum(x, inv_variance)
        # max_i (x . y_i - ||y_i||^2 / 2) - ||x||^2 / 2 = -||x - y_nearest||^2 / 2, formed before scaling
        nearest = total.max - 0.5 * jnp.sum(jnp.square(x), axis=-1)
        log_sum = nearest * inv_variance + jnp.log(total.total)
        return log_sum - math.log(self.num_points) + gaussian_log_normalizer(self.dim, sigma)


@functools.partial(jax.jit, static_argnames=("num_chunks", "chunk_size"))
def _layout(points, *, num_chunks: int, chunk_size: int):
    """Zero-pad `points (N, D)` to `(num_chunks, chunk_size, D)`; padded rows get norm +inf.

    Compiled, so the norms are one fused reduction: no `(N, D)` temporary beside the padded copy."""
    num_points, dim = points.shape
    pad = num_chunks * chunk_size - num_points
    chunks = jnp.pad(points, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, dim)
    half_sq_norms = 0.5 * jnp.sum(jnp.square(points), axis=-1)
    half_sq_norms = jnp.pad(half_sq_norms, (0, pad), constant_values=jnp.inf).reshape(num_chunks, chunk_size)
    return chunks, half_sq_norms


def _fused(chunks, half_sq_norms, x, inv_variance) -> _softmax.SoftmaxSum:
    """All points (padding included: its norm +inf weighs 0) in one fused kernel call, as a `SoftmaxSum`."""
    points = chunks.reshape(-1, chunks.shape[-1])
    fused = softmax_weighted_sum(x, points, -half_sq_norms.reshape(-1), inv_variance)
    return _softmax.from_mean(fused.max, fused.total, fused.mean)


def _stream(chunks, half_sq_norms, x, inv_variance) -> _softmax.SoftmaxSum:
    """Online softmax over all chunks for one block of queries `x (B, D)`."""

    def step(total, chunk):
        points, half_sq = chunk
        scores = matmul(x, points.T) - half_sq[None, :]  # (B, S); the logits are scores / sigma^2
        return _softmax.accumulate(total, scores, lambda p: matmul(p, points), inv_variance), None

    empty = _softmax.empty(x.shape[0], x.shape[1], jnp.result_type(x, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total
