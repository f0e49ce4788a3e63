"""EDM's denoising score-matching loss (Karras et al. 2022, Eq. 8 and Sec. 5, `training/loss.py` EDMLoss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gaussjax._checks import check_key
from gaussjax._errors import InputValueError
from gaussjax.nn._precond import EDMPrecond
from gaussjax.nn._rng import bit_generator_key


def edm_loss(
    precond: EDMPrecond,
    params,
    images,
    key,
    *,
    class_labels=None,
    augment_labels=None,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    sigma_data: float = 0.5,
):
    """Per-example EDM loss `lambda(sigma) * mean_pixels (D(y + sigma n; sigma) - y)^2` and its `sigma`.

    `ln sigma ~ N(P_mean, P_std^2)` per example, `n ~ N(0, I)`, and the weight
    `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2` makes the loss of the preconditioned
    network's target unit-scale at every sigma (EDM Eq. 8, Table 1). The network runs
    with `train=True` (dropout on).

    EDM's `EDMLoss` returns the per-pixel terms and its training loop *sums* them over
    pixels; here they are *averaged* over pixels (`H W C`), so losses are comparable across
    resolutions. Multiply by `H * W * C` for EDM's value (Adam is invariant to that scale).

    `key` is split as `key_sigma, key_noise, key_dropout = jax.random.split(key, 3)`:
    `ln sigma = P_mean + P_std * normal(key_sigma, (N,))`, `n = normal(key_noise,
    images.shape)`, and the network's `'dropout'` stream is `bit_generator_key(key_dropout)`
    (XLA's bit generator: dropout masks without a threefry kernel per layer). Pure and jittable.

    Args:
        precond: the `EDMPrecond` module.
        params: its variables, as returned by `precond.init` (`{'params': ...}`).
        images: `(N, H, W, C)` clean training images `y`.
        key: PRNG key.
        class_labels: `(N, label_dim)` for a conditional network.
        augment_labels: `(N, augment_dim)` augmentation labels of the images.
        P_mean, P_std: location and scale of the log-normal noise distribution.
        sigma_data: data standard deviation of the loss weight.

    Returns:
        `(loss (N,), sigma (N,))`, float32.
    """
    key = check_key(key)
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise InputValueError(f"`images` must have shape (N, H, W, C), got {images.shape}")
    y = images.astype(jnp.float32)
    key_sigma, key_noise, key_dropout = jax.random.split(key, 3)
    rnd_normal = jax.random.normal(key_sigma, (y.shape[0],), jnp.float32)
    sigma = jnp.exp(rnd_normal * P_std + P_mean)
    weight = (jnp.square(sigma) + sigma_data**2) / jnp.square(sigma * sigma_data)
    n = jax.random.normal(key_noise, y.shape, jnp.float32) * sigma[:, None, None, None]
    D_yn = precond.apply(params, y + n, sigma, class_labels, augment_labels, train=True,
                         rngs={"dropout": bit_generator_key(key_dropout)})
    # `apply` returns `(output, state)` only when given `mutable`, which it is not here.
    loss = weight * jnp.mean(jnp.square(D_yn.astype(jnp.float32) - y), axis=(1, 2, 3))  # type: ignore[union-attr]
    return loss, sigma
