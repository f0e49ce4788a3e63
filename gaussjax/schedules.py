"""Noise schedules: the EDM (Karras) sigma grid and the DDPM linear / cosine VP schedules.

EDM-convention samplers take a decreasing grid of noise levels `sigma`. VP / DDPM
models are indexed by `alphas_cumprod = alpha_t^2` (as diffusers names it), with
`sigma_t^2 = 1 - alpha_t^2`; their EDM noise level is `sigma_t / alpha_t`
(paper App. D.2).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_positive_int


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
    """The EDM sampling grid (Karras et al. 2022, Eq. 5; paper Eq. 40), with a trailing 0.

        sigma_i = (sigma_max^(1/rho) + i / (num_steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

    for `i = 0 .. num_steps - 1`, then `sigma_{num_steps} = 0` (as NVlabs/edm).

    Returns:
        `(num_steps + 1,)` array of the default float dtype, strictly decreasing.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    if not 0 < sigma_min <= sigma_max or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not rho > 0:
        raise ValueError(f"`rho` must be > 0, got {rho}")
    if num_steps == 1:
        steps = np.array([sigma_max], dtype=np.float64)
    else:
        ramp = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
        steps = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return jnp.asarray(np.append(steps, 0.0))


@dataclasses.dataclass(frozen=True)
class VPSchedule:
    """A discrete VP / DDPM schedule, `alphas_cumprod[t] = alpha_t^2` for `t = 0 .. T-1` (noise increasing)."""

    alphas_cumprod: np.ndarray  # (T,) float64, decreasing in t, in (0, 1)

    def __post_init__(self):
        values = np.asarray(self.alphas_cumprod, dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or np.any(values <= 0) or np.any(values > 1):
            raise ValueError("`alphas_cumprod` must be a non-empty 1-D array with values in (0, 1]")
        if np.any(np.diff(values) >= 0):
            raise ValueError("`alphas_cumprod` must be strictly decreasing (noise increases with t)")
        values.setflags(write=False)
        object.__setattr__(self, "alphas_cumprod", values)

    @property
    def alpha(self) -> np.ndarray:
        """Signal scale `alpha_t = sqrt(alphas_cumprod)`, `(T,)`."""
        return np.sqrt(self.alphas_cumprod)

    @property
    def sigma(self) -> np.ndarray:
        """VP noise scale `sigma_t = sqrt(1 - alphas_cumprod)`, `(T,)`."""
        return np.sqrt(1.0 - self.alphas_cumprod)

    @property
    def edm_sigma(self) -> np.ndarray:
        """The equivalent EDM noise level `sigma_t / alpha_t`, `(T,)` increasing."""
        return np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)

    def timesteps(self, num_steps: int) -> np.ndarray:
        """`num_steps` evenly spaced timesteps from `T - 1` down to 0 (DDIM's "linspace" spacing)."""
        num_steps = check_positive_int("num_steps", num_steps)
        if num_steps > len(self.alphas_cumprod):
            raise ValueError(f"`num_steps` = {num_steps} exceeds the schedule's {len(self.alphas_cumprod)} timesteps")
        return np.round(np.linspace(len(self.alphas_cumprod) - 1, 0, num_steps)).astype(np.int64)


def ddpm_linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> VPSchedule:
    """DDPM's linear-beta schedule (Ho et al. 2020): `beta_t` linear, `alphas_cumprod = prod(1 - beta)`."""
    num_timesteps = check_positive_int("num_timesteps", num_timesteps)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    return VPSchedule(np.cumprod(1.0 - betas))


def cosine_schedule(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> VPSchedule:
    """The cosine schedule (Nichol & Dhariwal 2021): `alphas_cumprod(t) = f(t) / f(0)`,
    `f(t) = cos^2(((t / T) + s) / (1 + s) pi / 2)`, with each `beta_t` clipped at `max_beta`."""
    num_timesteps = check_positive_int("num_timesteps", num_timesteps)
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
    return VPSchedule(np.cumprod(1.0 - betas))


def vp_alpha_from_edm_sigma(sigma):
    """Signal scale of the VP process at EDM noise level `sigma`: `alpha = 1 / sqrt(1 + sigma^2)`."""
    return 1.0 / jnp.sqrt(1.0 + jnp.square(jnp.asarray(sigma)))
