"""The GPU lowering (Pallas Triton): a program per (block of queries, split of the keys), a loop over key blocks.

Grid `(B / b, P)`: program `(i, p)` holds queries `q[i b : (i + 1) b]` and streams split `p` of
the keys, `n` at a time (`_tiling.gpu_tiles`; the keys are split so that a small batch still
fills the device, flash-decoding style). A step forms the scores `q . k_j + c_j (b, n)` chunk by
chunk along `K`, updates the running max and total (`_online.rescale`) and, chunk by chunk along
`F`, the weighted sum, which lives in the program's output block (in global memory, cached in L2:
it may be D = 3,072 wide). The P partial sums are merged with XLA ops (`_merge_splits`).
Interpreted on CPU (`interpret=True`), the same kernel is the library's portable fallback.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from gaussjax.kernels import _online, _tiling

try:  # jax 0.10-0.11 (the Triton backend is deprecated from 0.11; Mosaic GPU is its successor)
    from jax.experimental.pallas import triton as _plgpu

    _CompilerParams = getattr(_plgpu, "CompilerParams", None) or _plgpu.TritonCompilerParams  # type: ignore[attr-defined]
    AVAILABLE = True
except (ImportError, AttributeError):  # pragma: no cover - a jax without the Triton backend
    _plgpu = None  # type: ignore[assignment]
    AVAILABLE = False

NUM_STAGES = 2  # software pipelining depth of the key loop
_SQUEEZED = getattr(pl, "squeezed", None)  # a block dimension of size 1 that the kernel does not see (None before)


def _loop(count: int, body, init=None):
    """`lax.fori_loop(0, count, body, init)`; a plain call for one iteration."""
    if count == 1:
        return body(0, init)
    return jax.lax.fori_loop(0, count, body, init)


def _block(index, size: int):
    """`pl.ds` of block `index` of `size`; a traced index is marked a multiple of `size` (aligned loads)."""
    start = index * size
    return pl.ds(start if isinstance(start, int) else pl.multiple_of(start, size), size)


def _kernel(q_ref, s_ref, k_ref, b_ref, v_ref, o_ref, m_ref, l_ref, *, keys: int, steps: int, key_chunk: int,
            value_chunk: int, barrier: bool):
    """Program `(i, p)`: queries block `i` against the `steps` key blocks of split `p`; unnormalized sums out."""
    queries, dtype = q_ref.shape[0], o_ref.dtype
    key_chunks, value_chunks = q_ref.shape[1] // key_chunk, o_ref.shape[1] // value_chunk
    first = pl.program_id(1) * steps
    scale = s_ref[...]  # (b, 1)

    def sync():  # loads of the output block after stores of other threads: order them within the program
        if barrier:
            _plgpu.debug_barrier()

    def columns(c):  # of the values and the output
        return _block(c, value_chunk)

    def features(c):  # of the queries and keys
        return _block(c, key_chunk)

    def clear(c, carry):
        o_ref[:, columns(c)] = jnp.zeros((queries, value_chunk), dtype)
        return carry

    _loop(value_chunks, clear)
    sync()

    def step(j, carry):
        old_max, total = carry
        rows = _block(first + j, keys)

        def partial_scores(c, acc):
            return acc + _online.dot_nt(q_ref[:, features(c)], k_ref[rows, features(c)])

        scores = _loop(key_chunks, partial_scores, jnp.zeros((queries, keys), dtype)) + b_ref[:, rows]
        new_max, alpha, p = _online.rescale(old_max, scores, scale)

        def accumulate(c, carry):
            o_ref[:, columns(c)] = alpha * o_ref[:, columns(c)] + _online.dot_nn(p, v_ref[rows, columns(c)])
            return carry

        _loop(value_chunks, accumulate)
        sync()
        return new_max, alpha * total + jnp.sum(p, axis=1, keepdims=True)

    start = (jnp.full((queries, 1), -jnp.inf, dtype), jnp.zeros((queries, 1), dtype))
    running_max, total = _loop(steps, step, start)
    m_ref[...] = running_max
    l_ref[...] = total


def weighted_sum(queries, scale, keys, bias, values, *, interpret=False):
    """`(mean (B, F), max (B,), total (B,))` of the softmax-weighted sum (`gaussjax.kernels`), on a GPU.

    `queries (B, K)`, `scale (B,)`, `keys (N, K)`, `bias (N,)`, `values (N, F)`, all of one
    dtype. `interpret=True` runs the kernel on any backend through Pallas' interpreter.
    """
    (batch, key_dim), (num_keys, value_dim) = queries.shape, values.shape
    tiles = _tiling.gpu_tiles(batch, num_keys, key_dim, value_dim)
    rows = tiles.queries
    padded_batch = _tiling.round_up(batch, rows)
    kp, fp = _tiling.round_up(key_dim, tiles.key_chunk), _tiling.round_up(value_dim, tiles.value_chunk)
    padded_keys = tiles.splits * tiles.steps * tiles.keys
    dtype = queries.dtype
    q, s, k, b, v = _tiling.pad_operands(queries, scale, keys, bias, values, (padded_batch, padded_keys, kp, fp))

    def by_query(width):
        return pl.BlockSpec((rows, width), lambda i, p: (i, 0))

    def by_split(width):
        return pl.BlockSpec((_SQUEEZED, rows, width), lambda i, p: (p, i, 0))

    def whole(array):
        return pl.BlockSpec(array.shape, lambda i, p: (0, 0))

    def per_split(width):
        return jax.ShapeDtypeStruct((tiles.splits, padded_batch, width), dtype)

    kernel = functools.partial(_kernel, keys=tiles.keys, steps=tiles.steps, key_chunk=tiles.key_chunk,
                               value_chunk=tiles.value_chunk, barrier=not interpret)
    params = None if interpret or not AVAILABLE else _CompilerParams(num_warps=tiles.num_warps, num_stages=NUM_STAGES)
    weighted, running_max, total = pl.pallas_call(
        kernel,
        out_shape=[per_split(fp), per_split(1), per_split(1)],
        grid=(padded_batch // rows, tiles.splits),
        in_specs=[by_query(kp), by_query(1), whole(k), whole(b), whole(v)],
        out_specs=[by_split(fp), by_split(1), by_split(1)],
        compiler_params=params,
        interpret=interpret,
        name="softmax_weighted_sum",
    )(q, s, k, b, v)
    return _merge_splits(weighted[:, :batch, :value_dim], running_max[:, :batch, 0], total[:, :batch, 0], scale)


def _merge_splits(weighted, running_max, total, scale):
    """Merge the splits' sums `(P, B, F)`, `(P, B)`, `(P, B)` (as `_softmax.merge`, n-ary) into mean, max, total."""
    new_max = jnp.max(running_max, axis=0)
    rescale = jnp.exp(jnp.minimum(scale[None, :] * (running_max - new_max[None, :]), 0.0))  # 0: a split without keys
    total = jnp.sum(rescale * total, axis=0)
    return jnp.sum(rescale[..., None] * weighted, axis=0) / total[:, None], new_max, total
