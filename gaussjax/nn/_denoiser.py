"""A trained network behind the denoiser protocol, so samplers and metrics treat it like an analytic model."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_finite, check_query
from gaussjax._pytree import pytree_dataclass, static_field
from gaussjax.conventions import score_from_denoiser
from gaussjax.nn._precond import (
    PRECONDITIONERS,
    EDMPrecond,
    VEPrecond,
    VPPrecond,
    iDDPMPrecond,
)


@pytree_dataclass
class NeuralDenoiser:
    """A preconditioned network with its parameters, as a `Denoiser`: `denoise(x, sigma)` and `score(x, sigma)`.

    Queries are flat vectors `x (..., D)`, `D = H W C` (the layout of every analytic
    model, sampler and metric in gaussjax; pixels in row-major HWC order, as
    `Dataset.flat`), or images `x (..., H, W, C)`; the output has the query's layout.
    `sigma` is a scalar or broadcasts against the batch axes `(...)`. The network runs
    in evaluation mode (no dropout). A pytree: `params` (and `class_labels`) are leaves,
    so the denoiser passes through `jax.jit` as an argument.

    Args:
        module: the network: an `EDMPrecond`, `VPPrecond`, `VEPrecond` or `iDDPMPrecond`.
        params: its variables, as from `module.init` (`{'params': ...}`).
        image_shape: `(H, W, C)`; default `(R, R, C)`, `R = net.img_resolution`, `C = net.in_channels`
            (an iDDPM net outputs `2 C` channels; `D` keeps the first `C`).
        class_labels: `(label_dim,)` for every query or `(..., label_dim)` per query, for a
            conditional network, finite in float32 (checked when concrete); None: zeros (EDM's default).
    """

    module: EDMPrecond | VPPrecond | VEPrecond | iDDPMPrecond = static_field()
    params: Any
    image_shape: tuple = static_field(default=None)
    class_labels: Any = None

    def __post_init__(self):
        if not isinstance(self.module, PRECONDITIONERS):
            names = ", ".join(cls.__name__ for cls in PRECONDITIONERS)
            raise TypeError(f"`module` must be one of {names}, got {type(self.module).__name__}")
        net = self.module.net
        expected = (net.img_resolution, net.img_resolution, net.in_channels)
        shape = expected if self.image_shape is None else tuple(int(s) for s in self.image_shape)
        if shape != expected:
            raise ValueError(f"`image_shape` must be (H, W, C) = {expected} for this network, got {shape}")
        object.__setattr__(self, "image_shape", shape)
        if self.class_labels is not None:
            if not net.label_dim:
                raise ValueError("`class_labels` given, but the network is unconditional (label_dim = 0)")
            with np.errstate(over="ignore"):  # overflow to inf is refused below
                labels = jnp.asarray(self.class_labels, jnp.float32)
            if labels.ndim == 0 or labels.shape[-1] != net.label_dim:
                raise ValueError(f"`class_labels` must have shape (..., {net.label_dim}), got {labels.shape}")
            check_finite("class_labels", labels)
            object.__setattr__(self, "class_labels", labels)

    @property
    def dim(self) -> int:
        """`D = H * W * C`."""
        h, w, c = self.image_shape
        return h * w * c

    def denoise(
        self,
        x: Float[ArrayLike, "*batch D"] | Float[ArrayLike, "*batch H W C"],
        sigma: Float[ArrayLike, "*#batch"] | float,
    ) -> Float[Array, "*batch D"] | Float[Array, "*batch H W C"]:
        """`D(x; sigma)`, shape and layout of `x` (`(..., D)` or `(..., H, W, C)`)."""
        flat, sigma, restore = self._query(x, sigma)
        return restore(self._denoise(flat, sigma))

    def score(
        self,
        x: Float[ArrayLike, "*batch D"] | Float[ArrayLike, "*batch H W C"],
        sigma: Float[ArrayLike, "*#batch"] | float,
    ) -> Float[Array, "*batch D"] | Float[Array, "*batch H W C"]:
        """`(D(x; sigma) - x) / sigma^2`, shape and layout of `x`."""
        flat, sigma, restore = self._query(x, sigma)
        return restore(score_from_denoiser(self._denoise(flat, sigma), flat, sigma))

    def _query(self, x, sigma):
        """Validated flat `x (..., D)`, `sigma (...)` and a function restoring `x`'s layout."""
        x = jnp.asarray(x)
        if x.ndim >= 3 and x.shape[-3:] == self.image_shape and self.image_shape[-1] != self.dim:
            batch = x.shape[:-3]
            x_flat, sigma = check_query(x.reshape(*batch, self.dim), sigma, self.dim)
            return x_flat, sigma, lambda out: out.reshape(*batch, *self.image_shape)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"`x` must have shape (..., D) with D = {self.dim} or (..., H, W, C) = (..., "
                f"{', '.join(map(str, self.image_shape))}), got {jnp.shape(x)}"
            )
        x_flat, sigma = check_query(x, sigma, self.dim)
        return x_flat, sigma, lambda out: out

    def _denoise(self, x, sigma):
        batch = x.shape[:-1]
        labels = self.class_labels
        if labels is not None:
            labels = jnp.broadcast_to(labels, (*batch, labels.shape[-1]) if labels.ndim == 1 else labels.shape)
            if labels.shape[:-1] != batch:
                raise ValueError(f"`class_labels` must have shape (label_dim,) or {batch} + (label_dim,), "
                                 f"got {labels.shape}")
            labels = labels.reshape(-1, labels.shape[-1])
        images = x.reshape(-1, *self.image_shape)
        out = _apply(self.module, self.params, images, sigma.reshape(-1), labels)
        return out.reshape(x.shape)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, params, x, sigma, class_labels):
    """The network in evaluation mode, compiled once per module and shape."""
    return module.apply(params, x, sigma, class_labels, train=False)
