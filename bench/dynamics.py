"""Benchmark the dynamics: PF-ODE solves vs SciPy, sampler overhead, teleportation cost.

    python bench/dynamics.py            # all cases (a few minutes on 2 cores)
    python bench/dynamics.py --quick    # smaller shapes

Prints median times measured in alternation in this run, and their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_alternating  # noqa: E402

import gaussjax as gj  # noqa: E402
from gaussjax.schedules import karras_sigmas  # noqa: E402
from gaussjax.solution import gaussian_trajectory, teleport  # noqa: E402


def bench_heun_overhead(num_samples: int, num_steps: int, repeats: int):
    """Heun with an analytic model vs the same number of bare denoiser calls in one scan."""
    X = gj.data.load_dataset("digits").flat
    sigmas = karras_sigmas(num_steps)
    x_T = 80.0 * jax.random.normal(jax.random.key(0), (num_samples, X.shape[1]))
    nfe = 2 * num_steps - 1
    calls_sigmas = jnp.linspace(80.0, 0.002, nfe)

    @jax.jit
    def denoiser_calls_only(model, x):
        def step(x, sigma):
            return model.denoise(x, sigma), None

        return jax.lax.scan(step, x, calls_sigmas)[0]

    print(f"\nheun_sampler, {num_samples} samples, {num_steps} steps (NFE {nfe}), digits (D = {X.shape[1]})")
    for name, model in (("Gaussian (full rank)", gj.fit_gaussian(X)), ("DeltaMixture (N = 1442)", gj.DeltaMixture(X))):
        start = time.perf_counter()
        jax.block_until_ready(gj.heun_sampler(model, x_T, sigmas).x)
        first = time.perf_counter() - start
        times = time_alternating(
            {
                "heun_sampler": lambda m=model: gj.heun_sampler(m, x_T, sigmas).x,
                "denoiser calls only": lambda m=model: denoiser_calls_only(m, x_T),
            },
            repeats,
        )
        overhead = (times["heun_sampler"] - times["denoiser calls only"]) / num_steps
        print(f"  {name}: sampler {times['heun_sampler'] * 1e3:.2f} ms, {nfe} denoiser calls alone "
              f"{times['denoiser calls only'] * 1e3:.2f} ms -> overhead {overhead * 1e6:.1f} us per step "
              f"({times['heun_sampler'] / times['denoiser calls only']:.2f}x); first call incl. compile {first:.2f} s")


def bench_teleport(dim: int, num_points: int, num_samples: int, repeats: int):
    """Teleporting samples at CIFAR size costs less than one delta-score evaluation."""
    keys = jax.random.split(jax.random.key(1), 4)
    basis = jnp.linalg.qr(jax.random.normal(keys[0], (dim, dim)))[0]
    gaussian = gj.Gaussian(jnp.zeros(dim), jax.random.uniform(keys[1], (dim,)), basis)
    points = jax.random.uniform(keys[2], (num_points, dim), minval=-1.0, maxval=1.0)
    delta = gj.DeltaMixture(points)
    x_T = 80.0 * jax.random.normal(keys[3], (num_samples, dim))
    sigmas19 = karras_sigmas(18)
    teleport_jit = jax.jit(lambda g, x: teleport(g, x, 80.0, 2.0))
    trajectory_jit = jax.jit(lambda g, x: gaussian_trajectory(g, x, 80.0, sigmas19))
    score_jit = jax.jit(lambda m, x: m.score(x, 2.0))
    times = time_alternating(
        {
            "teleport": lambda: teleport_jit(gaussian, x_T),
            "closed form at 19 levels": lambda: trajectory_jit(gaussian, x_T),
            "DeltaMixture.score": lambda: score_jit(delta, x_T),
        },
        repeats,
    )
    print(f"\nteleport, {num_samples} samples, D = {dim}, full rank; "
          f"DeltaMixture N = {num_points}, {num_samples} queries")
    for name, seconds in times.items():
        print(f"  {name:<26} {seconds * 1e3:9.1f} ms")
    ratio = times["teleport"] / times["DeltaMixture.score"]
    print(f"  teleport / one delta-score evaluation: {ratio:.3f} (target < 1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float32")
    try:
        from dynamics_ode import bench_pf_ode  # the diffrax vs SciPy comparison
    except ImportError:
        bench_pf_ode = None
    if bench_pf_ode is not None:
        bench_pf_ode(quick=args.quick)
    bench_heun_overhead(256, 18, args.repeats)
    if args.quick:
        bench_teleport(768, 5000, 64, args.repeats)
    else:
        bench_teleport(3072, 50_000, 256, args.repeats)


if __name__ == "__main__":
    main()
