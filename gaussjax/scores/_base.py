"""The denoiser protocol shared by analytic and neural models."""

from __future__ import annotations

import functools
import math
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_query, is_concrete
from gaussjax.conventions import score_from_denoiser


@runtime_checkable
class Denoiser(Protocol):
    """The denoiser contract: what samplers, ODE solves, metrics and probes read from a model.

    - `dim`: D, the length of the flat vectors the model works on.
    - `denoise(x, sigma)`: estimates `E[y | x = y + sigma n]` for `x (..., D)`, with
      `sigma` a scalar or broadcasting against `x.shape[:-1]`.
    - `score(x, sigma)`: `(denoise(x, sigma) - x) / sigma**2` (EDM Eq. 3, paper Eq. 4),
      i.e. `gaussjax.score_from_denoiser`; a model may compute it more accurately.

    Models on images (`gaussjax.nn.NeuralDenoiser`) also have `image_shape = (H, W, C)`
    with `H W C = D` and accept `x (..., H, W, C)` too; analytic models do not have it.
    Samplers and ODE solves need only `denoise`: any object with that method is
    accepted (a pytree's arrays are traced; another object's arrays are compile-time
    constants, and it is compiled once per instance).
    """

    dim: int

    def denoise(
        self, x: Float[Array, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]: ...

    def score(
        self, x: Float[Array, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]: ...


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
        if is_concrete(x, sigma) and not bool(jnp.all(jnp.isfinite(out))):
            what = {"_denoise": "denoiser", "_score": "score", "_log_density": "log density"}[method]
            raise ValueError(
                f"the {what} of {type(self).__name__} is not representable in {out.dtype} at these inputs "
                f"(sigma in [{float(jnp.min(sigma)):.3g}, {float(jnp.max(sigma)):.3g}]): it overflows; "
                "use a larger sigma or enable jax_enable_x64"
            )
        return out.reshape(out_shape(x.shape))

    def denoise(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """Optimal denoiser `D(x, sigma) = E[y | x]`, shape of `x` `(..., D)`."""
        return self._flat_call("_denoise", x, sigma, lambda shape: shape)

    def score(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """Score `grad_x log p(x; sigma)` of the noised distribution, shape `(..., D)`."""
        return self._flat_call("_score", x, sigma, lambda shape: shape)

    def log_density(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch"]:
        """Normalized `log p(x; sigma)` of the data distribution convolved with N(0, sigma^2 I), shape `(...)`."""
        return self._flat_call("_log_density", x, sigma, lambda shape: shape[:-1])

    def _score(self, x, sigma):
        return score_from_denoiser(self._denoise(x, sigma), x, sigma)


@functools.partial(jax.jit, static_argnames="method")
def _apply(model, method: str, x, sigma):
    """Run `model.<method>(x (B, D), sigma (B,))` compiled (once per model type and shape)."""
    return getattr(model, method)(x, sigma)


def gaussian_log_normalizer(dim: int, sigma: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
    """`-(D/2) log(2 pi sigma^2)`: the log normalizer of N(., sigma^2 I) in D dimensions."""
    return -0.5 * dim * (math.log(2 * math.pi) + 2 * jnp.log(sigma))
