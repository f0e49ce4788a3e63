"""Niedoba et al.'s patch set posterior composite (PSPC-Square): averaged posterior means of crops."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_images, check_positive_int
from gaussjax._errors import InputValueError
from gaussjax._precision import einsum
from gaussjax.scores import _sharded, _softmax
from gaussjax.scores._images import chunk_rows, map_query_blocks
from gaussjax.scores._local import LocalModel
from gaussjax.scores.delta import auto_chunk_size


def crop_starts(size: int, patch_size: int, stride: int) -> tuple[int, ...]:
    """Top-left offsets `0, stride, 2 stride, ...` (while the crop fits), plus `size - patch_size` if missed."""
    starts = tuple(range(0, size - patch_size + 1, stride))
    return starts if starts[-1] == size - patch_size else starts + (size - patch_size,)


@functools.lru_cache(maxsize=64)
def crop_indices(image_shape: tuple, patch_size: int, stride: int) -> np.ndarray:
    """Flat (row-major HWC) indices of every crop, `(K, p p C)`, crops in row-major order of their corners."""
    height, width, channels = image_shape
    grid = np.arange(height * width * channels, dtype=np.int32).reshape(height, width, channels)
    return np.stack([
        grid[r : r + patch_size, c : c + patch_size].ravel()
        for r in crop_starts(height, patch_size, stride)
        for c in crop_starts(width, patch_size, stride)
    ])


class PatchPosteriorMean(LocalModel):
    """PSPC-Square (Niedoba et al. 2024, Sec. 4): every crop denoised by its own delta mixture, then averaged.

    The crops `C_c` are the `p x p` windows (all channels) with top-left corners on the grid
    `0, stride, 2 stride, ...` of each axis, plus one crop flush with the far border when
    the grid misses it; with `stride <= patch_size` (required) every pixel lies in at least
    one crop. Crop `c` of the
    query is denoised by the posterior mean of the same-location crops of the N training
    images (their Eq. 7 applied to a crop, i.e. the empirical denoiser of the patch set):

        E_c(x) = sum_i softmax_i(-||C_c x - C_c y_i||^2 / (2 sigma^2)) C_c y_i,

    and each output pixel is the mean of `E_c(x)` over the crops that contain it.
    `patch_size = (H = W)` is the global delta mixture; `patch_size = 1, stride = 1` a
    per-pixel softmax over the training values of that pixel.

    Differences from the paper: Niedoba et al. pick the patch size per noise level (from
    the networks' gradient sensitivity); here it is fixed, one model per size. Their
    crops are the same-location crops of the dataset, as here (not all positions: that
    is Kamb & Ganguli's equivariant machine, `gaussjax.scores.patch`).

    Cost O(B N K p^2 C) for B queries and K crops: the N images are streamed in chunks
    with the online log-sum-exp of `_softmax` over (query, crop) rows (the logits carry
    `1 / sigma^2` as a scale, so any sigma is exact); no (queries x N x crops) array exists.

    `images` may be a `jax.Array` split by rows over a mesh, of this process's devices or of
    every process's: each device lays out and streams its own images and the partial sums are
    merged across devices, as for `DeltaMixture` (docs/scaling.md).

    Args:
        images: `(N, H, W, C)` training images.
        patch_size: crop side `p`, `1 <= p <= min(H, W)`.
        stride: grid step between crop corners, `1 <= stride <= patch_size`.
        chunk_size: images per chunk (static; default: about `BLOCK_ELEMENTS` crop values per chunk).
    """

    chunks: Float[Array, "K S D"]  # each shard's training images, flat, then zero padding to whole chunks
    half_sq_norms: Float[Array, "K S C"]  # ||C_c y_i||^2 / 2 per crop, +inf on padding (weight 0)
    image_shape: tuple = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)
    rows: _sharded.RowSharding | None = eqx.field(static=True, default=None)  # how the images are split

    def __init__(
        self,
        images: Float[ArrayLike, "N H W C"],
        patch_size: int,
        stride: int,
        *,
        chunk_size: int | None = None,
    ):
        rows = _sharded.row_sharding("images", images)
        images = check_images("images", images if rows is not None else _sharded.local_copy(images))
        num_images, height, width, channels = images.shape
        patch_size = check_positive_int("patch_size", patch_size)
        if patch_size > min(height, width):
            raise InputValueError(f"`patch_size` = {patch_size} exceeds the image size {height} x {width}")
        stride = check_positive_int("stride", stride)
        if stride > patch_size:
            raise InputValueError(f"`stride` = {stride} exceeds `patch_size` = {patch_size}: pixels between crops "
                                  "would be uncovered")
        indices = crop_indices((height, width, channels), patch_size, stride)
        per_shard = num_images // _sharded.num_shards(rows)
        if chunk_size is None:
            chunk_size = auto_chunk_size(per_shard, indices.size)
        chunk_size = min(check_positive_int("chunk_size", chunk_size), per_shard)
        layout = functools.partial(_layout, indices=indices, chunk_size=chunk_size)
        self.chunks, self.half_sq_norms = _sharded.layout(layout, rows, images)
        self.image_shape = (height, width, channels)
        self.patch_size = patch_size
        self.stride = stride
        self.rows = rows

    @property
    def num_crops(self) -> int:
        return self.half_sq_norms.shape[-1]

    def _denoise(self, x, sigma):
        indices = crop_indices(self.image_shape, self.patch_size, self.stride)
        chunk = self.chunks.shape[1]
        crop_sums = functools.partial(_crop_sums, indices=indices)

        def crop_means(x, inv_variance):  # E_c(x) (B, K, P) for every crop c of queries x (B, D)
            scale = jnp.repeat(inv_variance, self.num_crops)  # rows are (query, crop) pairs, query-major
            total = _sharded.stream(crop_sums, self.rows, (self.chunks, self.half_sq_norms), (x, scale), scale)
            return _softmax.weighted_mean(total).reshape(x.shape[0], *indices.shape)

        means = map_query_blocks(crop_means, BLOCK_ELEMENTS // (chunk * self.num_crops), x, 1.0 / jnp.square(sigma))
        return _average_crops(means, indices, self.dim)


def _layout(images, *, indices: np.ndarray, chunk_size: int):
    """`images (n, H, W, C)` flat and zero-padded into chunks `(M, S, D)`, and their crop norms `(M, S, K)`
    (+inf on padding)."""
    num_images = images.shape[0]
    flat = images.reshape(num_images, -1)
    half_sq = 0.5 * jnp.sum(jnp.square(flat[:, indices]), axis=-1)  # (n, K)
    is_row = chunk_rows(jnp.ones((num_images,), bool), chunk_size)
    return chunk_rows(flat, chunk_size), jnp.where(is_row[..., None], chunk_rows(half_sq, chunk_size), jnp.inf)


def _crop_sums(chunks, half_sq_norms, x, scale, *, indices: np.ndarray) -> _softmax.SoftmaxSum:
    """The softmax sums of `E_c(x)` over the image chunks, rows (query b, crop c), for queries `x (B, D)`."""
    batch, (num_crops, crop) = x.shape[0], indices.shape
    x_crops = x[:, indices]  # (B, K, P)

    def step(total, chunk):
        images, half_sq = chunk
        y_crops = images[:, indices]  # (S, K, P)
        scores = einsum("bkp,skp->bks", x_crops, y_crops) - half_sq.T[None]  # -||x_c - y_c||^2 / 2 + const
        def weigh(p):
            return einsum("bks,skp->bkp", p.reshape(batch, num_crops, -1), y_crops).reshape(-1, crop)

        return _softmax.accumulate(total, scores.reshape(batch * num_crops, -1), weigh, scale), None

    empty = _softmax.empty(batch * num_crops, crop, jnp.result_type(x, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, half_sq_norms))
    return total


def _average_crops(means: Float[Array, "B K P"], indices: np.ndarray, dim: int) -> Float[Array, "B D"]:
    """Each pixel's mean over the crops that contain it (every pixel is in at least one)."""
    counts = np.bincount(indices.ravel(), minlength=dim)
    batch = means.shape[0]  # may be 0: every reshape names its sizes (-1 is ambiguous for an empty array)
    summed = jnp.zeros((batch, dim), means.dtype).at[:, indices.ravel()].add(means.reshape(batch, indices.size))
    return summed / jnp.asarray(counts, means.dtype)[None, :]
