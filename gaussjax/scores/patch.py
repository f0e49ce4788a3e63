"""Kamb & Ganguli's patch machines: the LS and ELS denoisers of a training set of images."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_images, check_positive_int
from gaussjax._errors import InputValueError
from gaussjax._precision import einsum, matmul
from gaussjax.kernels import _selection
from gaussjax.kernels._weighted_sum import softmax_weighted_sum
from gaussjax.scores import _sharded, _softmax
from gaussjax.scores._images import chunk_rows, map_query_blocks
from gaussjax.scores._local import LocalModel

ELS_CHUNK_COMPONENTS = 1024  # (image, position) pairs per ELS chunk (the choice: docs/local.md, "Speed")


class PatchMixture(LocalModel):
    """The locally consistent (LS) or equivariant, locally consistent (ELS) patch denoiser.

    Kamb & Ganguli (2024, "An analytic theory of creativity in convolutional diffusion
    models", Sec. 3) take the optimal denoiser under a locality constraint (LS) and, in
    addition, translation equivariance (ELS). In the EDM convention `x = y + sigma n`, with
    `P_p z` the `k x k x C` window of image `z` centred at pixel `p` and `y_i` the N
    training images, the output at pixel `p` (all C channels) is

        LS:   D(x)_p = sum_i      w_i(p)    y_i[p],   w_i(p)    = softmax_i    (-||P_p x - P_p y_i||^2 / (2 sigma^2))
        ELS:  D(x)_p = sum_{i,q}  w_{iq}(p) y_i[q],   w_{iq}(p) = softmax_{i,q}(-||P_p x - P_q y_i||^2 / (2 sigma^2))

    (the softmax of ELS runs over every image i and every position q). The score is
    `(D(x) - x) / sigma^2`; there is no log density. With the full window
    `k = 2 max(H, W) - 1` LS is the exact delta-mixture denoiser (`DeltaMixture`); ELS
    with `k = 1` is a per-pixel softmax over all pixel values of the training set.

    Border convention: every image, query and training image alike, is zero-padded by
    `k // 2` pixels, so a window near the border compares (and an ELS window at `q` near
    the border offers) zeros outside the image. Kamb & Ganguli's reference code pairs
    each machine with the padding mode of the network it models (their ResNets/UNets use
    'zeros' or 'circular' convolution padding); only zero padding is implemented here.

    Computation: `||P_p x||^2` is common to all components of a row (query b, pixel p) and
    cancels, so the logits are `(P_p x . P_{p|q} y_i - ||P_{p|q} y_i||^2 / 2) / sigma^2`
    with the patch norms precomputed here. Training images are streamed in chunks with
    the online log-sum-exp of `_softmax` (`scale = 1 / sigma^2`, exact at any sigma); a
    chunk's score block is `(B' P, S)` (LS) or `(R, S Q)` (ELS), kept near
    `BLOCK_ELEMENTS / 4` by blocking the queries too. Cost per call for B queries, P = Q = H W
    pixels, K = k^2 C: LS `2 B N P (K + C)` FLOPs and `B N P` exponentials; ELS
    `2 B P N Q (K + C)` FLOPs and `B P N Q` exponentials.

    `images` may be a `jax.Array` split by rows over a mesh, of this process's devices or of
    every process's: each device lays out and streams its own images and the partial sums are
    merged across devices, as for `DeltaMixture` (docs/scaling.md).

    `implementation` selects how each chunk's sums are computed: `"xla"` the matmuls above,
    `"pallas"` the fused kernel `gaussjax.kernels.softmax_weighted_sum` (LS: one call per
    chunk for all pixels, batched over them; ELS: one call per group of chunks of about
    `BLOCK_ELEMENTS` patch numbers; no score block in memory, so the queries are not blocked;
    interpreted, slowly, on CPU), `"auto"` the XLA path
    except where the kernel was measured faster (none yet: on an H200 it is slower; docs/kernels.md). The
    kernel path is differentiable in `x` and `sigma`, not in the images.

    Args:
        images: `(N, H, W, C)` training images.
        patch_size: k, odd, at most `2 max(H, W) - 1`.
        equivariant: ELS if true, else LS.
        chunk_size: training images per chunk (static; default: LS, a chunk's training
            patches hold about `BLOCK_ELEMENTS` numbers; ELS, `ELS_CHUNK_COMPONENTS / (H W)`
            images).
        implementation: `"auto"`, `"xla"` or `"pallas"` (static).

    Raises:
        ValueError: `implementation` is none of the three (and the checks on `images`,
            `patch_size`, `chunk_size`).
    """

    chunks: Float[Array, "M S H W C"]  # each shard's images, then zero padding to whole chunks
    half_sq_norms: Float[Array, "M S P"]  # ||P_q y_i||^2 / 2, +inf on padding (weight exactly 0)
    image_shape: tuple = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    equivariant: bool = eqx.field(static=True)
    num_images: int = eqx.field(static=True)
    rows: _sharded.RowSharding | None = eqx.field(static=True, default=None)  # how the images are split
    implementation: str = eqx.field(static=True, default="auto")  # "auto" | "xla" | "pallas"

    def __init__(
        self,
        images: Float[ArrayLike, "N H W C"],
        patch_size: int,
        *,
        equivariant: bool = False,
        chunk_size: int | None = None,
        implementation: str = "auto",
    ):
        implementation = _selection.check_implementation(implementation)
        rows = _sharded.row_sharding("images", images)
        images = check_images("images", images if rows is not None else _sharded.local_copy(images))
        num_images, height, width, channels = images.shape
        patch_size = _check_patch_size(patch_size, height, width)
        pixels, patch_dim = height * width, patch_size**2 * channels
        per_shard = num_images // _sharded.num_shards(rows)
        if chunk_size is None:
            chunk_size = max(1, ELS_CHUNK_COMPONENTS // pixels if equivariant
                             else BLOCK_ELEMENTS // (pixels * patch_dim))
        chunk_size = min(check_positive_int("chunk_size", chunk_size), per_shard)
        layout = functools.partial(_layout, patch_size=patch_size, chunk_size=chunk_size)
        self.chunks, self.half_sq_norms = _sharded.layout(layout, rows, images)
        self.image_shape = (height, width, channels)
        self.patch_size = patch_size
        self.equivariant = bool(equivariant)
        self.num_images = num_images
        self.rows = rows
        self.implementation = implementation

    @property
    def chunk_size(self) -> int:
        return self.chunks.shape[1]

    @property
    def images(self) -> Float[Array, "N H W C"]:
        """The training images `(N, H, W, C)` (sharded as given)."""
        per_shard = self.num_images // _sharded.num_shards(self.rows)
        return _sharded.layout(lambda c: c.reshape(-1, *self.image_shape)[:per_shard], self.rows, self.chunks)

    def _denoise(self, x, sigma):
        batch = x.shape[0]
        pixels, channels = self.half_sq_norms.shape[-1], self.image_shape[-1]
        query = patches(x.reshape(batch, *self.image_shape), self.patch_size)  # (B, P, K)
        inv_variance = jnp.repeat(1.0 / jnp.square(sigma), pixels)  # (B P,)
        data = (self.chunks, self.half_sq_norms)
        fused = _selection.use_kernel(self.implementation, self.chunks.dtype)
        if self.equivariant:
            els = functools.partial(_els_fused if fused else _els_sum, patch_size=self.patch_size, channels=channels)

            def stream(q, s):
                return _softmax.weighted_mean(_sharded.stream(els, self.rows, data, (q, s), s))

            rows = query.reshape(batch * pixels, query.shape[-1])  # no -1: batch may be 0
            out = stream(rows, inv_variance) if fused else _blocked(stream, rows, inv_variance,
                                                                     self.chunk_size * pixels)
        else:
            ls = functools.partial(_ls_fused if fused else _ls_sum, patch_size=self.patch_size, channels=channels)

            def stream(q, s):
                total = _sharded.stream(ls, self.rows, data, (q, s.reshape(-1)), s.reshape(-1))
                return _softmax.weighted_mean(total).reshape(q.shape[0], pixels * channels)

            per_pixel = inv_variance.reshape(batch, pixels)
            out = stream(query, per_pixel) if fused else _blocked(stream, query, per_pixel, self.chunk_size)
        return out.reshape(batch, pixels * channels)


def _check_patch_size(patch_size, height: int, width: int) -> int:
    """`patch_size` as an int, or raise unless it is odd and at most `2 max(H, W) - 1`."""
    patch_size = check_positive_int("patch_size", patch_size)
    if patch_size % 2 == 0:
        raise InputValueError(f"`patch_size` must be odd (a window centred at a pixel), got {patch_size}")
    limit = 2 * max(height, width) - 1
    if patch_size > limit:
        raise InputValueError(
            f"`patch_size` must be at most 2 max(H, W) - 1 = {limit} (the window that covers the whole image "
            f"from every pixel), got {patch_size}"
        )
    return patch_size


def patches(images: Float[Array, "*B H W C"], patch_size: int) -> Float[Array, "*B P K"]:
    """The zero-padded `k x k x C` window at every pixel, `P = H W` (row-major), `K = k^2 C`."""
    *batch, height, width, channels = images.shape
    r = patch_size // 2
    padded = jnp.pad(images, [(0, 0)] * len(batch) + [(r, r), (r, r), (0, 0)])
    shifted = [
        padded[..., dy : dy + height, dx : dx + width, :] for dy in range(patch_size) for dx in range(patch_size)
    ]
    return jnp.concatenate(shifted, axis=-1).reshape(*batch, height * width, patch_size**2 * channels)


def _blocked(stream, queries, inv_variance, components: int):
    """`stream(queries, inv_variance)` in blocks of the leading axis so a score block has ~BLOCK_ELEMENTS / 4 numbers.

    `queries (R, ...)` and `inv_variance (R, ...)` are cut into blocks of
    `max(1, BLOCK_ELEMENTS // 4 // (components * rest))` rows (`rest` the softmax rows per
    row of `inv_variance`, `components` the components per chunk); the results `(R, F)`
    are concatenated.
    """
    per_row = components * math.prod(inv_variance.shape[1:])  # from the shape: R may be 0
    return map_query_blocks(stream, BLOCK_ELEMENTS // 4 // per_row, queries, inv_variance)


def _layout(images, *, patch_size: int, chunk_size: int):
    """`images (n, H, W, C)` zero-padded into chunks `(M, S, H, W, C)`, and their patch norms `(M, S, P)`
    (+inf on padding)."""
    num_images = images.shape[0]
    half_sq = 0.5 * jnp.sum(jnp.square(patches(images, patch_size)), axis=-1)  # (n, P)
    padding = jnp.arange(-(-num_images // chunk_size) * chunk_size) >= num_images
    half_sq = jnp.where(padding.reshape(-1, chunk_size)[..., None], jnp.inf, chunk_rows(half_sq, chunk_size))
    return chunk_rows(images, chunk_size), half_sq


def _ls_sum(chunks, half_sq_norms, query, inv_variance, *, patch_size: int, channels: int) -> _softmax.SoftmaxSum:
    """LS: online softmax over images i, separately per (query b, pixel p) row; `query (B, P, K)`."""
    batch, pixels, _ = query.shape

    def step(total, chunk):
        images, half_sq = chunk  # (S, H, W, C), (S, P)
        train = patches(images, patch_size)  # (S, P, K)
        scores = einsum("bpk,spk->bps", query, train) - half_sq.T[None]  # (B, P, S)
        centres = images.reshape(images.shape[0], pixels, -1)  # (S, P, C)

        def weigh(p):
            return einsum("bps,spc->bpc", p.reshape(batch, pixels, -1), centres).reshape(batch * pixels, -1)

        return _softmax.accumulate(total, scores.reshape(batch * pixels, -1), weigh, inv_variance), None

    empty = _softmax.empty(batch * pixels, channels, jnp.result_type(query, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total


def _els_sum(chunks, half_sq_norms, rows, inv_variance, *, patch_size: int, channels: int) -> _softmax.SoftmaxSum:
    """ELS: online softmax over all (image i, position q) for query patches `rows (R, K)`."""

    def step(total, chunk):
        images, half_sq = chunk  # (S, H, W, C), (S, Q)
        train = patches(images, patch_size).reshape(-1, rows.shape[-1])  # (S Q, K)
        centres = images.reshape(-1, channels)  # (S Q, C)
        scores = matmul(rows, train.T) - half_sq.reshape(1, -1)  # (R, S Q)
        return _softmax.accumulate(total, scores, lambda p: matmul(p, centres), inv_variance), None

    empty = _softmax.empty(rows.shape[0], channels, jnp.result_type(rows, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total


def _ls_fused(chunks, half_sq_norms, query, inv_variance, *, patch_size: int, channels: int) -> _softmax.SoftmaxSum:
    """`_ls_sum` with one fused kernel call per chunk, batched over the pixels (`jax.vmap`)."""
    batch, pixels, _ = query.shape
    per_pixel = jax.vmap(softmax_weighted_sum, in_axes=(1, 1, 1, 1, 1))  # over p: queries, keys, bias, scale, values
    scale = inv_variance.reshape(batch, pixels)

    def step(total, chunk):
        images, half_sq = chunk  # (S, H, W, C), (S, P)
        centres = images.reshape(images.shape[0], pixels, -1)  # (S, P, C)
        fused = per_pixel(query, patches(images, patch_size), -half_sq, scale, centres)
        block = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1).reshape(batch * pixels, *a.shape[2:]), fused)
        return _softmax.merge(total, _softmax.from_mean(block.max, block.total, block.mean), inv_variance), None

    empty = _softmax.empty(batch * pixels, channels, jnp.result_type(query, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total


def _els_fused(chunks, half_sq_norms, rows, inv_variance, *, patch_size: int, channels: int) -> _softmax.SoftmaxSum:
    """`_els_sum` with one fused kernel call per group of chunks: about `BLOCK_ELEMENTS` numbers of training patches
    (the kernel holds no score block, so it takes many more components per call than the XLA path's chunks)."""
    num_chunks, per_chunk = chunks.shape[0], chunks.shape[1] * half_sq_norms.shape[-1]  # chunks, components each
    group = max(1, min(num_chunks, BLOCK_ELEMENTS // (per_chunk * rows.shape[-1])))
    pad = -(-num_chunks // group) * group - num_chunks  # whole chunks of zero images, norm +inf: weight 0
    chunks = jnp.pad(chunks, ((0, pad),) + ((0, 0),) * (chunks.ndim - 1))
    half_sq_norms = jnp.pad(half_sq_norms, ((0, pad), (0, 0), (0, 0)), constant_values=jnp.inf)
    chunks = chunks.reshape(-1, group * chunks.shape[1], *chunks.shape[2:])
    half_sq_norms = half_sq_norms.reshape(-1, group * half_sq_norms.shape[1], half_sq_norms.shape[2])

    def step(total, chunk):
        images, half_sq = chunk  # (S, H, W, C), (S, Q)
        train = patches(images, patch_size).reshape(-1, rows.shape[-1])  # (S Q, K)
        fused = softmax_weighted_sum(rows, train, -half_sq.reshape(-1), inv_variance, images.reshape(-1, channels))
        return _softmax.merge(total, _softmax.from_mean(fused.max, fused.total, fused.mean), inv_variance), None

    empty = _softmax.empty(rows.shape[0], channels, jnp.result_type(rows, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total
