"""Training data split by rows over a mesh: each device streams its own rows, one exact merge across devices.

A model built from a `jax.Array` whose rows are split over one or more axes of a mesh (of one
process's devices, or of every process's devices in a `jax.distributed` job) keeps each device's
rows on that device: the chunked layout is made per device (`layout`: no row moves between
devices), each device streams its own chunks against the queries, replicated on every device,
and the partial softmax sums are merged across the devices (`stream`, with `_softmax.merge_across`).
JAX's SPMD runs the same program on every process, so each process gets the whole result. An
array replicated over its mesh is used as an ordinary array on one of this process's devices
(`local_copy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from gaussjax._errors import InputValueError
from gaussjax.scores import _softmax


class RowSharding(NamedTuple):
    """The rows of an array split over the mesh axes `axes` of `mesh` (replicated over any other axis)."""

    mesh: Mesh
    axes: tuple[str, ...]

    @property
    def num_shards(self) -> int:
        """The number of row blocks, one per position along `axes`."""
        return math.prod(self.mesh.shape[axis] for axis in self.axes)

    @property
    def spec(self) -> PartitionSpec:
        return PartitionSpec(self.axes)


def num_shards(rows: RowSharding | None) -> int:
    """The number of row blocks laid out separately: `rows.num_shards`, or 1 for an ordinary array."""
    return 1 if rows is None else rows.num_shards


def row_sharding(name: str, array) -> RowSharding | None:
    """How `array`'s rows are split over a mesh of several devices; None if they are not (an ordinary
    array, one device, or replicated). Raises `ValueError` naming `name` if another axis is split."""
    sharding = getattr(array, "sharding", None)
    if not isinstance(sharding, NamedSharding) or len(sharding.device_set) < 2:
        return None
    spec = tuple(sharding.spec) + (None,) * len(array.shape)
    if any(entry is not None for entry in spec[1 : len(array.shape)]):
        raise InputValueError(
            f"`{name}` is sharded as {sharding.spec}; shard its rows only, e.g. PartitionSpec('data', None)"
        )
    if spec[0] is None or not isinstance(sharding.mesh, Mesh):
        return None
    return RowSharding(sharding.mesh, (spec[0],) if isinstance(spec[0], str) else tuple(spec[0]))


def local_copy(array):
    """`array` itself, or, if it is replicated over a mesh (`NamedSharding`), its copy on this process's
    device of lowest id: an ordinary array, on which a model needs no collective."""
    sharding = getattr(array, "sharding", None)
    if isinstance(sharding, NamedSharding) and array.is_fully_replicated:
        shard = min(array.addressable_shards, key=lambda shard: shard.device.id)
        return jax.device_put(shard.data, SingleDeviceSharding(shard.device))  # (without the mesh in its type)
    return array


def layout(fn: Callable, rows: RowSharding | None, *arrays):
    """`fn(*arrays)`, applied to each device's own rows when `rows` is given (its outputs split the same way)."""
    if rows is None:
        return fn(*arrays)
    specs = (rows.spec,) * len(arrays)
    return jax.jit(jax.shard_map(fn, mesh=rows.mesh, in_specs=specs, out_specs=rows.spec))(*arrays)


def stream(
    fn: Callable[..., _softmax.SoftmaxSum],
    rows: RowSharding | None,
    sharded: tuple,
    queries: tuple,
    scale: jax.Array | None,
) -> _softmax.SoftmaxSum:
    """`fn(*sharded, *queries)`, a `SoftmaxSum` over the components in `sharded`, merged over every device.

    With `rows` given, each device runs `fn` on its own rows of the arrays `sharded` (split by
    `rows`) and the whole `queries` (and `scale`, the inverse temperature `fn` accumulated at), and
    the partial sums are merged across `rows.axes` (`_softmax.merge_across`): the result, the same
    on every device, is the sum over all components. Without `rows`, `fn` runs on the whole arrays.
    """
    if rows is None:
        return fn(*sharded, *queries)

    def local(sharded, queries, scale):
        return _softmax.merge_across(fn(*sharded, *queries), rows.axes, scale)

    replicated = PartitionSpec()
    # queries split over the mesh (e.g. a global array of queries) are gathered on every device first
    queries, scale = jax.sharding.reshard((queries, scale), NamedSharding(rows.mesh, replicated))
    specs = (tuple(rows.spec for _ in sharded), tuple(replicated for _ in queries), replicated)
    return jax.shard_map(local, mesh=rows.mesh, in_specs=specs, out_specs=replicated, check_vma=False)(
        sharded, queries, scale
    )
