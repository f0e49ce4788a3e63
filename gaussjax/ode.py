"""Adaptive integration of the probability-flow ODE for any denoiser (paper Eq. 2; App. A.4).

The EDM probability-flow ODE (EDM Eq. 4; paper Eq. 2 with `sigma(t) = t`), written
with the score `s = (D - x) / sigma^2` of paper Eq. 4, is

    dx / dsigma = -sigma s(x, sigma) = (x - D(x, sigma)) / sigma,

integrated here from `sigmas[0]` down to the last positive `sigma` with diffrax. The
paper integrated it with SciPy's `solve_ivp`, one trajectory at a time (App. A.4);
`solve_pf_ode` solves a whole batch in one compiled call while keeping what the
tolerances mean for each trajectory.

Each trajectory is one adaptive solve (`jax.vmap` over `diffrax.diffeqsolve`) with its
own step sizes and its own RMS error norm over its D coordinates, so `rtol`/`atol`
mean what they mean for one `solve_ivp` trajectory; steps are made to land on every
grid point, so saved states are step endpoints, not interpolations. (Why these
choices, with measurements: `docs/dynamics.md` and `bench/dynamics_ode.py`.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from gaussjax._checks import check_initial_state, check_noise_levels, check_positive_int, is_concrete
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._pytree import check_output_shape
from gaussjax.conventions import vp_to_edm
from gaussjax.schedules import VPSchedule


class PFODESolution(NamedTuple):
    """States of probability-flow trajectories on a grid of noise levels.

    Attributes:
        states: `(K, ..., D)`: `states[i]` is the state at `sigmas[i]`; `states[0]` is `x_T`.
            With a trailing `sigmas[-1] = 0`, `states[-1]` is the denoised
            `D(states[-2], sigmas[-2])`.
        sigmas: `(K,)` the noise levels (for `solve_vp_pf_ode`: the VP `sigmas_vp`).
        num_steps: `(...)` int, accepted steps of each trajectory.
        nfe: `(...)` int, denoiser evaluations spent on each trajectory (rejected steps
            and the final denoise of a trailing 0 included); `-1` for a solver that is
            not an explicit Runge-Kutta method (`diffrax.AbstractERK`), whose count is unknown.
    """

    states: Float[Array, "K *batch D"]
    sigmas: Float[Array, " K"]
    num_steps: Int[Array, "*batch"]
    nfe: Int[Array, "*batch"]


# Classical RK4 (Kutta 1901), c = (0, 1/2, 1/2, 1), b = (1/6, 1/3, 1/3, 1/6), made
# adaptive by a fifth, first-same-as-last stage f(t + h, y1) (free: it is the first stage
# of the next step). The embedded weights (1/6, 1/3, 1/3, 0, 1/6) satisfy the order
# conditions up to order 3 (sum b = 1, sum b c = 1/2, sum b c^2 = 1/3, sum b A c = 1/6)
# but not sum b A c^2 = 1/12, so the estimate y1 - y1_embedded = h (k4 - k5) / 6 is a
# third-order local error estimate, O(h^4), for a fourth-order step.
_RK4_TABLEAU = diffrax.ButcherTableau(
    c=np.array([1 / 2, 1 / 2, 1.0, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6, 0.0]),
    b_error=np.array([0.0, 0.0, 0.0, 1 / 6, -1 / 6]),
    a_lower=(
        np.array([1 / 2]),
        np.array([0.0, 1 / 2]),
        np.array([0.0, 0.0, 1.0]),
        np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    ),
)


class RK4(diffrax.AbstractERK):
    """The classical 4th-order Runge-Kutta method with an embedded 3rd-order error estimate.

    Four new vector-field evaluations per step (the fifth stage, `f(t1, y1)`, is reused
    as the first stage of the next step), so it works with `diffrax.PIDController`
    adaptive steps. The accepted step is exactly classical RK4. Dense output (only used
    between steps) is the third-order Hermite interpolation.
    """

    tableau: ClassVar[diffrax.ButcherTableau] = _RK4_TABLEAU
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        del terms
        return 4


_SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "heun": diffrax.Heun,
    "rk4": RK4,
}


def solve_pf_ode(
    model,
    x_T: Float[ArrayLike, "*batch D"],
    sigmas: Float[ArrayLike, " K"],
    *,
    solver="tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    dt0: float | None = None,
) -> PFODESolution:
    """Integrate the probability-flow ODE (paper Eq. 2; EDM Eq. 4) for a batch of trajectories.

    Solves `dx/dsigma = (x - D(x, sigma)) / sigma` from `sigmas[0]` down to the last
    positive sigma with `diffrax.diffeqsolve`, adaptive steps (`diffrax.PIDController(rtol,
    atol)`, each trajectory with its own steps and its own RMS error norm, as one
    `scipy.integrate.solve_ivp` trajectory), and the state saved at every `sigmas[i]`
    (the steps are made to land there). The ODE is singular at `sigma = 0`: a trailing
    `sigmas[-1] = 0` means "denoise at the last positive sigma" (the EDM convention), so
    the last state is `D(x(sigmas[-2]), sigmas[-2])`.

    Compiled once per model type, shapes, dtype, `solver`, `max_steps` and whether `dt0`
    is given; the grid values, `rtol` and `atol` do not recompile. The model is passed
    to the compiled solve as an argument (its arrays are not baked in as constants),
    and the whole call also works inside `jax.jit` (values are then not checked).

    Args:
        model: any denoiser with `denoise(x (..., D), sigma)` (the `Denoiser` protocol); a
            pytree such as the analytic models, or any object (its arrays are then
            compile-time constants). Its `dim`, if it has one, must equal `D`.
        x_T: `(..., D)` states at `sigmas[0]` (e.g. `sigmas[0] * z`, `z ~ N(0, I)`);
            every leading index is one trajectory.
        sigmas: `(K,)` noise levels, K >= 2, strictly decreasing, >= 0 (only the last may
            be 0), e.g. the Karras et al. grid (paper Eq. 40).
        solver: `"tsit5"` (default), `"dopri5"`, `"heun"`, `"rk4"` (classical RK4 with an
            embedded 3rd-order estimate, `gaussjax.ode.RK4`), or any `diffrax` ODE
            solver instance with an error estimate.
        rtol, atol: relative and absolute tolerances of each trajectory's local error,
            > 0 (compare `solve_ivp`'s).
        max_steps: the most steps (accepted or rejected) of one trajectory.
        dt0: the first step size in sigma (a positive magnitude; the solve runs towards
            smaller sigma). Default `0.01 * sigmas[0]`: a relative change of about 1% of
            the state over the first step, which the controller then grows. (diffrax's
            automatic choice is not used: in diffrax 0.7 it is a fixed 0.01 for a solve
            backwards in time.)

    Returns:
        `PFODESolution(states (K, ..., D), sigmas (K,), num_steps (...), nfe (...))`.

    Raises:
        ValueError / TypeError: naming the bad argument.
        RuntimeError: if a trajectory needs more than `max_steps` steps (raise
            `max_steps` or loosen `rtol`/`atol`) or the solve fails otherwise.
    """
    x_T, sigmas = _check_problem(model, x_T, sigmas, "sigmas")
    options = _check_options(solver, rtol, atol, max_steps, dt0, x_T.dtype)
    states, num_steps, nfe = _solve(model, x_T, sigmas, **options)
    return PFODESolution(states, sigmas, num_steps, nfe)


def solve_vp_pf_ode(
    model, x_T: Float[ArrayLike, "*batch D"], schedule: VPSchedule, **options
) -> PFODESolution:
    """Integrate the VP / DDIM probability-flow ODE for an EDM-convention `model` (paper App. D.2).

    A VP state `x_t = alpha_t y + sigma_t n` is the EDM state `x = x_t / alpha_t` at
    noise level `sigma = sigma_t / alpha_t` (`gaussjax.conventions`). The VP PF-ODE
    (paper Eq. 61-63; for a VP-SDE, Eq. 70) is the EDM PF-ODE (Eq. 2) with the state
    rescaled by `alpha_t` and time reparametrized: its solution through the grid is
    `alpha_i x(sigma_i / alpha_i)` with `x` the EDM solution, which is what this computes
    (`solve_pf_ode` on `schedule.edm_sigma`, states mapped back).

    Args:
        model: EDM-convention denoiser, as for `solve_pf_ode`.
        x_T: `(..., D)` VP states at the schedule's first level.
        schedule: a `VPSchedule` of K >= 2 levels with noise decreasing, the same grid
            `ddim_sampler` takes (e.g. `ddpm_linear_schedule().sampling_grid(N)`); a final
            level 1.0 (no noise) denoises at the last noisy level.
        **options: `solver`, `rtol`, `atol`, `max_steps`, `dt0` as for `solve_pf_ode`
            (they apply to the EDM state `x_t / alpha_t`, and `dt0` to its sigma).

    Returns:
        `PFODESolution` with `states (K, ..., D)` the VP states (`states[0] = x_T`) and
        `sigmas = schedule.sigma`, the VP noise scales.
    """
    if not isinstance(schedule, VPSchedule):
        raise InputTypeError(f"`schedule` must be a gaussjax.VPSchedule, got {type(schedule).__name__}")
    x_T = check_initial_state(model, x_T)
    alphas = schedule.alpha.astype(x_T.dtype)
    x_edm, _ = vp_to_edm(x_T, alphas[0], schedule.sigma[0])
    # `_Named` (private) is the grid with the name that error messages give it
    solution = solve_pf_ode(model, x_edm, _Named(schedule.edm_sigma, "schedule.edm_sigma"), **options)  # type: ignore[arg-type]
    scale = alphas.reshape(alphas.shape + (1,) * (solution.states.ndim - 1))
    states = (scale * solution.states).at[0].set(x_T)  # the first state exactly as given
    return PFODESolution(states, schedule.sigma.astype(x_T.dtype), solution.num_steps, solution.nfe)


# --- validation ---------------------------------------------------------------------


class _Named(NamedTuple):
    """An already-converted grid and the name to use for it in error messages."""

    values: jax.Array
    name: str


def _check_problem(model, x_T, sigmas, name: str):
    if isinstance(sigmas, _Named):
        sigmas, name = sigmas
    x_T = check_initial_state(model, x_T)
    sigmas = check_noise_levels(name, sigmas, ndim=(1,), min_size=2, decreasing=True, dtype=x_T.dtype)
    return x_T, sigmas  # (checked in the solve's dtype)


def _check_tolerance(name: str, value, dtype):
    """A positive finite scalar (traced values pass unchecked), in the solve's dtype."""
    if isinstance(value, bool):
        raise InputTypeError(f"`{name}` must be a number > 0, got {value!r}")
    return check_noise_levels(name, value, ndim=(0,), positive=True).astype(dtype)


def _check_options(solver, rtol, atol, max_steps, dt0, dtype) -> dict:
    if isinstance(solver, str):
        if solver not in _SOLVERS:
            known = ", ".join(repr(s) for s in _SOLVERS)
            raise InputValueError(f"`solver` must be one of {known} or a diffrax solver instance; got {solver!r}")
        solver = _SOLVERS[solver]()
    elif not isinstance(solver, diffrax.AbstractSolver):
        raise InputTypeError("`solver` must be a solver name or a diffrax solver instance, got "
                             f"{type(solver).__name__}")
    return {
        "solver": solver,
        "rtol": _check_tolerance("rtol", rtol, dtype),
        "atol": _check_tolerance("atol", atol, dtype),
        "max_steps": check_positive_int("max_steps", max_steps),
        "dt0": None if dt0 is None else _check_tolerance("dt0", dt0, dtype),
    }


# --- the solve ----------------------------------------------------------------------


def _vector_field(sigma, x, model):
    """`dx/dsigma = (x - D(x, sigma)) / sigma` (EDM Eq. 4 with sigma(t) = t); `D`'s shape checked, naming `model`."""
    denoised = model.denoise(x, sigma)
    check_output_shape("model", denoised, x)
    return (x - denoised) / sigma


def _evaluations(solver, num_steps):
    """Vector-field evaluations of an explicit RK solve of `num_steps` attempted steps, or -1 if unknown.

    Every step evaluates all stages, except that with a first-same-as-last (FSAL) tableau
    each step after the first reuses the last stage of the previous attempt (kept when a
    step is rejected) as its first stage. (Checked against a counting denoiser in the tests.)
    """
    if not isinstance(solver, diffrax.AbstractERK) or not isinstance(solver.tableau, diffrax.ButcherTableau):
        return jnp.full_like(num_steps, -1)
    stages = solver.tableau.num_stages
    if solver.tableau.fsal:
        return jnp.where(num_steps > 0, stages + (num_steps - 1) * (stages - 1), 0)
    return num_steps * stages


def _solve_one(model, x, sigmas, t_end, rtol, atol, dt0, solver, max_steps):
    """One trajectory `x (D,)` from `sigmas[0]` to `t_end`, saved at `sigmas` (last one replaced by `t_end`)."""
    ts = sigmas.at[-1].set(t_end)
    controller = diffrax.PIDController(rtol=rtol, atol=atol, step_ts=ts)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(_vector_field),
        solver,
        t0=sigmas[0],
        t1=t_end,
        dt0=-dt0,
        y0=x,
        args=model,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )
    return solution.ys, solution.stats["num_accepted_steps"], solution.stats["num_steps"], solution.result._value


