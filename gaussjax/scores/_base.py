"""The model contract: `Denoiser` (a denoiser, its score derived) and `Density` (a denoiser with a log density)."""

from __future__ import annotations

import abc
import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import all_finite, as_float, check_query, is_concrete, summarize
from gaussjax._errors import InputValueError
from gaussjax._pytree import Module, jit_call
from gaussjax.conventions import score_from_denoiser


class Denoiser(Module):
    """The denoiser contract: what samplers, ODE solves, metrics and probes read from a model.

    - `dim`: D, the length of the flat vectors the model works on.
    - `denoise(x, sigma)` (abstract): estimates `E[y | x = y + sigma n]` for `x (..., D)`,
      with `sigma` a scalar or broadcasting against `x.shape[:-1]`.
    - `score(x, sigma)`: `(denoise(x, sigma) - x) / sigma**2` (EDM Eq. 3, paper Eq. 4),
      i.e. `gaussjax.score_from_denoiser`; a model may override it with a more accurate formula.

    Models on images (`gaussjax.nn.NeuralDenoiser`, the local models) also have
    `image_shape = (H, W, C)` with `H W C = D` and accept `x (..., H, W, C)` too (see
    `image_query`). A model is an immutable pytree (`equinox.Module`), so it passes through
    `jax.jit`, `jax.vmap` and `jax.grad` as an argument. Samplers and ODE solves need only
    `denoise`: any object with that method is accepted (another object's arrays are
    compile-time constants, and it is compiled once per instance).
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """D, the length of the flat vectors the model works on."""

    @abc.abstractmethod
    def denoise(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """`D(x; sigma) = E[y | x]`, shape and layout of `x`."""

    def score(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """Score `(D(x; sigma) - x) / sigma^2` of the noised distribution, shape and layout of `x`."""
        flat, sigma, restore = self._query(x, sigma)
        return restore(score_from_denoiser(self.denoise(flat, sigma), flat, sigma))

    def _query(self, x, sigma):
        """Validated flat `x (..., D)`, `sigma` broadcast to `(...)`, and the function restoring `x`'s layout."""
        x, sigma = check_query(x, sigma, self.dim)
        return x, sigma, _same_layout

    def _evaluate(self, method: str, x, sigma, *, vector: bool = True):
        """`self.<method>(x (B, D), sigma (B,))` on the validated, flattened query, compiled (`jit_call`).

        Returns the output in `x`'s layout (`vector`: one D-vector per query) or shaped like the
        query's batch axes (one number per query).
        """
        flat, sigma, restore = self._query(x, sigma)
        out = jit_call(self, method, flat.reshape(-1, self.dim), sigma.reshape(-1))
        return restore(out.reshape(flat.shape)) if vector else out.reshape(flat.shape[:-1])


def _extremes(xp, values):
    return xp.min(values), xp.max(values)


def _same_layout(out):
    return out


def image_query(x, sigma, image_shape: tuple[int, int, int]):
    """The query layout of models on images: `x (..., D)` or `x (..., H, W, C)` with `(H, W, C) = image_shape`.

    Returns the validated flat `x (..., D)`, `sigma` broadcast to its batch axes `(...)`, and
    the function restoring `x`'s layout on an output `(..., D)`. Raises `ValueError` naming `x`
    (both accepted shapes) or `sigma`.
    """
    height, width, channels = image_shape
    dim = height * width * channels
    x = as_float("x", x)
    shape = x.shape
    if len(shape) >= 3 and shape[-3:] == tuple(image_shape):
        batch = shape[:-3]
        flat, sigma = check_query(x.reshape(*batch, dim), sigma, dim)
        return flat, sigma, lambda out: out.reshape(*batch, *image_shape)
    if not shape or shape[-1] != dim:
        raise InputValueError(
            f"`x` must have shape (..., D) with D = {dim} or (..., H, W, C) = (..., {height}, {width}, {channels}), "
            f"got {shape}"
        )
    flat, sigma = check_query(x, sigma, dim)
    return flat, sigma, _same_layout


class AnalyticModel(Denoiser):
    """A denoiser given by formulas: validation at the boundary, then the model's formulas, compiled.

    Subclasses define `dim` and `_denoise(x, sigma)` for a validated, flattened batch
    `x (B, D)`, `sigma (B,)`, and may override `_score` with a numerically better formula
    than `(denoise - x) / sigma**2`. The public methods restore the caller's layout, and
    refuse (`ValueError`) an output that overflows at concrete inputs.
    """

    def denoise(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """Optimal denoiser `D(x, sigma) = E[y | x]`, shape and layout of `x`."""
        return self._evaluate("_denoise", x, sigma)

    def score(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch D"]:
        """Score `grad_x log p(x; sigma)` of the noised distribution, shape and layout of `x`."""
        return self._evaluate("_score", x, sigma)

    @abc.abstractmethod
    def _denoise(self, x: Float[Array, "B D"], sigma: Float[Array, " B"]) -> Float[Array, "B D"]:
        """The model's denoiser on a validated flat batch."""

    def _score(self, x: Float[Array, "B D"], sigma: Float[Array, " B"]) -> Float[Array, "B D"]:
        return score_from_denoiser(self._denoise(x, sigma), x, sigma)

    def _evaluate(self, method: str, x, sigma, *, vector: bool = True):
        """`Denoiser._evaluate`, refusing a non-finite output at concrete inputs (finite inputs, so an overflow)."""
        out = super()._evaluate(method, x, sigma, vector=vector)
        if is_concrete(out) and not all_finite(out):
            what = {"_denoise": "denoiser", "_score": "score", "_log_density": "log density"}[method]
            low, high = summarize(_extremes, as_float("sigma", sigma))
            raise InputValueError(
                f"the {what} of {type(self).__name__} is not representable in {out.dtype} at these inputs "
                f"(sigma in [{low:.3g}, {high:.3g}]): it overflows; use a larger sigma or enable jax_enable_x64"
            )
        return out


class Density(AnalyticModel):
    """An analytic model of a distribution: a denoiser with a normalized log density.

    Subclasses also define `_log_density(x (B, D), sigma (B,)) -> (B,)`; its gradient in `x`
    is the score.
    """

    def log_density(
        self, x: Float[ArrayLike, "*batch D"], sigma: Float[ArrayLike, "*#batch"] | float
    ) -> Float[Array, "*batch"]:
        """Normalized `log p(x; sigma)` of the data distribution convolved with N(0, sigma^2 I), shape `(...)`."""
        return self._evaluate("_log_density", x, sigma, vector=False)

    @abc.abstractmethod
    def _log_density(self, x: Float[Array, "B D"], sigma: Float[Array, " B"]) -> Float[Array, " B"]:
        """The model's log density on a validated flat batch."""


def gaussian_log_normalizer(dim: int, sigma: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
    """`-(D/2) log(2 pi sigma^2)`: the log normalizer of N(., sigma^2 I) in D dimensions."""
    return -0.5 * dim * (math.log(2 * math.pi) + 2 * jnp.log(sigma))
