"""Fixed-grid samplers for any model with `.denoise(x, sigma)` (EDM convention unless noted).

Every sampler takes the initial state `x_T (..., D)` at `sigmas[0]` (already
`sigma_max * z`, not unit noise) and a strictly decreasing grid `sigmas`; a trailing
0 means "finish by denoising at the last positive sigma" (NVlabs/edm). Steps run in
one `lax.scan` inside `jax.jit`: one compile per shape, whatever the grid's values.
Each returns a `SamplerOutput` with the number of denoiser evaluations per sample.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from gaussjax._checks import (
    as_float,
    check_initial_state,
    check_key,
    check_noise_levels,
    check_nonnegative_int,
    check_nonnegative_real,
    is_concrete,
)
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._pytree import check_output_shape, traceable_model
from gaussjax.conventions import vp_denoise
from gaussjax.schedules import VPSchedule
from gaussjax.scores import Denoiser, Gaussian
from gaussjax.solution import teleport
from gaussjax.teleportation import auto_sigma_skip


class SamplerOutput(NamedTuple):
    """What a sampler returns.

    Attributes:
        x: `(..., D)` final samples.
        nfe: denoiser evaluations per sample (an int; a traced int32 when the grid is traced).
        trajectory: `(num_steps + 1, ..., D)` states at every grid point, `x_T` first
            (only with `return_trajectory=True`).
        denoised: `(num_steps, ..., D)` the denoiser output of each step's first
            evaluation (only with `return_trajectory=True`).
    """

    x: Float[Array, "*batch D"]
    nfe: int | Int[Array, ""]
    trajectory: Float[Array, "N+1 *batch D"] | None = None
    denoised: Float[Array, "N *batch D"] | None = None


def _sampling_grid(sigmas, dtype):
    """A sampler's grid `(N + 1,)` in the state dtype: strictly decreasing, >= 0 (values checked when concrete)."""
    return check_noise_levels("sigmas", sigmas, ndim=(1,), min_size=2, decreasing=True, dtype=dtype)


def _ends_at_zero(grid) -> bool | jax.Array:
    """Whether the grid's last level is 0 (a Python bool when the grid is concrete)."""
    return bool(np.asarray(grid)[-1] == 0) if is_concrete(grid) else grid[-1] == 0


def _denoise(model, x, sigma):
    """`model.denoise(x, sigma)`, its output shape checked (at trace time) against `x`'s, naming `model`."""
    output = model.denoise(x, jnp.asarray(sigma, x.dtype))
    check_output_shape("model", output, x)
    return output


@functools.partial(jax.jit, static_argnames=("second_order", "stochastic", "trajectory"))
def _edm_scan(model, x, sigmas, key, churn, *, second_order, stochastic, trajectory):
    """EDM Alg. 2 (Heun) or its first-order variant (Euler), as one scan over the grid."""
    S_churn, S_min, S_max, S_noise = churn
    num_steps = sigmas.shape[0] - 1
    sigmas = sigmas.astype(x.dtype)

    def step(carry, t):
        x_cur, key = carry
        t_cur, t_next = t
        if stochastic:  # lines 4-6: temporarily raise the noise level to t_hat
            gamma = jnp.where((S_min <= t_cur) & (t_cur <= S_max),
                              jnp.minimum(S_churn / num_steps, math.sqrt(2) - 1), 0)
            t_hat = t_cur + gamma * t_cur
            key, sub = jax.random.split(key)
            noise = jax.random.normal(sub, x_cur.shape, x_cur.dtype)
            # sqrt(t_hat^2 - t_cur^2), written so that gamma = 0 gives exactly 0 (no FMA rounding below 0)
            x_hat = x_cur + t_cur * jnp.sqrt(gamma * (2 + gamma)) * S_noise * noise
        else:
            t_hat, x_hat = t_cur, x_cur
        denoised = _denoise(model, x_hat, t_hat)  # line 7: Euler step
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if second_order:  # lines 9-11: second-order correction, unless t_next = 0

            def correct(x_next):
                d_prime = (x_next - _denoise(model, x_next, t_next)) / t_next
                return x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)

            x_next = jax.lax.cond(t_next > 0, correct, lambda v: v, x_next)
        return (x_next, key), ((x_next, denoised) if trajectory else None)

    (x_final, _), saved = jax.lax.scan(step, (x, key), (sigmas[:-1], sigmas[1:]))
    return x_final, saved


