"""The closed-form solution of the Gaussian probability-flow ODE (paper Sec. 3, App. D.1-D.4).

For `Gaussian(mu, lambda, U)` the PF-ODE is linear and separates along the principal
axes u_k. With `c_k = u_k . (x_T - alpha_T mu)` and `x_perp = (I - U U^T)(x_T - alpha_T mu)`
(Eq. 15, 18-19):

    x_sigma = alpha mu + (sigma / sigma_T) x_perp + sum_k psi(sigma, lambda_k) c_k u_k
    D(x_sigma, sigma) = mu + sum_k xi(sigma, lambda_k) c_k u_k                      (Eq. 16, 20)

`alpha = alpha_T = 1` is the EDM convention (the default); VP callers pass the signal
scales. Trajectories are vectorized over a batch of `x_T (..., D)` and over a 1-D
vector of noise levels, which becomes the leading output axis.
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from gaussjax._checks import as_float, check_finite, check_key, check_noise_levels, is_concrete
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._precision import matmul
from gaussjax.conventions import vp_sigma
from gaussjax.scores.gaussian import Gaussian


def psi(sigma, lam, sigma_T, alpha=1.0, alpha_T=1.0):
    """Growth of the coordinate along an axis of variance `lam` (Eq. 15; VP form psi-bar, Eq. 18).

        psi = sqrt((sigma^2 + lam alpha^2) / (sigma_T^2 + lam alpha_T^2))

    Elementwise; arguments broadcast (explicitly, e.g. `sigma[:, None]` against `lam[None, :]`).
    """
    return jnp.sqrt((jnp.square(sigma) + lam * jnp.square(alpha)) / (jnp.square(sigma_T) + lam * jnp.square(alpha_T)))


def xi(sigma, lam, sigma_T, alpha=1.0, alpha_T=1.0):
    """Coefficient of the denoiser output along an axis of variance `lam` (Eq. 16; VP xi-bar, Eq. 20).

        xi = alpha lam / sqrt((alpha^2 lam + sigma^2)(alpha_T^2 lam + sigma_T^2))

    `xi / sqrt(lam)` is the sigmoid-like curve of the paper's Fig. 3C.
    """
    return alpha * lam / jnp.sqrt(
        (jnp.square(alpha) * lam + jnp.square(sigma)) * (jnp.square(alpha_T) * lam + jnp.square(sigma_T))
    )


def dxi_dsigma(sigma, lam, sigma_T):
    """`d xi / d sigma` in the EDM convention: `-lam sigma / ((lam + sigma^2)^(3/2) sqrt(lam + sigma_T^2))`.

    Its magnitude peaks at `sigma = sqrt(lam / 2)`: the "critical period" when the feature
    along an axis of variance `lam` develops fastest (Fig. 3D).
    """
    return -lam * sigma / ((lam + jnp.square(sigma)) ** 1.5 * jnp.sqrt(lam + jnp.square(sigma_T)))


def amplification_factor(sigma, lam, alpha=1.0):
    """How much a perturbation along an axis of variance `lam` at noise `sigma` moves the final sample (Eq. 23).

        d x_0 / d c_k = sqrt(lam / (sigma^2 + lam alpha^2))

    Off-manifold perturbations have no effect on x_0.
    """
    return jnp.sqrt(lam / (jnp.square(sigma) + lam * jnp.square(alpha)))


def rotation_correction(alpha, lam):
    """`J(alpha; lam) = sqrt(sigma^2 + lam alpha^2) - alpha sqrt(lam) - sigma`, `sigma^2 = 1 - alpha^2` (Eq. 104).

    Evaluated in the cancellation-free form of Eq. 105, `J = -2 a s / (sqrt(a^2 + s^2) + a + s)`
    with `a = alpha sqrt(lam)`, `s = sigma`: the on-manifold deviation of a VP trajectory
    from the rotation `alpha x_0 + sigma x_T` in the plane of `x_0` and `x_T`. At the
    critical `alpha = 1 / sqrt(1 + lam)` it equals `-(2 - sqrt(2)) sqrt(lam / (1 + lam))`
    (Eq. 107); in general `|J| < sigma <= 1`, and for large `lam` at mid `alpha` it exceeds
    the Eq. 107 value (e.g. `J(0.5; 100) = -0.79`).
    """
    sigma = vp_sigma(alpha)
    root = jnp.sqrt(lam) * alpha
    return -2.0 * sigma * root / (jnp.sqrt(jnp.square(sigma) + jnp.square(root)) + root + sigma)


def _check_gaussian(gaussian) -> Gaussian:
    if not isinstance(gaussian, Gaussian):
        raise InputTypeError(
            f"the closed-form solution needs a gaussjax.Gaussian (fit one with gaussjax.fit_gaussian), "
            f"got {type(gaussian).__name__}"
        )
    return gaussian


def _check_state(gaussian: Gaussian, x_T):
    x_T = as_float("x_T", x_T)
    if x_T.ndim == 0 or x_T.shape[-1] != gaussian.dim:
        raise InputValueError(f"`x_T` must have shape (..., D) with D = {gaussian.dim} (the Gaussian's), got "
                              f"{x_T.shape}")
    check_finite("x_T", x_T)
    return x_T


def _check_trajectory(gaussian, x_T, sigma_T, sigma, alpha_T, alpha):
    """Validated inputs of the trajectory functions; `sigma`, `alpha` as `(S,)` plus a scalar flag."""
    gaussian = _check_gaussian(gaussian)
    x_T = _check_state(gaussian, x_T)
    sigma_T = check_noise_levels("sigma_T", sigma_T, ndim=(0,), positive=True)
    alpha_T = check_noise_levels("alpha_T", alpha_T, ndim=(0,))
    sigma = check_noise_levels("sigma", sigma)
    alpha = check_noise_levels("alpha", alpha)
    if alpha.ndim > sigma.ndim or (alpha.ndim == 1 and alpha.shape != sigma.shape):
        raise InputValueError(f"`alpha` must be a scalar or shaped like `sigma` {sigma.shape}, got shape {alpha.shape}")
    sigma, alpha, scalar = _levels(sigma, alpha)
    return gaussian, x_T, sigma_T, alpha_T, sigma, alpha, scalar


def _decompose(gaussian: Gaussian, x_T, alpha_T):
    """Flatten `x_T` to `(B, D)` and split `x_T - alpha_T mu` into axis coordinates `c (B, r)` and `x_perp (B, D)`."""
    offset = x_T.reshape(math.prod(x_T.shape[:-1]), gaussian.dim) - alpha_T * gaussian.mean[None, :]
    coords = matmul(offset, gaussian.eigvecs)
    return coords, offset - matmul(coords, gaussian.eigvecs.T)


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise InputTypeError(f"`shape` must be a tuple of integers, got {shape!r}") from None
    if any(n < 0 for n in shape):
        raise InputValueError(f"`shape` must hold sizes >= 0, got {shape}")
    return shape


def _levels(sigma, alpha):
    """Noise levels `(S,)` and signal scales `(S,)`, and whether the caller gave a scalar sigma."""
    scalar = sigma.ndim == 0
    sigma = jnp.atleast_1d(sigma)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, sigma.dtype), sigma.shape)
    return sigma, alpha, scalar


def _along_axes(weights, coords, eigvecs):
    """`sum_k weights[s, k] c[b, k] u_k` for every level s and sample b, as one `(S*B, r) @ (r, D)` product."""
    scaled = weights[:, None, :] * coords[None, :, :]  # (S, B, r)
    flat = scaled.reshape(weights.shape[0] * coords.shape[0], coords.shape[1])
    return matmul(flat, eigvecs.T).reshape(weights.shape[0], coords.shape[0], eigvecs.shape[0])


def _restore(out, x_T, scalar: bool):
    out = out.reshape(out.shape[0], *x_T.shape)
    return out[0] if scalar else out


def gaussian_trajectory(
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    sigma_T: Float[ArrayLike, ""] | float,
    sigma: Float[ArrayLike, "*S"] | float,
    alpha_T: Float[ArrayLike, ""] | float = 1.0,
    alpha: Float[ArrayLike, "*S"] | float = 1.0,
) -> Float[Array, "*S *batch D"]:
    """The exact PF-ODE state at noise `sigma`, started from `x_T` at `sigma_T` (Eq. 15; VP Eq. 18, 65).

    Args:
        gaussian: the data model `Gaussian(mu, lambda, U)`, rank r <= D.
        x_T: `(..., D)` initial states at `sigma_T` (e.g. `sigma_T * z` in the EDM convention).
        sigma_T: scalar initial noise level, > 0.
        sigma: target noise level(s) >= 0: a scalar, or `(S,)` for a whole trajectory.
        alpha_T, alpha: VP signal scales at `sigma_T` and at `sigma` (scalar / like `sigma`);
            1 gives the EDM convention.

    Returns:
        `(..., D)` for scalar `sigma`, else `(S, ..., D)`. Includes the off-manifold term
        `(sigma / sigma_T) x_perp`, which vanishes at `sigma = 0` for rank r < D.
    """
    gaussian, x_T, sigma_T, alpha_T, sigma, alpha, scalar = _check_trajectory(
        gaussian, x_T, sigma_T, sigma, alpha_T, alpha
    )
    return _restore(_states(gaussian, x_T, sigma_T, sigma, alpha_T, alpha), x_T, scalar)


def gaussian_denoiser_trajectory(
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    sigma_T: Float[ArrayLike, ""] | float,
    sigma: Float[ArrayLike, "*S"] | float,
    alpha_T: Float[ArrayLike, ""] | float = 1.0,
    alpha: Float[ArrayLike, "*S"] | float = 1.0,
) -> Float[Array, "*S *batch D"]:
    """The denoiser output `D(x_sigma, sigma)` along the exact trajectory (Eq. 16; VP Eq. 20, 66).

    Arguments and shapes as `gaussian_trajectory`. The output stays on the data manifold
    `mu + span(U)` at every sigma.
    """
    gaussian, x_T, sigma_T, alpha_T, sigma, alpha, scalar = _check_trajectory(
        gaussian, x_T, sigma_T, sigma, alpha_T, alpha
    )
    return _restore(_denoised_states(gaussian, x_T, sigma_T, sigma, alpha_T, alpha), x_T, scalar)


@jax.jit
def _states(gaussian, x_T, sigma_T, sigma, alpha_T, alpha):
    """Eq. 15 / 18 for validated inputs: `(S, B, D)` states, `sigma`, `alpha` `(S,)`."""
    coords, perp = _decompose(gaussian, x_T, alpha_T)
    growth = psi(sigma[:, None], gaussian.eigvals[None, :], sigma_T, alpha[:, None], alpha_T)  # (S, r)
    on_manifold = _along_axes(growth, coords, gaussian.eigvecs)
    return (
        alpha[:, None, None] * gaussian.mean[None, None, :]
        + (sigma / sigma_T)[:, None, None] * perp[None]
        + on_manifold
    )


@jax.jit
def _denoised_states(gaussian, x_T, sigma_T, sigma, alpha_T, alpha):
    """Eq. 16 / 20 for validated inputs: `(S, B, D)` denoiser outputs."""
    coords, _ = _decompose(gaussian, x_T, alpha_T)
    gain = xi(sigma[:, None], gaussian.eigvals[None, :], sigma_T, alpha[:, None], alpha_T)  # (S, r)
    return gaussian.mean[None, None, :] + _along_axes(gain, coords, gaussian.eigvecs)


def gaussian_final_state(
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    sigma_T: Float[ArrayLike, ""] | float,
    alpha_T: Float[ArrayLike, ""] | float = 1.0,
) -> Float[Array, "*batch D"]:
    """The sample `x_0` the PF-ODE maps `x_T` to (Eq. 17; VP Eq. 21): a linear filter of `x_T`.

        x_0 = mu + sum_k sqrt(lam_k / (sigma_T^2 + lam_k alpha_T^2)) u_k u_k^T (x_T - alpha_T mu)
    """
    return gaussian_trajectory(gaussian, x_T, sigma_T, 0.0, alpha_T=alpha_T, alpha=1.0)


def teleport(
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    sigma_T: Float[ArrayLike, ""] | float,
    sigma_skip: Float[ArrayLike, ""] | float,
) -> Float[Array, "*batch D"]:
    """Analytical teleportation (Alg. 1, line 1): the state at `sigma_skip` without running a sampler.

    Args:
        gaussian: Gaussian fitted to the training data (mean, covariance eigenpairs).
        x_T: `(..., D)` sampler initial states at `sigma_T` (`sigma_max * z`).
        sigma_T: the sampler's first noise level.
        sigma_skip: where the sampler resumes, `0 < sigma_skip <= sigma_T`.

    Returns:
        `(..., D)` states at `sigma_skip` (EDM convention).
    """
    sigma_T = check_noise_levels("sigma_T", sigma_T, ndim=(0,), positive=True)
    sigma_skip = check_noise_levels("sigma_skip", sigma_skip, ndim=(0,), positive=True, dtype=sigma_T.dtype)
    if is_concrete(sigma_skip, sigma_T) and float(sigma_skip) > float(sigma_T):
        raise InputValueError(f"`sigma_skip` = {float(sigma_skip)} must not exceed `sigma_T` = {float(sigma_T)}")
    return gaussian_trajectory(gaussian, x_T, sigma_T, sigma_skip)


def gaussian_warm_start(
    gaussian: Gaussian, key: PRNGKeyArray, shape: tuple[int, ...], sigma: Float[ArrayLike, ""] | float
) -> Float[Array, "*shape D"]:
    """Sample the Gaussian-predicted distribution N(mu, Sigma + sigma^2 I) at noise `sigma` (Sec. 8).

    A "warm start": begin sampling at `sigma` from the state distribution the Gaussian
    model predicts there, instead of from `sigma_max z`. Uses one normal draw per
    sample: `mu + sigma z + U diag(sqrt(lam + sigma^2) - sigma) U^T z`.

    Returns:
        `shape + (D,)` samples.
    """
    gaussian = _check_gaussian(gaussian)
    key = check_key(key)
    sigma = check_noise_levels("sigma", sigma, ndim=(0,))
    shape = _check_shape(shape)
    z = jax.random.normal(key, (*shape, gaussian.dim), gaussian.mean.dtype).reshape(-1, gaussian.dim)
    stretch = jnp.sqrt(gaussian.eigvals + jnp.square(sigma)) - sigma  # (r,)
    along_axes = matmul(matmul(z, gaussian.eigvecs) * stretch[None, :], gaussian.eigvecs.T)
    samples = gaussian.mean[None, :] + sigma * z + along_axes
    return samples.reshape(*shape, gaussian.dim)


def rotation_decomposition(
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    alpha_T: Float[ArrayLike, ""] | float,
    alpha: Float[ArrayLike, ""] | float,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, "*batch D"]]:
    """Split a VP trajectory into a rotation in the (x_0, x_T) plane plus a correction (Eq. 101-103).

    For a VP process (`sigma^2 = 1 - alpha^2`) started at signal scale `alpha_T`:

        x_t = a x_0 + b x_T + R_t,   b = sqrt((1 - alpha^2) / (1 - alpha_T^2)),   a = alpha - alpha_T b

    with `R_t = sum_k [psi_k(t) - b - a psi_k(0)] c_k u_k` on the data manifold. For
    `alpha_T = 0` the bracket is `J(alpha; lam_k)` (Eq. 104) and `||R_t||^2 = sum_k J^2 c_k^2`
    (Eq. 108).

    Args:
        gaussian: the data model.
        x_T: `(..., D)` initial states at signal scale `alpha_T` in [0, 1).
        alpha_T, alpha: scalars, the signal scales at the start and at time t.

    Returns:
        `(a, b, R_t)` with `R_t` of shape `(..., D)`; `x_0` is `gaussian_final_state(gaussian,
        x_T, sqrt(1 - alpha_T^2), alpha_T)`.
    """
    gaussian = _check_gaussian(gaussian)
    x_T = _check_state(gaussian, x_T)
    alpha_T = check_noise_levels("alpha_T", alpha_T, ndim=(0,))
    alpha = check_noise_levels("alpha", alpha, ndim=(0,))
    if is_concrete(alpha_T, alpha) and not (float(alpha_T) < 1 and float(alpha) <= 1):
        raise InputValueError(f"need 0 <= alpha_T < 1 and 0 <= alpha <= 1, got alpha_T={float(alpha_T)}, "
                              f"alpha={float(alpha)}")
    sigma, sigma_T = vp_sigma(alpha), vp_sigma(alpha_T)
    b = sigma / sigma_T
    a = alpha - alpha_T * b
    coords, _ = _decompose(gaussian, x_T, alpha_T)
    lam = gaussian.eigvals
    bracket = psi(sigma, lam, sigma_T, alpha, alpha_T) - b - a * psi(0.0, lam, sigma_T, 1.0, alpha_T)
    residual = matmul(coords * bracket[None, :], gaussian.eigvecs.T)
    return a, b, residual.reshape(x_T.shape)


__all__ = [
    "amplification_factor",
    "dxi_dsigma",
    "gaussian_denoiser_trajectory",
    "gaussian_final_state",
    "gaussian_trajectory",
    "gaussian_warm_start",
    "psi",
    "rotation_correction",
    "rotation_decomposition",
    "teleport",
    "xi",
]
