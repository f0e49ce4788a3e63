"""The global batches of a run: which images each step sees (from the seed alone) and each process's share.

Step `t` (0-based) of a run seeded `s` trains on the images `batch_indices(s, t, B, N)`, drawn
uniformly with replacement: a function of the seed and the step only, so a run sees the same
global batches whatever its process and device count, and a resumed run the same batches as an
uninterrupted one. The global batch `(B, H, W, C)` is sharded along its first axis over the
mesh's `"data"` axis; each process gathers, from its own copy of the training set, only the rows
that its devices hold (a contiguous block of the global batch) and places them
(`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gaussjax.runs import TrainConfig

BATCH_STREAM = 0x6261_7463  # separates the batch draws from any other use of the seed by NumPy


def batch_indices(seed: int, step: int, batch_size: int, num_images: int) -> np.ndarray:
    """Indices into the training set `(batch_size,)` of the images of step `step` (0-based) of a run seeded `seed`.

    Uniform with replacement, from NumPy's PCG64 seeded with `(BATCH_STREAM, seed, step)`: the
    same on every process, device count and platform.
    """
    return np.random.default_rng([BATCH_STREAM, seed, step]).integers(0, num_images, batch_size)


def process_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
    """The rows of a global array of `global_shape`, sharded along its first axis, that this process's devices hold.

    They form one contiguous block when the mesh lists each process's devices together (`make_mesh`).
    """
    rows = [index[0] for index in sharding.addressable_devices_indices_map(global_shape).values() if index]
    spans = {(row.start or 0, global_shape[0] if row.stop is None else row.stop) for row in rows}
    start, stop = min(s for s, _ in spans), max(s for _, s in spans)
    if sum(s - r for r, s in spans) != stop - start:
        raise RuntimeError(f"this process's devices hold rows {sorted(spans)} of the batch, not one block")
    return slice(start, stop)


class Batches:
    """`batches(step)`: the global batch of `step` as a `jax.Array` `(B, H, W, C)`, sharded over the mesh.

    `images (N, H, W, C)` is this process's host copy of the training set (every process holds
    the same); with `mesh=None` (one device) the batch is an ordinary array on the default device.
    """

    def __init__(self, config: TrainConfig, images: np.ndarray, mesh: Mesh | None):
        self.seed, self.images = config.seed, images
        self.shape = (config.batch_size, *images.shape[1:])
        self.sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))
        self.rows = slice(None) if self.sharding is None else process_rows(self.sharding, self.shape)

    def __call__(self, step: int) -> jax.Array:
        indices = batch_indices(self.seed, step, self.shape[0], len(self.images))[self.rows]
        local = self.images[indices]
        if self.sharding is None:
            return jnp.asarray(local)
        return jax.make_array_from_process_local_data(self.sharding, local, self.shape)


def make_mesh() -> Mesh | None:
    """A 1-D data-parallel mesh (axis `"data"`) over every process's devices, each process's devices
    together (None for a single device in a single process)."""
    devices = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    return Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None
