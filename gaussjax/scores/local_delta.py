"""Lukoianov et al.'s analytic denoiser: a delta mixture seen through the Gaussian denoiser's receptive fields."""

from __future__ import annotations

import functools
import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_images, check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._precision import einsum
from gaussjax.scores import _sharded, _softmax
from gaussjax.scores._images import chunk_rows, map_query_blocks
from gaussjax.scores._local import LocalModel
from gaussjax.scores.delta import auto_chunk_size
from gaussjax.scores.gaussian import Gaussian

DEFAULT_THRESHOLD = 0.1


def receptive_fields(
    gaussian: Gaussian, sigma: Float[Array, " B"], threshold: float
) -> Bool[Array, "B D D"]:
    """The masks `M[b, n, m] = |W[n, m]| >= threshold W[m, m]` of `W = U diag(lam / (lam + sigma_b^2)) U^T`.

    `W` is the Gaussian's (Wiener) denoiser matrix at `sigma_b` (paper Eq. 12), symmetric
    positive semi-definite; column m, divided by its diagonal, is how much each input
    coordinate n moves output m. Written as a product (no division), so a coordinate with
    `W[m, m] = 0` -- one the Gaussian holds fixed, whose whole column is then 0 -- keeps
    every input (its receptive field is the whole image, as at threshold 0).
    """
    shrink = gaussian.eigvals[None, :] / (gaussian.eigvals[None, :] + jnp.square(sigma)[:, None])  # (B, r)
    wiener = einsum("nk,bk,mk->bnm", gaussian.eigvecs, shrink, gaussian.eigvecs)
    diagonal = jnp.diagonal(wiener, axis1=1, axis2=2)  # (B, D)
    return jnp.abs(wiener) >= threshold * diagonal[:, None, :]