def _churn_parameters(S_churn, S_min, S_max, S_noise, dtype):
    """EDM's churn settings as a state-dtype `(4,)` array; `S_churn` must be concrete (it selects the code path)."""
    S_churn = check_nonnegative_real("S_churn", S_churn)
    given = (S_min, S_max, S_noise)
    if all(isinstance(v, numbers.Real) for v in given):  # the usual case: checked on the host, one transfer
        S_min, S_noise = check_nonnegative_real("S_min", S_min), check_nonnegative_real("S_noise", S_noise)
        if not S_max >= S_min:  # S_max may be +inf, not NaN
            raise InputValueError(f"`S_max` must be >= `S_min` (S_max may be inf), got S_min={S_min}, S_max={S_max}")
        return S_churn, jnp.asarray(np.array([S_churn, S_min, S_max, S_noise]), dtype)
    S_min, S_noise = (check_noise_levels(n, v, ndim=(0,)) for n, v in (("S_min", S_min), ("S_noise", S_noise)))
    S_max = as_float("S_max", S_max)
    if S_max.ndim != 0:
        raise InputValueError(f"`S_max` must be a scalar, got shape {S_max.shape}")
    if is_concrete(S_min, S_max) and not float(S_max) >= float(S_min):
        raise InputValueError(
            f"`S_max` must be >= `S_min` (S_max may be inf), got S_min={float(S_min)}, S_max={float(S_max)}"
        )
    return S_churn, jnp.stack([jnp.asarray(S_churn, dtype), *(jnp.asarray(v, dtype) for v in (S_min, S_max, S_noise))])


def _edm_sampler(model, x_T, sigmas, *, second_order, S_churn, S_min, S_max, S_noise, key, return_trajectory, dtype):
    x_T = check_initial_state(model, x_T, dtype)
    grid = _sampling_grid(sigmas, x_T.dtype)
    S_churn, churn = _churn_parameters(S_churn, S_min, S_max, S_noise, x_T.dtype)
    stochastic = S_churn > 0
    key = check_key(key) if stochastic else None
    x, saved = _edm_scan(
        traceable_model(model), x_T, grid, key, churn,
        second_order=second_order, stochastic=stochastic, trajectory=return_trajectory,
    )
    steps = grid.shape[0] - 1
    nfe = steps + (steps - _ends_at_zero(grid) if second_order else 0)
    return _output(x, nfe, x_T, saved, return_trajectory)


def _output(x, nfe, x_T, saved, return_trajectory: bool) -> SamplerOutput:
    if return_trajectory:
        states, denoised = saved
        return SamplerOutput(x, nfe, jnp.concatenate([x_T[None], states]), denoised)
    return SamplerOutput(x, nfe)


def heun_sampler(
    model: Denoiser,
    x_T: Float[ArrayLike, "*batch D"],
    sigmas: Float[ArrayLike, " N+1"],
    *,
    S_churn: float = 0.0,
    S_min: float | Float[ArrayLike, ""] = 0.0,
    S_max: float | Float[ArrayLike, ""] = float("inf"),
    S_noise: float | Float[ArrayLike, ""] = 1.0,
    key: PRNGKeyArray | None = None,
    return_trajectory: bool = False,
    dtype=None,
) -> SamplerOutput:
    """EDM's second-order sampler (Karras et al. 2022, Alg. 2), deterministic by default.

    Args:
        model: any object with `.denoise(x, sigma)`.
        x_T: `(..., D)` initial states at `sigmas[0]`.
        sigmas: `(N + 1,)` strictly decreasing grid, e.g. `karras_sigmas(N)` (trailing 0).
        S_churn, S_min, S_max, S_noise: EDM's stochastic churn (off when `S_churn = 0`):
            at steps with `S_min <= sigma <= S_max` the noise level is raised by
            `gamma = min(S_churn / N, sqrt(2) - 1)` with fresh noise scaled by `S_noise`.
        key: PRNG key, required when `S_churn > 0`.
        return_trajectory: also return every state and denoiser output.
        dtype: state dtype (e.g. `jnp.float64`, as NVlabs/edm; needs x64).

    Returns:
        `SamplerOutput`; `nfe = 2N - 1` with a trailing 0 (the last step is Euler), else `2N`.
    """
    return _edm_sampler(
        model, x_T, sigmas, second_order=True, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise,
        key=key, return_trajectory=return_trajectory, dtype=dtype,
    )


def euler_sampler(
    model: Denoiser,
    x_T: Float[ArrayLike, "*batch D"],
    sigmas: Float[ArrayLike, " N+1"],
    *,
    S_churn: float = 0.0,
    S_min: float | Float[ArrayLike, ""] = 0.0,
    S_max: float | Float[ArrayLike, ""] = float("inf"),
    S_noise: float | Float[ArrayLike, ""] = 1.0,
    key: PRNGKeyArray | None = None,
    return_trajectory: bool = False,
    dtype=None,
) -> SamplerOutput:
    """First-order Euler steps of the PF-ODE, `x <- x + (t_next - t)(x - D(x, t)) / t`; arguments as `heun_sampler`.

    `nfe = N`.
    """
    return _edm_sampler(
        model, x_T, sigmas, second_order=False, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise,
        key=key, return_trajectory=return_trajectory, dtype=dtype,
    )


