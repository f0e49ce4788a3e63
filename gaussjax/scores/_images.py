"""Helpers shared by the local (patch) models: chunks of training images, query blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array


def chunk_rows(rows: Array, chunk_size: int) -> Array:
    """Zero-pad `rows` to a multiple of `chunk_size` rows and cut them into chunks: `(N, ...)` -> `(K, S, ...)`."""
    num_chunks = -(-rows.shape[0] // chunk_size)
    pad = num_chunks * chunk_size - rows.shape[0]
    padded = jnp.pad(rows, ((0, pad),) + ((0, 0),) * (rows.ndim - 1))
    return padded.reshape(num_chunks, chunk_size, *rows.shape[1:])


def map_query_blocks(fn, block: int, *queries: Array) -> Array:
    """`fn(*queries)` evaluated on blocks of `block` rows (a `lax.map`), rows `(B, ...)` in and out.

    The last block is padded by repeating the first row (valid input), and the padding is dropped.
    """
    batch = queries[0].shape[0]
    block = max(1, min(batch, block))
    num_blocks = -(-batch // block)
    pad = num_blocks * block - batch

    def blocks(q):
        q = jnp.concatenate([q, jnp.broadcast_to(q[:1], (pad, *q.shape[1:]))]) if pad else q
        return q.reshape(num_blocks, block, *q.shape[1:])

    out = jax.lax.map(lambda qs: fn(*qs), tuple(blocks(q) for q in queries))
    return out.reshape(num_blocks * block, *out.shape[2:])[:batch]
