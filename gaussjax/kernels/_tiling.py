"""Block shapes per target: what each lowering's hardware rules allow, and the padding they imply.

A kernel call on `B` queries, `N` keys of `K` features and values of `F` features is cut into
blocks; each axis is zero-padded to a whole number of blocks (padded keys get bias `-inf`, so
they weigh exactly 0; padded queries are dropped from the result).

- GPU (Triton): every block dimension is a power of 2 and at least 16 (`tt.dot`'s smallest
  tile). A program holds `queries` queries and streams one split of the keys, `keys` at a
  time, multiplying `key_chunk` features at a time along `K` and `value_chunk` along `F`, so no tile grows
  with D; the keys are split so that the grid has about `GPU_PROGRAMS` programs.
- TPU (Mosaic): the last two dimensions of a block are multiples of 8 x 128 (sublanes x lanes)
  or the whole axis. `K` and `F` are padded to multiples of 128 and taken whole; queries come
  `queries` (a multiple of 8) at a time, keys `keys` (a multiple of 128) at a time,
  as many as keep the double-buffered blocks within `TPU_BLOCK_BYTES`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

GPU_MAX_BLOCK = 64  # queries, keys and features per tile on a GPU
GPU_MIN_BLOCK = 16  # tt.dot's smallest tile edge
GPU_PROGRAMS = 264  # programs a call aims at: two per streaming multiprocessor of an H100/H200 (132)
TPU_SUBLANES, TPU_LANES = 8, 128
TPU_MAX_QUERIES, TPU_MAX_KEYS = 128, 512
TPU_BLOCK_BYTES = 4 * 2**20  # double-buffered key and value blocks; queries and accumulators as much again
TPU_VMEM_LIMIT_BYTES = 32 * 2**20  # the scoped VMEM a call asks for (the default is 16 MiB on some chips)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _power_of_2_between(n: int, low: int, high: int) -> int:
    """The smallest power of 2 at least `n`, clamped to `[low, high]`."""
    return min(max(1 << max(n - 1, 0).bit_length(), low), high)


class GpuTiles(NamedTuple):
    queries: int  # queries per program (power of 2)
    keys: int  # keys per step of a program's loop (power of 2)
    key_chunk: int  # features of K multiplied at a time (power of 2); K is padded to a multiple of it
    value_chunk: int  # features of F accumulated at a time (power of 2); F is padded to a multiple of it
    splits: int  # programs per block of queries, each over its own steps x keys keys
    steps: int  # key blocks per split
    num_warps: int


def gpu_tiles(batch: int, num_keys: int, key_dim: int, value_dim: int) -> GpuTiles:
    """Triton tiles for `B, N, K, F`: powers of 2 between 16 and 64, and the split of the keys.

    The keys are split into as many parts as bring the grid to about `GPU_PROGRAMS` programs
    (each part at least one key block, none empty); N is padded to `splits * steps * keys`.
    """
    queries = _power_of_2_between(batch, GPU_MIN_BLOCK, GPU_MAX_BLOCK)
    keys = _power_of_2_between(num_keys, GPU_MIN_BLOCK, GPU_MAX_BLOCK)
    key_chunk = _power_of_2_between(key_dim, GPU_MIN_BLOCK, GPU_MAX_BLOCK)
    value_chunk = _power_of_2_between(value_dim, GPU_MIN_BLOCK, GPU_MAX_BLOCK)
    blocks = -(-num_keys // keys)
    wanted = max(1, min(blocks, GPU_PROGRAMS // -(-batch // queries)))
    steps = -(-blocks // wanted)
    splits = -(-blocks // steps)  # every split holds at least one key block with real keys
    return GpuTiles(queries, keys, key_chunk, value_chunk, splits, steps, num_warps=4 if queries * keys <= 2048 else 8)


class TpuTiles(NamedTuple):
    queries: int  # queries per block (multiple of 8)
    keys: int  # keys per block (multiple of 128)
    key_dim: int  # K padded to a multiple of 128 (whole axis)
    value_dim: int  # F padded to a multiple of 128 (whole axis)


def tpu_tiles(batch: int, num_keys: int, key_dim: int, value_dim: int, itemsize: int = 4) -> TpuTiles:
    """Mosaic blocks for `B, N, K, F` (itemsize: bytes per element)."""
    key_dim, value_dim = round_up(key_dim, TPU_LANES), round_up(value_dim, TPU_LANES)
    row_bytes = 2 * (key_dim + value_dim) * itemsize  # one key and its value, double-buffered
    keys = max(TPU_LANES, min(TPU_MAX_KEYS, TPU_BLOCK_BYTES // row_bytes // TPU_LANES * TPU_LANES))
    keys = min(keys, round_up(num_keys, TPU_LANES))
    query_bytes = (2 * key_dim + 3 * value_dim) * itemsize  # a query (double-buffered), its output and sums
    queries = max(TPU_SUBLANES, min(TPU_MAX_QUERIES, TPU_BLOCK_BYTES // query_bytes // TPU_SUBLANES * TPU_SUBLANES))
    queries = min(queries, round_up(batch, TPU_SUBLANES))
    return TpuTiles(queries, keys, key_dim, value_dim)


def pad_operands(queries, scale, keys, bias, values, padded: tuple[int, int, int, int]):
    """The kernel's operands zero-padded to `padded = (B', N', K', F')`: `(q (B', K'), s (B', 1), k (N', K'),
    c (1, N'), v (N', F'))`. Padded queries get scale 1, padded keys bias `-inf` (weight exactly 0)."""
    padded_batch, padded_keys, key_dim, value_dim = padded
    batch, num_keys = queries.shape[0], keys.shape[0]
    q = jnp.pad(queries, ((0, padded_batch - batch), (0, key_dim - queries.shape[1])))
    s = jnp.pad(scale, (0, padded_batch - batch), constant_values=1)[:, None]
    k = jnp.pad(keys, ((0, padded_keys - num_keys), (0, key_dim - keys.shape[1])))
    c = jnp.pad(bias, (0, padded_keys - num_keys), constant_values=-jnp.inf)[None, :]
    v = jnp.pad(values, ((0, padded_keys - num_keys), (0, value_dim - values.shape[1])))
    return q, s, k, c, v
