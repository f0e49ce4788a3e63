"""The isotropic score: all data collapsed onto its mean (paper Eq. 29)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from gaussjax._checks import check_float_array
from gaussjax._errors import InputValueError
from gaussjax.scores._base import Density, gaussian_log_normalizer


class Isotropic(Density):
    """A point mass at `mean`: noised, N(mean, sigma^2 I).

    `score(x, sigma) = (mean - x) / sigma^2` (Eq. 29) and `denoise(x, sigma) = mean`:
    the Gaussian model with zero covariance, attracting every state isotropically.

    Args:
        mean: `(D,)` data mean.
    """

    mean: Float[Array, " D"]

    def __post_init__(self):
        mean = check_float_array("mean", self.mean, ndim=1)
        if mean.shape[0] == 0:
            raise InputValueError("`mean` must have shape (D,) with D >= 1, got (0,)")
        self.mean = mean

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def _denoise(self, x, sigma):
        return jnp.broadcast_to(self.mean[None, :], x.shape).astype(jnp.result_type(x, self.mean))

    def _score(self, x, sigma):
        return (self.mean[None, :] - x) / jnp.square(sigma)[:, None]

    def _log_density(self, x, sigma):
        squared = jnp.sum(jnp.square(x - self.mean[None, :]), axis=-1)
        return -0.5 * squared / jnp.square(sigma) + gaussian_log_normalizer(self.dim, sigma)
