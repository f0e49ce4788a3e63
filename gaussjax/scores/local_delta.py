"""Lukoianov et al.'s analytic denoiser: a delta mixture seen through the Gaussian denoiser's receptive fields."""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_images, check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._precision import einsum
from gaussjax.scores import _softmax
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

    Args:
        images: `(N, H, W, C)` training images.
        gaussian: a `Gaussian` of dimension `H W C` fitted to them (e.g.
            `gaussjax.fit_gaussian(images.reshape(N, -1))`); only `eigvals`, `eigvecs` are used.
        threshold: in [0, 1], the relative Wiener weight an input needs to be in a receptive field.
        temperature: tau > 0, divides the logits.
        chunk_size: images per chunk (static; default about `BLOCK_ELEMENTS / D`).
    """

    chunks: Float[Array, "K S D"]  # training images, flat; rows past N are zero
    padding: Float[Array, "K S"]  # 0 on images, -inf on padding rows (weight 0)
    gaussian: Gaussian
    image_shape: tuple = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    temperature: float = eqx.field(static=True)

    def __init__(
        self,
        images: Float[ArrayLike, "N H W C"],
        gaussian: Gaussian,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        temperature: float = 1.0,
        chunk_size: int | None = None,
    ):
        images = check_images("images", images)
        num_images, *image_shape = images.shape
        flat = images.reshape(num_images, -1)
        if not isinstance(gaussian, Gaussian):
            raise InputTypeError(f"`gaussian` must be a gaussjax.Gaussian, got {type(gaussian).__name__}")
        if gaussian.dim != flat.shape[1]:
            raise InputValueError(
                f"`gaussian` has dimension {gaussian.dim}, but the images have H W C = {flat.shape[1]}"
            )
        threshold = _check_real("threshold", threshold)
        if not 0 <= threshold <= 1:
            raise InputValueError(f"`threshold` must be in [0, 1], got {threshold}")
        temperature = _check_real("temperature", temperature)
        if not 0 < temperature < float("inf"):
            raise InputValueError(f"`temperature` must be finite and > 0, got {temperature}")
        if chunk_size is None:
            chunk_size = auto_chunk_size(num_images, flat.shape[1])
        chunk_size = min(check_positive_int("chunk_size", chunk_size), num_images)
        is_row = chunk_rows(jnp.ones((num_images,), bool), chunk_size)
        self.chunks = chunk_rows(flat, chunk_size)
        self.padding = jnp.where(is_row, 0.0, -jnp.inf).astype(flat.dtype)
        self.gaussian = gaussian
        self.image_shape = tuple(image_shape)
        self.threshold = threshold
        self.temperature = temperature

    def _denoise(self, x, sigma):
        block = BLOCK_ELEMENTS // (self.dim * max(self.dim, self.chunks.shape[1]))
        return map_query_blocks(self._block_denoise, block, x, sigma)

    def _block_denoise(self, x, sigma) -> Float[Array, "B D"]:
        """`D(x)` for one block of queries `x (B, D)`, `sigma (B,)`."""
        batch, dim = x.shape
        masks = receptive_fields(self.gaussian, sigma, self.threshold).astype(x.dtype)  # (B, n, m)
        masked_x = x[:, :, None] * masks
        scale = jnp.repeat(1.0 / (jnp.square(sigma) * self.temperature), dim)  # rows (query, pixel)

        def step(total, chunk):
            images, padding = chunk
            # -sum_n M[n, m] (x_n - y_n)^2 / 2 + sum_n M[n, m] x_n^2 / 2, shape (B, m, S)
            scores = einsum("sn,bnm->bms", images, masked_x) - einsum("sn,bnm->bms", 0.5 * jnp.square(images), masks)
            scores = (scores + padding[None, None, :]).reshape(batch * dim, -1)
            def weigh(p):
                return einsum("bms,sm->bm", p.reshape(batch, dim, -1), images).reshape(-1, 1)

            return _softmax.accumulate(total, scores, weigh, scale), None

        empty = _softmax.empty(batch * dim, 1, jnp.result_type(x, self.chunks))
        total, _ = jax.lax.scan(step, empty, (self.chunks, self.padding))
        return _softmax.weighted_mean(total).reshape(batch, dim)


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    return float(value)
