"""Noise schedules: the EDM (Karras) sigma grid and the DDPM linear / cosine VP schedules.

EDM-convention samplers take a decreasing grid of noise levels `sigma`. VP / DDPM
models are indexed by `alphas_cumprod = alpha_t^2` (as diffusers names it), with
`sigma_t^2 = 1 - alpha_t^2`; their EDM noise level is `sigma_t / alpha_t`
(paper App. D.2).
"""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_noise_levels, check_positive_int, is_concrete
from gaussjax._errors import InputValueError
from gaussjax._pytree import Module
from gaussjax.conventions import vp_alpha_from_edm_sigma

__all__ = ["VPSchedule", "cosine_schedule", "ddpm_linear_schedule", "karras_sigmas", "vp_alpha_from_edm_sigma"]


def karras_sigmas(
    num_steps: int,
    sigma_min: float | Float[ArrayLike, ""] = 0.002,
    sigma_max: float | Float[ArrayLike, ""] = 80.0,
    rho: float | Float[ArrayLike, ""] = 7.0,
) -> Float[Array, " num_steps+1"]:
    """The EDM sampling grid (Karras et al. 2022, Eq. 5; paper Eq. 40), with a trailing 0.

        sigma_i = (sigma_max^(1/rho) + i / (num_steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

    for `i = 0 .. num_steps - 1`, then `sigma_{num_steps} = 0` (as NVlabs/edm).

    Args:
        num_steps: number of sampler steps N >= 1 (a Python int: it sets the shape).
        sigma_min, sigma_max: the grid's ends, `0 < sigma_min <= sigma_max < inf`; may be
            traced (e.g. differentiated), and are then not checked.
        rho: the spacing exponent, > 0 (may be traced).

    Returns:
        `(num_steps + 1,)` array of the default float dtype, strictly decreasing.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    given = (sigma_min, sigma_max, rho)
    sigma_min, sigma_max, rho = (
        check_noise_levels(name, value, ndim=(0,), positive=True)
        for name, value in zip(("sigma_min", "sigma_max", "rho"), given, strict=True)
    )
    xp: types.ModuleType = jnp
    if is_concrete(sigma_min, sigma_max, rho):  # on the host, in float64, rounded once at the end
        xp, (sigma_min, sigma_max, rho) = np, (np.float64(np.asarray(v)) for v in given)
        if not sigma_min <= sigma_max:
            raise InputValueError(f"`sigma_min` must be <= `sigma_max`, got sigma_min={sigma_min}, "
                                  f"sigma_max={sigma_max}")
    ramp = xp.arange(num_steps) / max(num_steps - 1, 1)
    steps = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return jnp.asarray(xp.append(steps, xp.zeros((), steps.dtype)))


class VPSchedule(Module):
    """VP / DDPM noise levels, the one way VP levels enter gaussjax: `alphas_cumprod = alpha_t^2`.

    A level `alphas_cumprod[i] = a` is the VP state `x_t = sqrt(a) y + sqrt(1 - a) n`,
    i.e. the EDM state `x_t / sqrt(a)` at `sigma = sqrt((1 - a) / a)` (App. D.2,
    `gaussjax.conventions`). The values are strictly monotone in (0, 1]: a training
    schedule (`ddpm_linear_schedule`, `cosine_schedule`) has noise increasing with `t`
    (decreasing values); a sampling grid (`sampling_grid`), as `ddim_sampler` and
    `solve_vp_pf_ode` take it, has noise decreasing (increasing values, a final 1.0
    meaning "end on the clean estimate"). A pytree: it passes through `jax.jit`, and
    its values are checked only when concrete.

    Args:
        alphas_cumprod: `(T,)` values in (0, 1], strictly monotone.
    """

    alphas_cumprod: Float[ArrayLike, " T"]

    def __post_init__(self):
        values = check_noise_levels("alphas_cumprod", self.alphas_cumprod, ndim=(1,), positive=True)
        if is_concrete(values):
            values = np.asarray(self.alphas_cumprod, dtype=np.float64)
            steps = np.diff(values)
            if np.any(values > 1) or not (np.all(steps > 0) or np.all(steps < 0)):
                raise InputValueError("`alphas_cumprod` must be strictly monotone with values in (0, 1]")
            values.setflags(write=False)
        self.alphas_cumprod = values

    def __len__(self) -> int:
        return jnp.shape(self.alphas_cumprod)[0]

    def _xp(self):
        """NumPy for concrete values (float64, as constructed), jax.numpy for traced ones."""
        return np if isinstance(self.alphas_cumprod, np.ndarray) else jnp

    @property
    def alpha(self) -> Float[Array, " T"]:
        """Signal scale `alpha_t = sqrt(alphas_cumprod)`, `(T,)`."""
        return self._xp().sqrt(self.alphas_cumprod)

    @property
    def sigma(self) -> Float[Array, " T"]:
        """VP noise scale `sigma_t = sqrt(1 - alphas_cumprod)`, `(T,)`."""
        return self._xp().sqrt(1.0 - self.alphas_cumprod)

    @property
    def edm_sigma(self) -> Float[Array, " T"]:
        """The equivalent EDM noise level `sigma_t / alpha_t` (App. D.2), `(T,)`."""
        return self.sigma / self.alpha

    def timesteps(self, num_steps: int) -> np.ndarray:
        """`num_steps` evenly spaced indices from `T - 1` down to 0 (DDIM's "linspace" spacing)."""
        num_steps = check_positive_int("num_steps", num_steps)
        if num_steps > len(self):
            raise InputValueError(f"`num_steps` = {num_steps} exceeds the schedule's {len(self)} timesteps")
        return np.round(np.linspace(len(self) - 1, 0, num_steps)).astype(np.int64)

    def sampling_grid(self, num_steps: int, *, end_clean: bool = True) -> VPSchedule:
        """The levels at `timesteps(num_steps)` of a training schedule, noise decreasing; with
        `end_clean` a final 1.0 (the sampler ends on its clean estimate): `num_steps + 1` levels.
        """
        values = jnp.asarray(self.alphas_cumprod)[self.timesteps(num_steps)]
        if end_clean:
            values = jnp.append(values, jnp.ones((), values.dtype))
        return VPSchedule(values)


def ddpm_linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> VPSchedule:
    """DDPM's linear-beta schedule (Ho et al. 2020): `beta_t` linear, `alphas_cumprod = prod(1 - beta)`."""
    num_timesteps = check_positive_int("num_timesteps", num_timesteps)
    if not 0 < beta_start <= beta_end < 1:
        raise InputValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
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


