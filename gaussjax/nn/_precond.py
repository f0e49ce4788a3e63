"""EDM preconditioning: the denoiser `D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)` (Karras et al. 2022, Table 1)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gaussjax.nn._unet import SongUNet


def edm_preconditioning(sigma, sigma_data: float = 0.5):
    """EDM's scalings `(c_skip, c_out, c_in, c_noise)` at noise level `sigma` (EDM Table 1, Eq. 7).

    `c_skip = sd^2 / (sigma^2 + sd^2)`, `c_out = sigma sd / sqrt(sigma^2 + sd^2)`,
    `c_in = 1 / sqrt(sigma^2 + sd^2)`, `c_noise = ln(sigma) / 4`, with `sd = sigma_data`
    the data standard deviation. They keep the network's input and training target at
    unit variance; as `sigma -> 0`, `c_skip -> 1` and `c_out -> 0`, so `D(x; sigma) -> x`.

    Args:
        sigma: noise level(s) > 0, any shape.
        sigma_data: standard deviation of the data.

    Returns:
        Four arrays shaped like `sigma`.
    """
    sigma = jnp.asarray(sigma)
    if not jnp.issubdtype(sigma.dtype, jnp.floating):
        sigma = sigma.astype(jnp.result_type(float))
    variance = jnp.square(sigma) + sigma_data**2
    c_skip = sigma_data**2 / variance
    c_out = sigma * sigma_data * jax.lax.rsqrt(variance)
    c_in = jax.lax.rsqrt(variance)
    c_noise = jnp.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(nn.Module):
    """The EDM denoiser around a `SongUNet` `F`: `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`.

    Computed in float32 and cast back to `x`'s dtype, like EDM's `EDMPrecond` without
    fp16. Unconditional nets ignore `class_labels`; conditional ones get zeros when
    none are given (EDM's default). Parameters live under `params['params']['net']`.

    Call: `x (N, H, W, C)` images, `sigma` a scalar or `(N,)`, `class_labels (N,
    label_dim)`, `augment_labels (N, augment_dim)`, `train` enables dropout (the
    `'dropout'` PRNG stream). Returns `D(x; sigma)`, `(N, H, W, C)`.
    """

    net: SongUNet
    sigma_data: float = 0.5  # Expected standard deviation of the training data.

    def __post_init__(self):
        if not isinstance(self.net, SongUNet):
            raise TypeError(f"`net` must be a SongUNet, got {type(self.net).__name__}")
        if self.net.in_channels != self.net.out_channels:
            raise ValueError(
                f"EDMPrecond needs net.out_channels == net.in_channels (D has x's shape), got "
                f"{self.net.out_channels} and {self.net.in_channels}"
            )
        if not self.sigma_data > 0:
            raise ValueError(f"`sigma_data` must be > 0, got {self.sigma_data}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, sigma, class_labels=None, augment_labels=None, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"`x` must have shape (N, H, W, C), got {x.shape}")
        dtype, n = x.dtype, x.shape[0]
        x = x.astype(jnp.float32)
        sigma = jnp.asarray(sigma, jnp.float32)
        if sigma.ndim == 0:
            sigma = jnp.broadcast_to(sigma, (n,))
        elif sigma.shape != (n,):
            raise ValueError(f"`sigma` must be a scalar or have shape (N,) = ({n},), got {sigma.shape}")
        label_dim = self.net.label_dim
        if label_dim:
            if class_labels is None:
                class_labels = jnp.zeros((n, label_dim), jnp.float32)
            class_labels = jnp.asarray(class_labels, jnp.float32).reshape(-1, label_dim)
            if class_labels.shape[0] == 1:
                class_labels = jnp.broadcast_to(class_labels, (n, label_dim))
        else:
            class_labels = None

        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
        F_x = self.net(c_in[:, None, None, None] * x, c_noise, class_labels, augment_labels, train=train)
        D_x = c_skip[:, None, None, None] * x + c_out[:, None, None, None] * F_x.astype(jnp.float32)
        return D_x.astype(dtype)
