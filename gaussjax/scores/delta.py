"""The exact score of a training set: a mixture of point masses (paper Eq. 9-11; App. D.7)."""

from __future__ import annotations

import functools
import math
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding
from jaxtyping import Array, ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_positive_int
from gaussjax._errors import InputValueError
from gaussjax._precision import matmul
from gaussjax.scores import _softmax
from gaussjax.scores._base import Density, gaussian_log_normalizer

MIN_CHUNK, MAX_CHUNK = 256, 16384


def auto_chunk_size(num_points: int, dim: int) -> int:
    """Points per chunk: about `BLOCK_ELEMENTS / D`, evened out so padding is at most 7 rows."""
    target = min(max(BLOCK_ELEMENTS // dim, MIN_CHUNK), MAX_CHUNK)
    num_chunks = -(-num_points // target)
    per_chunk = -(-num_points // num_chunks)
    return min(-(-per_chunk // 8) * 8, num_points)


def _sharded_axis(points) -> tuple | None:
    """`(mesh, axis_name)` if `points` is split by rows over a mesh axis of several devices."""
    sharding = getattr(points, "sharding", None)
    if not isinstance(sharding, NamedSharding) or len(sharding.device_set) < 2:
        return None
    spec = tuple(sharding.spec) + (None,) * 2
    if spec[1] is not None:
        raise InputValueError(
            f"`points` is sharded as {sharding.spec}; shard its rows only, e.g. PartitionSpec('data', None)"
        )
    if spec[0] is None:  # replicated: every device holds all points
        return None
    axis = spec[0] if isinstance(spec[0], str) else spec[0][0]
    return sharding.mesh, axis


class DeltaMixture(Density):
    """(1/N) sum_i delta(y - y_i): the exact score of the training set {y_i} (Eq. 9-11).

        D(x, sigma) = sum_i w_i y_i,   w_i = softmax_i((x . y_i - ||y_i||^2 / 2) / sigma^2)

    (the `-||x||^2 / 2` part of `-||x - y_i||^2 / 2` is the same for every i and cancels).
    The points are streamed in chunks with an online log-sum-exp (`_softmax.SoftmaxSum`),
    two matmuls per chunk (at full float32 precision on every backend, see
    `gaussjax._precision`), so no (queries x N) array exists and peak memory stays
    bounded for any N. The chunked layout (and the norms `||y_i||^2 / 2`) is prepared
    once here. If `points` is a `jax.Array` sharded by rows over a mesh, each device
    streams its own rows and the partial sums are merged across devices.

    Args:
        points: `(N, D)` training points.
        chunk_size: points per chunk (static; default: about 4M elements per chunk).
    """

    chunks: Float[Array, "C S D"]  # rows past N are zero padding
    half_sq_norms: Float[Array, "C S"]  # ||y_i||^2 / 2, +inf on padding (weight exactly 0)
    num_points: int = eqx.field(static=True)
    mesh: object = eqx.field(static=True, default=None)
    axis: str | None = eqx.field(static=True, default=None)

    def __init__(self, points: Float[ArrayLike, "N D"], chunk_size: int | None = None):
        sharded, sharding = _sharded_axis(points), getattr(points, "sharding", None)
        if sharded is None and isinstance(sharding, NamedSharding):
            # replicated, or a one-device mesh: an ordinary array on one of its devices
            device = min(sharding.device_set, key=operator.attrgetter("id"))
            points = jax.device_put(points, SingleDeviceSharding(device))
        points = check_data_matrix("points", points)
        num_points, dim = points.shape
        if chunk_size is None:
            chunk_size = auto_chunk_size(num_points, dim)
        chunk_size = min(check_positive_int("chunk_size", chunk_size), num_points)  # no chunk past N
        groups = 1 if sharded is None else sharded[0].shape[sharded[1]]
        num_chunks = groups * -(-num_points // (groups * chunk_size))
        layout = functools.partial(_layout, num_chunks=num_chunks, chunk_size=chunk_size)
        if sharded is not None:
            layout = jax.jit(layout, out_shardings=NamedSharding(sharded[0], PartitionSpec(sharded[1])))
        chunks, half_sq_norms = layout(points)
        self.chunks = chunks
        self.half_sq_norms = half_sq_norms
        self.num_points = num_points
        self.mesh = None if sharded is None else sharded[0]
        self.axis = None if sharded is None else sharded[1]

    @property
    def dim(self) -> int:
        return self.chunks.shape[-1]

    @property
    def chunk_size(self) -> int:
        return self.chunks.shape[1]

    @property
    def points(self) -> Float[Array, "N D"]:
        """The training points `(N, D)`."""
        return self.chunks.reshape(-1, self.dim)[: self.num_points]

    def _softmax_sum(self, x, inv_variance) -> _softmax.SoftmaxSum:
        """Stream all points for queries `x (B, D)` at `1 / sigma^2` `(B,)`, in blocks of queries."""
        batch = x.shape[0]
        block = max(1, min(batch, BLOCK_ELEMENTS // self.chunk_size))
        num_blocks = -(-batch // block)
        pad = num_blocks * block - batch
        x_blocks = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_blocks, block, self.dim)
        inv_blocks = jnp.pad(inv_variance, (0, pad), constant_values=1.0).reshape(num_blocks, block)
        if self.mesh is None:
            sums = jax.lax.map(lambda q: _stream(self.chunks, self.half_sq_norms, *q), (x_blocks, inv_blocks))
        else:
            stream = functools.partial(_stream_sharded, mesh=self.mesh, axis=self.axis)
            sums = jax.lax.map(lambda q: stream(self.chunks, self.half_sq_norms, *q), (x_blocks, inv_blocks))
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


def _layout(points, *, num_chunks: int, chunk_size: int):
    """Zero-pad `points (N, D)` to `(num_chunks, chunk_size, D)`; padded rows get norm +inf."""
    num_points, dim = points.shape
    pad = num_chunks * chunk_size - num_points
    chunks = jnp.pad(points, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, dim)
    half_sq_norms = 0.5 * jnp.sum(jnp.square(points), axis=-1)
    half_sq_norms = jnp.pad(half_sq_norms, (0, pad), constant_values=jnp.inf).reshape(num_chunks, chunk_size)
    return chunks, half_sq_norms


def _stream(chunks, half_sq_norms, x, inv_variance) -> _softmax.SoftmaxSum:
    """Online softmax over all chunks for one block of queries `x (B, D)`."""

    def step(total, chunk):
        points, half_sq = chunk
        scores = matmul(x, points.T) - half_sq[None, :]  # (B, S); the logits are scores / sigma^2
        return _softmax.accumulate(total, scores, lambda p: matmul(p, points), inv_variance), None

    empty = _softmax.empty(x.shape[0], x.shape[1], jnp.result_type(x, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total


def _stream_sharded(chunks, half_sq_norms, x, inv_variance, *, mesh, axis) -> _softmax.SoftmaxSum:
    """`_stream` on each device's own chunks, then partial sums merged across the mesh axis."""
    spec, replicated = PartitionSpec(axis), PartitionSpec()

    def local(chunks, half_sq_norms, x, inv_variance):
        partial = _stream(chunks, half_sq_norms, x, inv_variance)
        gathered = jax.lax.all_gather(partial, axis)  # (devices, ...) per field
        total = jax.tree_util.tree_map(lambda a: a[0], gathered)
        for i in range(1, mesh.shape[axis]):
            total = _softmax.merge(total, jax.tree_util.tree_map(operator.itemgetter(i), gathered), inv_variance)
        return total

    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, replicated, replicated), out_specs=replicated, check_vma=False
    )(chunks, half_sq_norms, x, inv_variance)