@eqx.filter_jit
def _solve_flat(model, x, sigmas, rtol, atol, dt0, solver, max_steps):
    """Batch `x (B, D)` -> states `(K, B, D)`, accepted steps, nfe and diffrax result codes, each `(B,)`."""
    trailing_zero = sigmas[-1] == 0
    t_end = jnp.where(trailing_zero, sigmas[-2], sigmas[-1])
    if dt0 is None:
        dt0 = _DEFAULT_FIRST_STEP * sigmas[0]

    def solve(y):
        return _solve_one(model, y, sigmas, t_end, rtol, atol, dt0, solver, max_steps)

    ys, accepted, attempted, result = jax.vmap(solve)(x)
    states = jnp.swapaxes(ys, 0, 1)  # (K, B, D)
    last = jax.lax.cond(
        trailing_zero,
        lambda y: model.denoise(y, t_end).astype(y.dtype),
        lambda y: y,
        states[-1],
    )
    states = states.at[-1].set(last)
    nfe = _evaluations(solver, attempted) + trailing_zero.astype(attempted.dtype)
    return states, accepted, nfe, result


_DEFAULT_FIRST_STEP = 0.01  # first step, relative to sigmas[0] (see `solve_pf_ode`'s `dt0`)
_MAX_STEPS_CODE = diffrax.RESULTS.max_steps_reached._value  # type: ignore[attr-defined]  # equinox types its items as str


