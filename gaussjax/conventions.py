"""The EDM convention and the VP / DDPM <-> EDM mapping, in one place (paper Sec. 2.1, App. D.2).

In the EDM convention a noised sample is `x = y + sigma n` and every model's score is
derived from its denoiser, `score = (D(x, sigma) - x) / sigma^2` (`score_from_denoiser`).

A VP state `x_t = alpha_t y + sigma_t n` is the EDM state `x = x_t / alpha_t` at noise
level `sigma = sigma_t / alpha_t`. Every model is written in the EDM convention; these
helpers let VP callers use it: the endpoint estimate is unchanged,
`x0_hat(x_t) = D(x_t / alpha, sigma_t / alpha)`, and the VP score is
`grad_{x_t} log p_t(x_t) = s(x_t / alpha, sigma_t / alpha) / alpha`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def score_from_denoiser(
    denoised: Float[Array, "*batch D"], x: Float[Array, "*batch D"], sigma: Float[ArrayLike, "*#batch"]
) -> Float[Array, "*batch D"]:
    """The score `(D(x, sigma) - x) / sigma^2` (EDM Eq. 3; paper Eq. 4) from a denoiser output.

    `sigma` is a scalar or shaped like `x.shape[:-1]`.
    """
    return (denoised - x) / jnp.square(_per_vector(sigma, x))


def vp_sigma(alpha: Float[ArrayLike, "*T"]) -> Float[Array, "*T"]:
    """The VP noise scale `sigma_t = sqrt(1 - alpha_t^2)` of signal scale `alpha_t` (variance preserving)."""
    return jnp.sqrt(1.0 - jnp.square(jnp.asarray(alpha)))


def vp_alpha_from_edm_sigma(sigma: Float[ArrayLike, "*T"]) -> Float[Array, "*T"]:
    """Signal scale of the VP process at EDM noise level `sigma`: `alpha = 1 / sqrt(1 + sigma^2)`."""
    return 1.0 / jnp.sqrt(1.0 + jnp.square(jnp.asarray(sigma)))


def _per_vector(alpha, x):
    """`alpha` (scalar, or shaped like `x.shape[:-1]`) made to broadcast against `x (..., D)`."""
    alpha = jnp.asarray(alpha)
    return alpha if alpha.ndim == 0 else alpha[..., None]


def vp_to_edm(x_t, alpha, sigma_t):
    """Map a VP state `(x_t (..., D), alpha_t, sigma_t)` to the EDM state `(x_t / alpha_t, sigma_t / alpha_t)`.

    `alpha` and `sigma_t` are scalars or shaped like `x_t.shape[:-1]`.
    """
    return x_t / _per_vector(alpha, x_t), jnp.asarray(sigma_t) / jnp.asarray(alpha)


def edm_to_vp(x, sigma, alpha):
    """Inverse of `vp_to_edm`: EDM `(x, sigma)` at signal scale `alpha` -> VP `(alpha x, alpha sigma)`."""
    return _per_vector(alpha, x) * x, jnp.asarray(alpha) * jnp.asarray(sigma)


def vp_denoise(model, x_t, alpha, sigma_t) -> jax.Array:
    """Endpoint estimate `x0_hat(x_t)` of any EDM-convention `model` for a VP state (App. D.2)."""
    return model.denoise(*vp_to_edm(x_t, alpha, sigma_t))


def vp_score(model, x_t, alpha, sigma_t) -> jax.Array:
    """`grad_{x_t} log p_t(x_t)` for a VP state, from an EDM-convention `model`."""
    x, sigma = vp_to_edm(x_t, alpha, sigma_t)
    return model.score(x, sigma) / _per_vector(alpha, x_t)


__all__ = [
    "edm_to_vp",
    "score_from_denoiser",
    "vp_alpha_from_edm_sigma",
    "vp_denoise",
    "vp_score",
    "vp_sigma",
    "vp_to_edm",
]
