"""Base of the local (patch) analytic denoisers: image-layout queries, no density.

Local models (Kamb & Ganguli's LS / ELS machines, Niedoba et al.'s patch posterior means,
Lukoianov et al.'s data-derived locality) denoise each pixel from a neighbourhood of it,
so they know the image shape `(H, W, C)`. Their queries are flat vectors `(..., D)` as
for every model, or images `(..., H, W, C)`; the output has the query's layout. They
are denoisers, not densities: their `score` is `(D(x) - x) / sigma^2` (what the network
analyses compare), and they have no `log_density`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaussjax.scores._base import AnalyticModel, image_query


class LocalModel(AnalyticModel):
    """A denoiser on images `(H, W, C)`; subclasses define `_denoise(x (B, D), sigma (B,))`.

    Subclasses declare the static field `image_shape: tuple = eqx.field(static=True)`, `(H, W, C)`
    (a field of theirs, not of this base, so that it keeps its place among their fields).
    """

    if TYPE_CHECKING:  # declared for the type checker only: a field here would be the subclasses' first
        image_shape: tuple[int, int, int]

    @property
    def dim(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    def _query(self, x, sigma):
        return image_query(x, sigma, self.image_shape)
