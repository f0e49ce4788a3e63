"""Base of the local (patch) analytic denoisers: image-layout queries, no density.

Local models (Kamb & Ganguli's LS / ELS machines, Niedoba et al.'s patch posterior means,
Lukoianov et al.'s data-derived locality) denoise each pixel from a neighbourhood of it,
so they know the image shape `(H, W, C)`. Their queries are flat vectors `(..., D)` as
for every model, or images `(..., H, W, C)`; the output has the query's layout. They
are denoisers, not densities: their `score` is `(D(x) - x) / sigma^2` (what the network
analyses compare) and `log_density` is not defined.
"""

from __future__ import annotations

from jaxtyping import Array, ArrayLike, Float

from gaussjax.scores._base import AnalyticModel


class LocalModel(AnalyticModel):
    """A denoiser on images `(H, W, C)`; subclasses define `_denoise(x (B, D), sigma (B,))`.

    Subclasses are `pytree_dataclass`es that declare a static field
    `image_shape: tuple = static_field()`, `(H, W, C)`.
    """

    @property
    def dim(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    def _layout_call(self, method: str, x, sigma):
        """Run `method` on flat or image queries, returning the query's layout."""
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) >= 3 and tuple(shape[-3:]) == tuple(self.image_shape):
            batch = tuple(shape[:-3])
            out = self._flat_call(method, x.reshape(*batch, self.dim), sigma, lambda s: s)
            return out.reshape(*batch, *self.image_shape)
        return self._flat_call(method, x, sigma, lambda s: s)

    def denoise(
        self,
        x: Float[ArrayLike, "*batch D"] | Float[ArrayLike, "*batch H W C"],
        sigma: Float[ArrayLike, "*#batch"] | float,
    ) -> Float[Array, "*batch D"] | Float[Array, "*batch H W C"]:
        """`D(x; sigma)`, in the layout of `x` (`(..., D)` or `(..., H, W, C)`)."""
        return self._layout_call("_denoise", x, sigma)

    def score(
        self,
        x: Float[ArrayLike, "*batch D"] | Float[ArrayLike, "*batch H W C"],
        sigma: Float[ArrayLike, "*#batch"] | float,
    ) -> Float[Array, "*batch D"] | Float[Array, "*batch H W C"]:
        """`(D(x; sigma) - x) / sigma^2`, in the layout of `x`."""
        return self._layout_call("_score", x, sigma)

    def log_density(self, x, sigma):
        raise NotImplementedError(
            f"{type(self).__name__} is a local denoiser, not a density: it has no log_density "
            "(its score is (D(x) - x) / sigma^2)"
        )

    def _log_density(self, x, sigma):
        raise NotImplementedError(f"{type(self).__name__} has no log density")