def _solve(model, x_T, sigmas, *, solver, rtol, atol, max_steps, dt0):
    batch_shape, dim = x_T.shape[:-1], x_T.shape[-1]
    x = x_T.reshape(-1, dim)
    states, accepted, nfe, result = _solve_flat(model, x, sigmas, rtol, atol, dt0, solver, max_steps)
    too_many = f"the solve reached `max_steps` = {max_steps} steps; raise `max_steps` or loosen `rtol`/`atol`"
    if is_concrete(result):
        codes = np.asarray(result)
        failed = np.flatnonzero(codes != 0)
        if failed.size:
            code = int(codes[failed[0]])
            detail = (
                too_many
                if code == _MAX_STEPS_CODE
                else diffrax.RESULTS._index_to_message[code] or f"diffrax result code {code}"
            )
            raise RuntimeError(
                f"solve_pf_ode: {failed.size} of {codes.size} trajectories failed (first: flat index "
                f"{failed[0]}): {detail}"
            )
    else:
        states = eqx.error_if(states, jnp.any(result == _MAX_STEPS_CODE), f"solve_pf_ode: {too_many}")
        states = eqx.error_if(states, jnp.any(result != 0), "solve_pf_ode: the diffrax solve failed")
    states = states.reshape((sigmas.shape[0],) + batch_shape + (dim,))
    return states, accepted.reshape(batch_shape), nfe.reshape(batch_shape)


__all__ = [
    "PFODESolution",
    "RK4",
    "solve_pf_ode",
    "solve_vp_pf_ode",
]