class LocalDeltaMixture(LocalModel):
    """Lukoianov et al. (2025, Sec. 5): each output pixel is a delta-mixture posterior mean over its receptive field.

    At noise sigma, the receptive field of output coordinate m is read off the Gaussian
    (Wiener) denoiser `W_sigma = U diag(lam / (lam + sigma^2)) U^T` of the same data: the
    binary mask `M[n, m] = 1` iff `|W_sigma[n, m]| >= threshold * W_sigma[m, m]` (see
    `receptive_fields`; m itself is always in, and `threshold` from 0 to 1 shrinks the field
    from the whole image to the inputs weighted at least as much as m). With tau the
    temperature,

        D(x)_m = sum_i softmax_i(-sum_n M[n, m] (x_n - y_{i,n})^2 / (2 sigma^2 tau)) y_{i,m}.

    `threshold = 0`, `tau = 1` is the global `DeltaMixture`. The default threshold 0.1
    keeps inputs whose Wiener weight is at least a tenth of the pixel's own; it is this
    library's choice (Lukoianov et al. tune theirs per dataset), not a value from the paper.
    Unlike the paper, the mask is binary and recomputed exactly at every query's sigma.

    Cost O(B N D^2) time per B queries (the masked distances: per chunk,
    `(y_i * x) @ M - (y_i^2 / 2) @ M`, the `x^2 @ M` term being common to all i) plus
    O(B D^2 r) for the masks; memory O(B D^2) per block of queries, the blocks sized so a
    block's masks and scores stay about `BLOCK_ELEMENTS`. The N images are streamed in
    chunks with the online log-sum-exp of `_softmax` over (query, pixel) rows, at scale
    `1 / (sigma^2 tau)`, exact at any sigma.

    `images` may be a `jax.Array` split by rows over a mesh, of this process's devices or of
    every process's: each device lays out and streams its own images and the partial sums are
    merged across devices, as for `DeltaMixture` (docs/scaling.md).

    Args:
        images: `(N, H, W, C)` training images.
        gaussian: a `Gaussian` of dimension `H W C` fitted to them (e.g.
            `gaussjax.fit_gaussian(images.reshape(N, -1))`); only `eigvals`, `eigvecs` are used.
        threshold: in [0, 1], the relative Wiener weight an input needs to be in a receptive field.
        temperature: tau > 0, divides the logits.
        chunk_size: images per chunk (static; default about `BLOCK_ELEMENTS / D`).
    """

    chunks: Float[Array, "K S D"]  # each shard's training images, flat, then zero padding to whole chunks
    padding: Float[Array, "K S"]  # 0 on images, -inf on padding rows (weight 0)
    gaussian: Gaussian
    image_shape: tuple = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    temperature: float = eqx.field(static=True)
    rows: _sharded.RowSharding | None = eqx.field(static=True, default=None)  # how the images are split

    def __init__(
        self,
        images: Float[ArrayLike, "N H W C"],
        gaussian: Gaussian,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        temperature: float = 1.0,
        chunk_size: int | None = None,
    ):
        rows = _sharded.row_sharding("images", images)
        images = check_images("images", images if rows is not None else _sharded.local_copy(images))
        num_images, *image_shape = images.shape
        dim = math.prod(image_shape)
        if not isinstance(gaussian, Gaussian):
            raise InputTypeError(f"`gaussian` must be a gaussjax.Gaussian, got {type(gaussian).__name__}")
        if gaussian.dim != dim:
            raise InputValueError(f"`gaussian` has dimension {gaussian.dim}, but the images have H W C = {dim}")
        threshold = _check_real("threshold", threshold)
        if not 0 <= threshold <= 1:
            raise InputValueError(f"`threshold` must be in [0, 1], got {threshold}")
        temperature = _check_real("temperature", temperature)
        if not 0 < temperature < float("inf"):
            raise InputValueError(f"`temperature` must be finite and > 0, got {temperature}")
        per_shard = num_images // _sharded.num_shards(rows)
        if chunk_size is None:
            chunk_size = auto_chunk_size(per_shard, dim)
        chunk_size = min(check_positive_int("chunk_size", chunk_size), per_shard)
        self.chunks, self.padding = _sharded.layout(functools.partial(_layout, chunk_size=chunk_size), rows, images)
        self.gaussian = gaussian
        self.image_shape = tuple(image_shape)
        self.threshold = threshold
        self.temperature = temperature
        self.rows = rows

    def _denoise(self, x, sigma):
        block = BLOCK_ELEMENTS // (self.dim * max(self.dim, self.chunks.shape[1]))
        return map_query_blocks(self._block_denoise, block, x, sigma)

    def _block_denoise(self, x, sigma) -> Float[Array, "B D"]:
        """`D(x)` for one block of queries `x (B, D)`, `sigma (B,)`."""
        batch, dim = x.shape
        masks = receptive_fields(self.gaussian, sigma, self.threshold).astype(x.dtype)  # (B, n, m)
        masked_x = x[:, :, None] * masks
        scale = jnp.repeat(1.0 / (jnp.square(sigma) * self.temperature), dim)  # rows (query, pixel)
        data = (self.chunks, self.padding)
        total = _sharded.stream(_masked_sum, self.rows, data, (masked_x, masks, scale), scale)
        return _softmax.weighted_mean(total).reshape(batch, dim)


def _layout(images, *, chunk_size: int):
    """`images (n, H, W, C)` flat and zero-padded into chunks `(K, S, D)`, and the padding mask `(K, S)`
    (0 on images, -inf on padding)."""
    num_images = images.shape[0]
    is_row = chunk_rows(jnp.ones((num_images,), bool), chunk_size)
    padding = jnp.where(is_row, 0.0, -jnp.inf).astype(images.dtype)
    return chunk_rows(images.reshape(num_images, -1), chunk_size), padding


def _masked_sum(chunks, padding, masked_x, masks, scale) -> _softmax.SoftmaxSum:
    """The softmax sums over the image chunks, rows (query b, pixel m), of `masked_x = x[:, :, None] * masks`
    and the receptive fields `masks (B, n, m)`."""
    batch, dim, _ = masks.shape

    def step(total, chunk):
        images, padding = chunk
        # -sum_n M[n, m] (x_n - y_n)^2 / 2 + sum_n M[n, m] x_n^2 / 2, shape (B, m, S)
        scores = einsum("sn,bnm->bms", images, masked_x) - einsum("sn,bnm->bms", 0.5 * jnp.square(images), masks)
        scores = (scores + padding[None, None, :]).reshape(batch * dim, -1)

        def weigh(p):
            return einsum("bms,sm->bm", p.reshape(batch, dim, -1), images).reshape(-1, 1)

        return _softmax.accumulate(total, scores, weigh, scale), None

    empty = _softmax.empty(batch * dim, 1, jnp.result_type(masked_x, chunks))
    total, _ = jax.lax.scan(step, empty, (chunks, padding))
    return total


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    return float(value)
