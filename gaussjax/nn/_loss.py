"""EDM's denoising score-matching loss (Karras et al. 2022, Eq. 8 and Sec. 5, `training/loss.py` EDMLoss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gaussjax._checks import check_int, check_key, check_real
from gaussjax._errors import InputValueError
from gaussjax.nn._precond import EDMPrecond
from gaussjax.nn._rng import bit_generator_key


def edm_sigmas(key, n: int, *, P_mean: float = -1.2, P_std: float = 1.2, sigma_max: float | None = None):
    """EDM's training noise levels `(n,)` float32: `ln sigma ~ N(P_mean, P_std^2)`, optionally truncated at `sigma_max`.

    Without `sigma_max`: `exp(P_mean + P_std * normal(key, (n,)))` (EDM; what `edm_loss` draws).
    With it (warm-start training, paper Sec. 8 "Noise schedule"): `ln sigma` follows the same normal
    truncated to `(-inf, ln sigma_max]` and renormalised, drawn exactly by the inverse CDF:
    `ln sigma = P_mean + P_std * Phi^(-1)(u Phi(b))`, `u ~ U(0, 1)` (from `key`), `b = (ln sigma_max -
    P_mean) / P_std`; `sigma <= sigma_max` always (float rounding is clipped). Jittable.

    Raises:
        InputValueError / InputTypeError: `n` not an integer >= 1, `sigma_max` not a finite real > 0.
    """
    n = check_int("n", n, minimum=1)
    if sigma_max is None:
        return jnp.exp(jax.random.normal(key, (n,), jnp.float32) * P_std + P_mean)
    check_real("sigma_max", sigma_max, minimum=0, strict=True)
    bound = (jnp.log(jnp.float32(sigma_max)) - P_mean) / P_std
    tiny = jnp.finfo(jnp.float32).tiny  # u > 0: Phi^(-1)(0) = -inf
    u = jax.random.uniform(key, (n,), jnp.float32, minval=tiny, maxval=1.0) * jax.scipy.special.ndtr(bound)
    sigma = jnp.exp(P_mean + P_std * jax.scipy.special.ndtri(jnp.maximum(u, tiny)))
    return jnp.minimum(sigma, jnp.float32(sigma_max))


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
    sigma_max: float | None = None,
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
    With `sigma_max` (warm-start training) the noise levels are `edm_sigmas(key_sigma, N, ...,
    sigma_max=sigma_max)`: the log-normal truncated at `sigma_max` and renormalised; without it
    they are drawn exactly as before.

    Args:
        precond: the `EDMPrecond` module.
        params: its variables, as returned by `precond.init` (`{'params': ...}`).
        images: `(N, H, W, C)` clean training images `y`.
        key: PRNG key.
        class_labels: `(N, label_dim)` for a conditional network.
        augment_labels: `(N, augment_dim)` augmentation labels of the images.
        P_mean, P_std: location and scale of the log-normal noise distribution.
        sigma_data: data standard deviation of the loss weight.
        sigma_max: the largest noise level drawn (warm start), or None (EDM's full log-normal).

    Returns:
        `(loss (N,), sigma (N,))`, float32.
    """
    key = check_key(key)
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise InputValueError(f"`images` must have shape (N, H, W, C), got {images.shape}")
    y = images.astype(jnp.float32)
    key_sigma, key_noise, key_dropout = jax.random.split(key, 3)
    sigma = edm_sigmas(key_sigma, y.shape[0], P_mean=P_mean, P_std=P_std, sigma_max=sigma_max)
    weight = (jnp.square(sigma) + sigma_data**2) / jnp.square(sigma * sigma_data)
    n = jax.random.normal(key_noise, y.shape, jnp.float32) * sigma[:, None, None, None]
    D_yn = precond.apply(params, y + n, sigma, class_labels, augment_labels, train=True,
                         rngs={"dropout": bit_generator_key(key_dropout)})
    # `apply` returns `(output, state)` only when given `mutable`, which it is not here.
    loss = weight * jnp.mean(jnp.square(D_yn.astype(jnp.float32) - y), axis=(1, 2, 3))  # type: ignore[union-attr]
    return loss, sigma
