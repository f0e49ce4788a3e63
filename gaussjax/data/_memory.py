"""Host arrays that JAX can use in place: 64-byte aligned allocation and zero-copy device views.

On the CPU backend `jax.device_put` uses a NumPy array's memory in place, without a copy,
when that memory is 64-byte aligned; NumPy's own large allocations are only 16-byte aligned,
so a dataset loaded the ordinary way is copied whole (N D 4 bytes) each time it enters JAX.
Loaders allocate their float32 images with `empty_aligned`, and the fitting code hands
read-only arrays (a `Dataset`'s) to JAX with `device_view`, so the training set exists
once in memory however many models are fitted to it.
"""

from __future__ import annotations

import jax
import numpy as np

ALIGNMENT = 64  # bytes: what XLA's CPU client needs to alias a host buffer


def empty_aligned(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts at a multiple of `ALIGNMENT` bytes (if not empty)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def device_view(array):
    """`array` as a `jax.Array` without a copy where that is safe, else `array` unchanged.

    A read-only NumPy array of floats of JAX's default precision (float32, or float64 under
    `jax_enable_x64`) is put on the default device: in place on a CPU backend when it is
    64-byte aligned (`empty_aligned`), a transfer otherwise. Read-only, so that nothing can
    change the values under the JAX array (a view's writable base is the caller's business).
    Anything else (a writable, integer or JAX array) is returned as is, for the caller's own
    conversion and checks.
    """
    if (
        isinstance(array, np.ndarray)
        and not array.flags.writeable
        and array.dtype.kind == "f"
        and array.dtype == jax.dtypes.canonicalize_dtype(array.dtype)
    ):
        return jax.device_put(array)
    return array