@functools.partial(jax.jit, static_argnames=("trajectory",))
def _dpmpp_2m_scan(model, x, sigmas, *, trajectory):
    sigmas = sigmas.astype(x.dtype)
    log_sigmas = jnp.log(sigmas)  # -inf at a trailing 0

    def step(carry, t):
        x_cur, old_denoised, h_last = carry
        t_cur, t_next, log_cur, log_next, first = t
        denoised = _denoise(model, x_cur, t_cur)
        h = log_cur - log_next  # step in lambda = -log sigma; +inf when t_next = 0
        second_order = jnp.logical_not(first) & (t_next > 0)
        r = jnp.where(second_order, h_last / jnp.where(second_order, h, 1.0), 1.0)
        corrected = jnp.where(
            second_order, (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised, denoised
        )
        x_next = (t_next / t_cur) * x_cur - jnp.expm1(-h) * corrected
        return (x_next, denoised, h), ((x_next, denoised) if trajectory else None)

    first = jnp.arange(sigmas.shape[0] - 1) == 0
    inputs = (sigmas[:-1], sigmas[1:], log_sigmas[:-1], log_sigmas[1:], first)
    init = (x, jnp.zeros_like(x), jnp.ones((), x.dtype))
    (x_final, _, _), saved = jax.lax.scan(step, init, inputs)
    return x_final, saved


def dpmpp_2m_sampler(
    model: Denoiser,
    x_T: Float[ArrayLike, "*batch D"],
    sigmas: Float[ArrayLike, " N+1"],
    *,
    return_trajectory: bool = False,
    dtype=None,
) -> SamplerOutput:
    """DPM-Solver++(2M) (Lu et al. 2022) in the EDM sigma parameterization (the sampler of the paper's Fig. 10).

    Multistep second order in `lambda = -log sigma`: each step uses the current and the
    previous denoiser outputs; the first step and a final step to 0 are first order.
    Arguments as `heun_sampler` (deterministic only). `nfe = N`.
    """
    x_T = check_initial_state(model, x_T, dtype)
    grid = _sampling_grid(sigmas, x_T.dtype)
    x, saved = _dpmpp_2m_scan(traceable_model(model), x_T, grid, trajectory=return_trajectory)
    return _output(x, grid.shape[0] - 1, x_T, saved, return_trajectory)


@functools.partial(jax.jit, static_argnames=("trajectory", "stochastic"))
def _ddim_scan(model, x, alphas_cumprod, eta, key, *, trajectory, stochastic):
    alphas_cumprod = alphas_cumprod.astype(x.dtype)

    def step(carry, a):
        x_cur, key = carry
        a_cur, a_next = a
        alpha, sigma = jnp.sqrt(a_cur), jnp.sqrt(1 - a_cur)
        denoised = vp_denoise(model, x_cur, alpha, sigma)  # x0_hat
        eps = (x_cur - alpha * denoised) / sigma
        sigma_eta = eta * jnp.sqrt((1 - a_next) / (1 - a_cur) * (1 - a_cur / a_next))
        x_next = jnp.sqrt(a_next) * denoised + jnp.sqrt(jnp.maximum(1 - a_next - jnp.square(sigma_eta), 0)) * eps
        if stochastic:
            key, sub = jax.random.split(key)
            x_next = x_next + sigma_eta * jax.random.normal(sub, x_cur.shape, x_cur.dtype)
        return (x_next, key), ((x_next, denoised) if trajectory else None)

    (x_final, _), saved = jax.lax.scan(step, (x, key), (alphas_cumprod[:-1], alphas_cumprod[1:]))
    return x_final, saved


def ddim_sampler(
    model: Denoiser,
    x_T: Float[ArrayLike, "*batch D"],
    schedule: VPSchedule,
    *,
    eta: float = 0.0,
    key: PRNGKeyArray | None = None,
    return_trajectory: bool = False,
    dtype=None,
) -> SamplerOutput:
    """DDIM (Song et al. 2021) for a VP / DDPM state, with any EDM-convention `model`.

    Args:
        model: any object with `.denoise(x, sigma)` in the EDM convention; the VP endpoint
            estimate is `model.denoise(x_t / alpha_t, sigma_t / alpha_t)` (App. D.2).
        x_T: `(..., D)` VP states at the grid's first level.
        schedule: a `VPSchedule` of `N + 1` levels with noise decreasing (`alphas_cumprod`
            strictly increasing, the first < 1), e.g. `ddpm_linear_schedule().sampling_grid(N)`,
            whose final 1.0 ends on the clean estimate.
        eta: 0 for deterministic DDIM; 1 for DDPM-like ancestral noise.
        key: PRNG key, required when `eta > 0`.

    Returns:
        `SamplerOutput` of VP states; `nfe = N`.
    """
    x_T = check_initial_state(model, x_T, dtype)
    grid = _vp_sampling_grid(schedule, x_T.dtype)
    eta = check_nonnegative_real("eta", eta)
    stochastic = eta > 0
    key = check_key(key) if stochastic else None
    x, saved = _ddim_scan(
        traceable_model(model), x_T, grid, jnp.asarray(eta, x_T.dtype), key,
        trajectory=return_trajectory, stochastic=stochastic,
    )
    return _output(x, grid.shape[0] - 1, x_T, saved, return_trajectory)


def _vp_sampling_grid(schedule, dtype):
    """`schedule.alphas_cumprod` as a VP sampling grid: >= 2 levels, noise decreasing, starting with noise."""
    if not isinstance(schedule, VPSchedule):
        raise InputTypeError(
            f"`schedule` must be a gaussjax.VPSchedule (e.g. ddpm_linear_schedule().sampling_grid(N)), "
            f"got {type(schedule).__name__}"
        )
    grid = jnp.asarray(schedule.alphas_cumprod).astype(dtype)
    if grid.shape[0] < 2:
        raise InputValueError(f"`schedule` must hold at least 2 levels, got {grid.shape[0]}")
    if is_concrete(grid):
        values = np.asarray(schedule.alphas_cumprod)
        if not np.all(np.diff(values) > 0):
            raise InputValueError("`schedule` must have noise decreasing (alphas_cumprod increasing); "
                                  "use schedule.sampling_grid(N)")
        if values[0] >= 1:
            raise InputValueError("`schedule.alphas_cumprod[0]` must be < 1: the start must carry noise")
    return grid


def hybrid_sampler(
    model: Denoiser,
    gaussian: Gaussian,
    x_T: Float[ArrayLike, "*batch D"],
    sigmas: Float[ArrayLike, " N+1"],
    n_skip: int | str,
    sampler: Callable[..., SamplerOutput] = heun_sampler,
    **kwargs,
) -> SamplerOutput:
    """Analytical teleportation then any sampler (paper Alg. 1, App. A.7).

    Replaces the first `n_skip` steps of `sampler` on the grid `sigmas` by the exact
    Gaussian solution: `x_T` is teleported to `sigmas[n_skip]` with `teleport`, and the
    sampler runs on `sigmas[n_skip:]`. For Heun this saves `2 n_skip` denoiser calls.

    Args:
        model: the denoiser (neural or analytic).
        gaussian: `Gaussian` fitted to the training data.
        x_T: `(..., D)` initial states at `sigmas[0]`.
        sigmas: the sampler's full grid `(N + 1,)` (may be traced).
        n_skip: steps to skip, a Python int in `[0, N - 1]` (it sets the sampler's grid length),
            or `"auto"`: `gaussjax.teleportation.auto_sigma_skip(model, gaussian, sigmas, x_T).n_skip`,
            the last step at which the model's score still agrees with the Gaussian's along the
            closed-form states (needs concrete `x_T` and `sigmas`: call it outside `jax.jit`).
        sampler: `heun_sampler` (default), `euler_sampler` or `dpmpp_2m_sampler`.
        **kwargs: passed to `sampler`.

    Returns:
        The sampler's `SamplerOutput`, whose `nfe` counts only the sampler's calls (a
        trajectory then starts at `sigmas[n_skip]`).
    """
    grid = _sampling_grid(sigmas, None)
    if isinstance(n_skip, str):
        if n_skip != "auto":
            raise InputValueError(f"`n_skip` must be a non-negative int or 'auto', got {n_skip!r}")
        if not is_concrete(x_T, grid):
            raise InputTypeError("`n_skip='auto'` measures the model on concrete states (a host-side decision that "
                                 "sets the grid length), but `x_T` or `sigmas` is traced: call "
                                 "gaussjax.teleportation.auto_sigma_skip outside jax.jit and pass its n_skip")
        n_skip = auto_sigma_skip(model, gaussian, grid, x_T).n_skip
    n_skip = check_nonnegative_int("n_skip", n_skip)
    if n_skip > grid.shape[0] - 2:
        raise InputValueError(f"`n_skip` must be in [0, len(sigmas) - 2] = [0, {grid.shape[0] - 2}], got {n_skip}")
    if n_skip:
        x_T = teleport(gaussian, x_T, grid[0], grid[n_skip])
    return sampler(model, x_T, grid[n_skip:], **kwargs)


__all__ = [
    "SamplerOutput",
    "ddim_sampler",
    "dpmpp_2m_sampler",
    "euler_sampler",
    "heun_sampler",
    "hybrid_sampler",
]
