"""The denoiser protocol shared by analytic and neural models."""

from __future__ import annotations

import functools
import math
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from gaussjax._checks import check_query


@runtime_checkable
class Denoiser(Protocol):
    """Anything samplers, ODE solves and metrics accept: a denoiser and its score.

    `denoise(x, sigma)` estimates `E[y | x = y + sigma n]` for `x (..., D)`; `score(x,
    sigma) = (denoise(x, sigma) - x) / sigma**2` (EDM Eq. 3, paper Eq. 4).
    """

    def denoise(self, x: jax.Array, sigma) -> jax.Array: ...

    def score(self, x: jax.Array, sigma) -> jax.Array: ...


class AnalyticModel:
    """Base of the analytic models: validation at the boundary, then the model's formulas.

    Subclasses define `dim`, `_denoise(x, sigma)` and `_log_density(x, sigma)` for a
    validated, flattened batch `x (B, D)`, `sigma (B,)`, and may override `_score` with
    a numerically better formula than `(denoise - x) / sigma**2`. The public methods
    restore the caller's leading axes.
    """

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _flat_call(self, method: str, x, sigma, out_shape):
        x, sigma = check_query(x, sigma, self.dim)
        out = _apply(self, method, x.reshape(-1, self.dim), sigma.reshape(-1))
        return out.reshape(out_shape(x.shape))

    def denoise(self, x, sigma) -> jax.Array:
        """Optimal denoiser `D(x, sigma) = E[y | x]`, shape of `x` `(..., D)`."""
        return self._flat_call("_denoise", x, sigma, lambda shape: shape)

    def score(self, x, sigma) -> jax.Array:
        """Score `grad_x log p(x; sigma)` of the noised distribution, shape `(..., D)`."""
        return self._flat_call("_score", x, sigma, lambda shape: shape)

    def log_density(self, x, sigma) -> jax.Array:
        """Normalized `log p(x; sigma)` of the data distribution convolved with N(0, sigma^2 I), shape `(...)`."""
        return self._flat_call("_log_density", x, sigma, lambda shape: shape[:-1])

    def _score(self, x, sigma):
        return (self._denoise(x, sigma) - x) / jnp.square(sigma)[:, None]


@functools.partial(jax.jit, static_argnames="method")
def _apply(model, method: str, x, sigma):
    """Run `model.<method>(x (B, D), sigma (B,))` compiled (once per model type and shape)."""
    return getattr(model, method)(x, sigma)


def gaussian_log_normalizer(dim: int, sigma) -> jax.Array:
    """`-(D/2) log(2 pi sigma^2)`: the log normalizer of N(., sigma^2 I) in D dimensions."""
    return -0.5 * dim * (math.log(2 * math.pi) + 2 * jnp.log(sigma))
