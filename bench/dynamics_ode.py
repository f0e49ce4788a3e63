"""Benchmark `gaussjax.ode.solve_pf_ode` against SciPy's `solve_ivp`, as the paper integrated (App. A.4).

    python bench/dynamics_ode.py      (also run as the first section of bench/dynamics.py)

Case: the probability-flow ODE of the exact score of the digits training set
(`DeltaMixture`, N = 1442, D = 64) for 256 trajectories `x_T = 80 z`, saved on the
EDM/Karras grid from 80 to 0.002 (18 points, rho = 7; paper Eq. 40), rtol = atol = 1e-5.
Baselines, all with the same tolerances and `t_eval` at the same sigmas, NumPy float64:

  (a) `solve_ivp` (RK45) one trajectory at a time, as the paper did: a subset of the
      trajectories is timed and the time scaled to 256 (said in the output);
  (b) one `solve_ivp` (RK45) over all 256 trajectories as a single (256*64)-dimensional
      system (its RMS error norm is over all trajectories together, so it is looser per
      trajectory than (a) or gaussjax).

Also timed: one joint diffrax solve of the (256, 64) state with a max-over-trajectories
error norm, the alternative to `solve_pf_ode`'s per-trajectory `vmap` (see
"Adaptive reference solves" in docs/dynamics.md). Times are medians of alternating runs in this process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_alternating

import gaussjax
from gaussjax.data import load_dataset
from gaussjax.ode import solve_pf_ode
from gaussjax.schedules import karras_sigmas

NUM_TRAJECTORIES = 256
SUBSET = 16  # trajectories timed one at a time for baseline (a)
TOL = 1e-5
REPEATS = 5


class NumpyDeltaDenoiser:
    """The delta-mixture denoiser D(x, sigma) = softmax_i(-|x - y_i|^2 / 2 sigma^2) . y, float64."""

    def __init__(self, points):
        self.points = np.asarray(points, np.float64)
        self.half_sq = 0.5 * np.sum(self.points**2, axis=1)

    def __call__(self, x, sigma):  # x (B, D)
        logits = (x @ self.points.T - self.half_sq) / sigma**2
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        return weights @ self.points


def scipy_one_at_a_time(denoiser, x_T, sigmas):
    """Baseline (a): one RK45 solve per trajectory; returns states (B, K, D) and total nfev."""

    def rhs(sigma, x):
        return (x - denoiser(x[None], sigma)[0]) / sigma

    states, nfev = [], 0
    for x0 in x_T:
        sol = solve_ivp(rhs, (sigmas[0], sigmas[-1]), x0, method="RK45", t_eval=sigmas, rtol=TOL, atol=TOL)
        states.append(sol.y.T)
        nfev += sol.nfev
    return np.stack(states), nfev


def scipy_batched(denoiser, x_T, sigmas):
    """Baseline (b): one RK45 solve of the (B*D)-dimensional system; returns states (B, K, D) and nfev."""
    shape = x_T.shape

    def rhs(sigma, flat):
        x = flat.reshape(shape)
        return ((x - denoiser(x, sigma)) / sigma).ravel()

    sol = solve_ivp(rhs, (sigmas[0], sigmas[-1]), x_T.ravel(), method="RK45", t_eval=sigmas, rtol=TOL, atol=TOL)
    return sol.y.T.reshape(len(sigmas), *shape).swapaxes(0, 1), sol.nfev


def _max_rms(error):
    return jnp.max(jnp.sqrt(jnp.mean(jnp.square(error), axis=-1)))


@eqx.filter_jit
def diffrax_joint(model, x, sigmas):
    """The alternative design: one solve of the (B, D) state, error norm = max over trajectories of the RMS."""
    controller = diffrax.PIDController(rtol=TOL, atol=TOL, norm=_max_rms, step_ts=sigmas)
    def vector_field(sigma, y, m):
        return (y - m.denoise(y, sigma)) / sigma

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5(),
        sigmas[0],
        sigmas[-1],
        -0.01 * sigmas[0],
        x,
        args=model,
        saveat=diffrax.SaveAt(ts=sigmas),
        stepsize_controller=controller,
        max_steps=4096,
    )
    return sol.ys, sol.stats["num_steps"]


def bench_pf_ode(quick: bool = False):
    """Run the comparison and print it (`quick`: fewer repeats)."""
    start = time.perf_counter()
    repeats = 3 if quick else REPEATS
    points = load_dataset("digits").flat
    model = gaussjax.DeltaMixture(points)
    sigmas = np.asarray(karras_sigmas(18), np.float64)[:-1]  # 80 -> 0.002, no trailing 0
    x_T = 80.0 * jax.random.normal(jax.random.key(0), (NUM_TRAJECTORIES, points.shape[1]), dtype=jnp.float32)
    x_T64 = np.asarray(x_T, np.float64)
    sigmas32 = jnp.asarray(sigmas, jnp.float32)
    denoiser = NumpyDeltaDenoiser(points)
    print(f"digits DeltaMixture N={points.shape[0]} D={points.shape[1]}, {NUM_TRAJECTORIES} trajectories x_T = 80 z,")
    print(f"Karras grid {sigmas[0]:g} -> {sigmas[-1]:g} ({len(sigmas)} points, rho=7), rtol = atol = {TOL:g}")
    print(f"devices: {jax.devices()}; gaussjax float32, SciPy float64")

    def solve():
        return solve_pf_ode(model, x_T, sigmas32, rtol=TOL, atol=TOL)

    def joint():
        return diffrax_joint(model, x_T, sigmas32)

    def subset():
        return scipy_one_at_a_time(denoiser, x_T64[:SUBSET], sigmas)

    def batched():
        return scipy_batched(denoiser, x_T64, sigmas)

    t0 = time.perf_counter()
    solution = jax.block_until_ready(solve())
    print(f"first solve_pf_ode call (compile + run): {time.perf_counter() - t0:.2f} s")
    times = time_alternating(
        {"gaussjax": solve, "joint": joint, "scipy_subset": subset, "scipy_batched": batched}, repeats
    )
    one_at_a_time = times["scipy_subset"] * NUM_TRAJECTORIES / SUBSET

    states = np.asarray(solution.states, np.float64)  # (K, B, D)
    joint_states, joint_steps = joint()
    subset_states, subset_nfev = subset()
    batched_states, batched_nfev = batched()
    steps, nfe = np.asarray(solution.num_steps), np.asarray(solution.nfe)

    def max_diff(a, b):
        return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))

    print()
    print(f"median of {repeats} alternating runs:")
    print(
        f"  gaussjax solve_pf_ode (vmap, 256 traj.)     {times['gaussjax']:8.3f} s  "
        f"accepted steps/traj mean {steps.mean():.1f} max {steps.max()}, nfe/traj mean {nfe.mean():.0f} max {nfe.max()}"
    )
    print(
        f"  diffrax joint solve, max-RMS norm            {times['joint']:8.3f} s  "
        f"{int(joint_steps)} attempted steps (shared)"
    )
    print(
        f"  (a) solve_ivp one at a time, {SUBSET} traj.       {times['scipy_subset']:8.3f} s  "
        f"-> scaled x{NUM_TRAJECTORIES // SUBSET} to {NUM_TRAJECTORIES}: {one_at_a_time:.3f} s "
        f"(nfev/traj mean {subset_nfev / SUBSET:.0f})"
    )
    print(
        f"  (b) solve_ivp batched, 1 system of {NUM_TRAJECTORIES}*64    {times['scipy_batched']:8.3f} s  "
        f"(nfev {batched_nfev})"
    )
    print()
    print(f"speed-up vs (a) one at a time: {one_at_a_time / times['gaussjax']:6.1f}x   (target >= 10x)")
    print(f"speed-up vs (b) batched:       {times['scipy_batched'] / times['gaussjax']:6.1f}x   (target >= 3x)")
    print(f"vmap vs joint diffrax solve:   {times['joint'] / times['gaussjax']:6.2f}x")
    print()
    final = states[-1]
    dist_a = np.max(np.abs(final[:SUBSET] - subset_states[:, -1]), axis=-1)
    dist_b = np.max(np.abs(final - batched_states[:, -1]), axis=-1)
    print("max |difference| of final states (sigma = 0.002), per trajectory then over trajectories:")
    print(f"  gaussjax vs (a), {SUBSET} traj.: max {dist_a.max():.2e}, median {np.median(dist_a):.2e}")
    print(f"  gaussjax vs (b), {NUM_TRAJECTORIES} traj.: max {dist_b.max():.2e}, median {np.median(dist_b):.2e}")
    print(f"  (a) vs (b), {SUBSET} traj.:        max {max_diff(subset_states[:, -1], batched_states[:SUBSET, -1]):.2e}")
    print(f"  vmap vs joint diffrax, {NUM_TRAJECTORIES} traj.: max {max_diff(final, joint_states[-1]):.2e}")
    print(f"total benchmark time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    bench_pf_ode()
