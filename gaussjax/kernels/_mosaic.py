"""The TPU lowering (Pallas Mosaic): a grid over (blocks of queries, blocks of keys), sums in VMEM.

Grid `(B / b, N / n)` with dimension semantics `("parallel", "arbitrary")`: the query axis may
be split over cores in any order; the key axis is a reduction, visited in order, whose running
max `(b, 1)`, total `(b, 1)` and weighted sum `(b, F)` live in VMEM scratch from its first block
(`j = 0`: reset) to its last (normalized and written out). Each grid step multiplies whole
blocks: scores `q (b, K) . k (n, K)` and `p (b, n) . v (n, F)`. Block shapes follow
`_tiling.tpu_tiles` (multiples of 8 x 128).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from gaussjax.kernels import _online, _tiling

_CompilerParams = getattr(pltpu, "CompilerParams", None) or pltpu.TPUCompilerParams  # type: ignore[attr-defined]

DIMENSION_SEMANTICS = ("parallel", "arbitrary")  # queries, keys


def _kernel(q_ref, s_ref, k_ref, b_ref, v_ref, o_ref, m_ref, l_ref, max_ref, total_ref, acc_ref):
    step = pl.program_id(1)

    @pl.when(step == 0)
    def _reset():
        max_ref[...] = jnp.full(max_ref.shape, -jnp.inf, max_ref.dtype)
        total_ref[...] = jnp.zeros(total_ref.shape, total_ref.dtype)
        acc_ref[...] = jnp.zeros(acc_ref.shape, acc_ref.dtype)

    scores = _online.dot_nt(q_ref[...], k_ref[...]) + b_ref[...]  # (b, n)
    new_max, alpha, p = _online.rescale(max_ref[...], scores, s_ref[...])
    max_ref[...] = new_max
    total_ref[...] = alpha * total_ref[...] + jnp.sum(p, axis=1, keepdims=True)
    acc_ref[...] = alpha * acc_ref[...] + _online.dot_nn(p, v_ref[...])

    @pl.when(step == pl.num_programs(1) - 1)
    def _write():
        o_ref[...] = acc_ref[...] / total_ref[...]
        m_ref[...] = max_ref[...]
        l_ref[...] = total_ref[...]


def weighted_sum(queries, scale, keys, bias, values, *, interpret=False):
    """`(mean (B, F), max (B,), total (B,))` of the softmax-weighted sum (`gaussjax.kernels`), on a TPU.

    Arguments as `_triton.weighted_sum`; `interpret` may be a `pltpu.InterpretParams` (the TPU
    interpreter, which can randomise the order of the parallel grid axis).
    """
    (batch, key_dim), (num_keys, value_dim) = queries.shape, values.shape
    tiles = _tiling.tpu_tiles(batch, num_keys, key_dim, value_dim, queries.dtype.itemsize)
    rows, steps, kp, fp = tiles
    padded_batch = _tiling.round_up(batch, rows)
    padded_keys = _tiling.round_up(num_keys, steps)
    dtype = queries.dtype
    q, s, k, b, v = _tiling.pad_operands(queries, scale, keys, bias, values, (padded_batch, padded_keys, kp, fp))

    def by_query(width):
        return pl.BlockSpec((rows, width), lambda i, j: (i, 0))

    mean, running_max, total = pl.pallas_call(
        _kernel,
        out_shape=[
            jax.ShapeDtypeStruct((padded_batch, fp), dtype),
            jax.ShapeDtypeStruct((padded_batch, 1), dtype),
            jax.ShapeDtypeStruct((padded_batch, 1), dtype),
        ],
        grid=(padded_batch // rows, padded_keys // steps),
        in_specs=[
            by_query(kp),
            by_query(1),
            pl.BlockSpec((steps, kp), lambda i, j: (j, 0)),
            pl.BlockSpec((1, steps), lambda i, j: (0, j)),
            pl.BlockSpec((steps, fp), lambda i, j: (j, 0)),
        ],
        out_specs=[by_query(fp), by_query(1), by_query(1)],
        scratch_shapes=[
            pltpu.VMEM((rows, 1), dtype),
            pltpu.VMEM((rows, 1), dtype),
            pltpu.VMEM((rows, fp), dtype),
        ],
        compiler_params=_CompilerParams(
            dimension_semantics=DIMENSION_SEMANTICS, vmem_limit_bytes=_tiling.TPU_VMEM_LIMIT_BYTES
        ),
        interpret=interpret,
        name="softmax_weighted_sum",
    )(q, s, k, b, v)
    return mean[:batch, :value_dim], running_max[:batch, 0], total[:batch, 0]
