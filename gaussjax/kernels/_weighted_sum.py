"""`softmax_weighted_sum`: the fused kernel's entry point, one lowering per platform, differentiable in the queries.

    score_ij = q_i . k_j + c_j,   w_ij = softmax_j(s_i score_ij),   mean_i = sum_j w_ij v_j

for queries `q (B, K)`, keys `k (N, K)`, biases `c (N,)`, values `v (N, F)` (the keys themselves
if not given) and inverse temperatures `s` (scalar or `(B,)`, positive). The delta score is the
case `q = x`, `k = v = y`, `c = -||y||^2 / 2`, `s = 1 / sigma^2`.

Lowering (`jax.lax.platform_dependent`, chosen when the computation is lowered): Pallas Triton on
CUDA GPUs (`_triton`), Pallas Mosaic on TPUs (`_mosaic`), the Triton kernel run by Pallas'
interpreter elsewhere (CPU: slow, for tests and debugging).

Derivatives (`jax.custom_jvp`, so `jax.jvp`, `jax.jacfwd` and `jax.grad` all work): in `q` and
`s` only. With the weights fixed by the primal, the tangent of a logit is
`t_ij = ds_i (score_ij - max_i) + s_i (dq_i . k_j)`, and

    d mean_i = Cov_w(t_i, v) = sum_j w_ij (t_ij - E_w[t_i]) v_j

(for the delta denoiser, `dq` alone: `Cov_w[y] dq / sigma^2`). It is computed with XLA ops,
streamed over blocks of keys like the XLA path (so it is linear and transposable for `grad`),
with `t` centred per query (the `ds` term at the max, the `dq` term by `s_i dq_i . E_w[k]`, `E_w[k]`
computed by the same kernel pass), so that nothing cancels when one key dominates (small sigma).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._errors import InputValueError
from gaussjax._precision import matmul
from gaussjax.kernels import _mosaic, _triton


class WeightedSum(NamedTuple):
    """The result of `softmax_weighted_sum` for B queries."""

    mean: Float[Array, "B F"]  # sum_j w_ij v_j
    max: Float[Array, " B"]  # max_j score_ij, in score units (not times s); a constant for differentiation
    total: Float[Array, " B"]  # sum_j exp(s_i (score_ij - max_i)), >= 1; log-normalizer: s max + log(total)


def softmax_weighted_sum(
    queries: Float[ArrayLike, "B K"],
    keys: Float[ArrayLike, "N K"],
    bias: Float[ArrayLike, " N"],
    scale: Float[ArrayLike, "*#B"],
    values: Float[ArrayLike, "N F"] | None = None,
) -> WeightedSum:
    """The softmax-weighted sum `sum_j softmax_j(s_i (q_i . k_j + c_j)) v_j`, fused: no `(B, N)` array is formed.

    Args:
        queries: `(B, K)`.
        keys: `(N, K)`, `N >= 1`.
        bias: `(N,)` per-key bias `c_j`; `-inf` removes a key (weight exactly 0). At least one
            key of each query must have a finite score.
        scale: the inverse temperature `s > 0`, a scalar or one per query `(B,)`, finite.
        values: `(N, F)`; default: the keys (`F = K`).

    Returns:
        `WeightedSum(mean (B, F), max (B,), total (B,))`, in the inputs' (promoted) dtype.
        `log sum_j exp(s_i score_ij) = s_i max_i + log(total_i)`.

    Raises:
        ValueError: if the shapes do not match the above.

    Derivatives are defined in `queries` and `scale` (any order of `jvp`/`grad` of first order);
    a derivative in `keys`, `bias` or `values` raises `ValueError`.
    """
    q, k, c, v, s = _checked(queries, keys, bias, values, scale)
    if q.shape[0] == 0:
        return WeightedSum(jnp.zeros((0, v.shape[1]), q.dtype), jnp.zeros((0,), q.dtype), jnp.zeros((0,), q.dtype))
    mean, running_max, total = _fused(q, s, k, c, k if values is None else v, values is None)
    return WeightedSum(mean, running_max, total)


def _checked(queries, keys, bias, values, scale):
    """The arguments as arrays of one float dtype, `scale` broadcast to `(B,)`; `ValueError` naming a misfit."""
    arrays = [jnp.asarray(a) for a in (queries, keys, bias, keys if values is None else values, scale)]
    dtype = jnp.result_type(*arrays)
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)
    q, k, c, v, s = (a.astype(dtype) for a in arrays)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise InputValueError(f"`queries` (B, K) and `keys` (N, K) must share K, got {q.shape} and {k.shape}")
    if k.shape[0] == 0:
        raise InputValueError("`keys` must hold at least one key, got shape " + str(k.shape))
    if c.shape != (k.shape[0],):
        raise InputValueError(f"`bias` must have shape (N,) = ({k.shape[0]},), got {c.shape}")
    if v.ndim != 2 or v.shape[0] != k.shape[0]:
        raise InputValueError(f"`values` must have shape (N, F) with N = {k.shape[0]}, got {v.shape}")
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != q.shape[0]):
        raise InputValueError(f"`scale` must be a scalar or have shape (B,) = ({q.shape[0]},), got {s.shape}")
    return q, k, c, v, jnp.broadcast_to(s, (q.shape[0],))


def _lowered(q, s, k, c, v):
    """The kernel for the platform the computation is lowered for."""
    interpreted = functools.partial(_triton.weighted_sum, interpret=True)
    return jax.lax.platform_dependent(
        q, s, k, c, v,
        cpu=interpreted,
        cuda=_triton.weighted_sum if _triton.AVAILABLE else interpreted,
        tpu=_mosaic.weighted_sum,
        default=interpreted,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _fused(q, s, k, c, v, values_are_keys: bool):
    del values_are_keys
    return _lowered(q, s, k, c, v)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


@functools.partial(_fused.defjvp, symbolic_zeros=True)
def _fused_jvp(values_are_keys, primals, tangents):
    q, s, k, c, v = primals
    dq, ds, dk, dc, dv = tangents
    if not (_is_zero(dk) and _is_zero(dc) and _is_zero(dv)):
        raise InputValueError(
            "the fused softmax-weighted sum (implementation='pallas') is differentiable in the queries and sigma "
            "only, not in the keys, bias or values (the training data): use implementation='xla' for those"
        )
    dq = jnp.zeros_like(q) if _is_zero(dq) else dq
    ds = jnp.zeros_like(s) if _is_zero(ds) else ds
    if values_are_keys:
        mean, running_max, total = _lowered(q, s, k, c, v)
        centre = mean
    else:  # E_w[k] beside the mean, from the same pass
        both, running_max, total = _lowered(q, s, k, c, jnp.concatenate([v, k], axis=1))
        mean, centre = both[:, : v.shape[1]], both[:, v.shape[1] :]
    d_mean, d_total = _tangent(q, s, k, c, v, running_max, total, mean, centre, dq, ds)
    return (mean, running_max, total), (d_mean, jnp.zeros_like(running_max), d_total)


def _tangent(q, s, k, c, v, running_max, total, mean, centre, dq, ds):
    """`(d mean (B, F), d total (B,))` for tangents `dq (B, K)`, `ds (B,)`; the max is held fixed.

    Streamed over blocks of keys with XLA ops: `p_ij = exp(s_i (score_ij - max_i))` (the primal's
    weights times `total_i`), `t_ij = ds_i (score_ij - max_i) + s_i (dq_i . k_j - r_i)` with
    `r_i = dq_i . E_w[k]_i`, `A_i = sum_j p_ij t_ij v_j`, `T_i = sum_j p_ij t_ij`; then
    `d mean = (A - mean T) / total` and `d total = T + s r total`.
    """
    batch, num_keys = q.shape[0], k.shape[0]
    block = max(1, min(num_keys, BLOCK_ELEMENTS // max(batch, k.shape[1], v.shape[1])))
    num_blocks = -(-num_keys // block)
    pad = num_blocks * block - num_keys
    k_blocks = jnp.pad(k, ((0, pad), (0, 0))).reshape(num_blocks, block, -1)
    c_blocks = jnp.pad(c, (0, pad), constant_values=-jnp.inf).reshape(num_blocks, block)
    v_blocks = jnp.pad(v, ((0, pad), (0, 0))).reshape(num_blocks, block, -1)
    r = jnp.sum(dq * centre, axis=-1)
    shift = running_max[:, None]

    def step(sums, blocks):
        keys, bias, values = blocks
        below_max = matmul(q, keys.T) + bias[None, :] - shift  # score - max, <= 0 (-inf for removed keys)
        p = jnp.exp(jnp.minimum(s[:, None] * below_max, 0.0))
        kept = p > 0
        t = ds[:, None] * jnp.where(kept, below_max, 0.0) + s[:, None] * (matmul(dq, keys.T) - r[:, None])
        pt = jnp.where(kept, p * t, 0.0)
        return (sums[0] + matmul(pt, values), sums[1] + jnp.sum(pt, axis=1)), None

    start = (jnp.zeros((batch, v.shape[1]), q.dtype), jnp.zeros((batch,), q.dtype))
    (a, t_sum), _ = jax.lax.scan(step, start, (k_blocks, c_blocks, v_blocks))
    d_mean = (a - mean * t_sum[:, None]) / total[:, None]
    return d_mean, t_sum + s * r * total
