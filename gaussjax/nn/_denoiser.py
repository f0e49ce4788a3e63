"""A trained network behind the denoiser protocol, so samplers and metrics treat it like an analytic model."""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_choice, check_finite
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.nn._conv import CONV_IMPLS
from gaussjax.nn._precond import (
    PRECONDITIONERS,
    EDMPrecond,
    VEPrecond,
    VPPrecond,
    iDDPMPrecond,
)
from gaussjax.scores._base import Denoiser, image_query


class NeuralDenoiser(Denoiser):
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

    module: EDMPrecond | VPPrecond | VEPrecond | iDDPMPrecond = eqx.field(static=True)
    params: Any
    image_shape: tuple = eqx.field(static=True, default=None)
    class_labels: Any = None

    def __post_init__(self):
        if not isinstance(self.module, PRECONDITIONERS):
            names = ", ".join(cls.__name__ for cls in PRECONDITIONERS)
            raise InputTypeError(f"`module` must be one of {names}, got {type(self.module).__name__}")
        net = self.module.net
        expected = (net.img_resolution, net.img_resolution, net.in_channels)
        shape = expected if self.image_shape is None else tuple(int(s) for s in self.image_shape)
        if shape != expected:
            raise InputValueError(f"`image_shape` must be (H, W, C) = {expected} for this network, got {shape}")
        self.image_shape = shape
        if self.class_labels is not None:
            if not net.label_dim:
                raise InputValueError("`class_labels` given, but the network is unconditional (label_dim = 0)")
            with np.errstate(over="ignore"):  # overflow to inf is refused below
                labels = jnp.asarray(self.class_labels, jnp.float32)
            if labels.ndim == 0 or labels.shape[-1] != net.label_dim:
                raise InputValueError(f"`class_labels` must have shape (..., {net.label_dim}), got {labels.shape}")
            check_finite("class_labels", labels)
            self.class_labels = labels

    @property
    def dim(self) -> int:
        """`D = H * W * C`."""
        h, w, c = self.image_shape
        return h * w * c

    def with_conv_impl(self, conv_impl: str) -> NeuralDenoiser:
        """The same network and parameters with its 3x3 convolutions formulated as `conv_impl`.

        `'xla'`, `'matmul'` or `'auto'` (see `SongUNet`): equal results up to float rounding, at
        different speeds; e.g. `'xla'` for a network evaluated outside compiled loops on a CPU.
        Raises `ValueError` naming the choices for any other value.
        """
        check_choice("conv_impl", conv_impl, CONV_IMPLS)
        module = self.module.clone(net=self.module.net.clone(conv_impl=conv_impl))
        return dataclasses.replace(self, module=module)

    def denoise(
        self,
        x: Float[ArrayLike, "*batch D"] | Float[ArrayLike, "*batch H W C"],
        sigma: Float[ArrayLike, "*#batch"] | float,
    ) -> Float[Array, "*batch D"] | Float[Array, "*batch H W C"]:
        """`D(x; sigma)`, shape and layout of `x` (`(..., D)` or `(..., H, W, C)`)."""
        return self._evaluate("_network", x, sigma)

    def _query(self, x, sigma):
        """`image_query`, and per-query class labels checked against the batch axes."""
        flat, sigma, restore = image_query(x, sigma, self.image_shape)
        labels = self.class_labels
        if labels is not None and labels.ndim > 1 and labels.shape[:-1] != flat.shape[:-1]:
            raise InputValueError(f"`class_labels` must have shape (label_dim,) or {flat.shape[:-1]} + (label_dim,), "
                                  f"got {labels.shape}")
        return flat, sigma, restore

    def _network(self, x: Float[Array, "B D"], sigma: Float[Array, " B"]) -> Float[Array, "B D"]:
        """The network in evaluation mode on a flat batch, the labels as `(B, label_dim)`."""
        labels = self.class_labels
        if labels is not None:
            labels = jnp.broadcast_to(labels.reshape(-1, labels.shape[-1]), (x.shape[0], labels.shape[-1]))
        images = x.reshape(-1, *self.image_shape)
        # `apply` returns `(output, state)` only when given `mutable`, which it is not here.
        out = self.module.apply(self.params, images, sigma, labels, train=False)
        return out.reshape(x.shape)  # type: ignore[union-attr]
