"""Benchmark the analytic scores against bare matmuls and the naive formulations.

    python bench/scores.py            # all cases (several minutes on 2 cores)
    python bench/scores.py --quick    # smaller shapes, for a smoke run

Prints, per case, median times of the candidate and its baselines measured in
alternation in this run, and their ratios. Memory cases run in fresh subprocesses.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_alternating  # noqa: E402

import gaussjax.scores as scores  # noqa: E402


@jax.jit
def _score(model, x, sigma):
    return model.score(x, sigma)


@jax.jit
def _two_matmuls(x, points, weights):
    return x @ points.T, weights @ points


@jax.jit
def _one_shot_delta_score(points, half_sq_norms, x, sigma):
    """All N logits at once, softmax, weighted sum: the formulation streaming replaces."""
    logits = (x @ points.T - half_sq_norms[None, :]) / jnp.square(sigma)[:, None]
    weights = jax.nn.softmax(logits, axis=-1)
    return (weights @ points - x) / jnp.square(sigma)[:, None]


def _random_basis(key, dim, rank, batch=()):
    return jnp.linalg.qr(jax.random.normal(key, (*batch, dim, rank)))[0]


def bench_delta(num_points, dim, num_queries, repeats):
    key = jax.random.split(jax.random.key(0), 3)
    points = jax.random.uniform(key[0], (num_points, dim), minval=-1.0, maxval=1.0)
    x = points[:num_queries] + 0.5 * jax.random.normal(key[1], (num_queries, dim))
    sigma = jnp.full((num_queries,), 0.5)
    model = scores.DeltaMixture(points)
    half_sq = 0.5 * jnp.sum(jnp.square(points), axis=-1)
    weights = jax.nn.softmax(jax.random.normal(key[2], (num_queries, num_points)), axis=-1)
    times = time_alternating(
        {
            "DeltaMixture.score": lambda: _score(model, x, sigma),
            "two bare matmuls": lambda: _two_matmuls(x, points, weights),
            "one-shot jnp": lambda: _one_shot_delta_score(points, half_sq, x, sigma),
        },
        repeats,
    )
    flops = 4 * num_queries * num_points * dim
    print(f"\nDeltaMixture.score  N={num_points} D={dim} queries={num_queries} (chunk {model.chunk_size})")
    for name, seconds in times.items():
        print(f"  {name:<20} {seconds * 1e3:9.1f} ms  {flops / seconds / 1e9:7.1f} GFLOP/s")
    score = times["DeltaMixture.score"]
    print(f"  throughput vs two bare matmuls: {times['two bare matmuls'] / score:.2f}  (target >= 0.70)")
    print(f"  speed vs one-shot jnp:          {times['one-shot jnp'] / score:.2f}x  (target >= 1)")


def bench_mixture(num_components, rank, dim, num_queries, repeats):
    keys = jax.random.split(jax.random.key(1), 4)
    model = scores.GaussianMixture(
        jnp.ones(num_components),
        jax.random.normal(keys[0], (num_components, dim)),
        jax.random.uniform(keys[1], (num_components, rank), minval=0.1, maxval=2.0),
        _random_basis(keys[2], dim, rank, (num_components,)),
    )
    x = jax.random.normal(keys[3], (num_queries, dim))
    sigma = jnp.full((num_queries,), 0.5)
    basis = model.eigvecs.transpose(1, 0, 2).reshape(dim, num_components * rank)
    coords = jax.random.normal(keys[3], (num_queries, num_components * rank))
    times = time_alternating(
        {
            "GaussianMixture.score": lambda: _score(model, x, sigma),
            "matched matmuls": lambda: _two_matmuls(x, basis.T, coords),
        },
        repeats,
    )
    flops = 4 * num_queries * num_components * dim * rank
    print(f"\nGaussianMixture.score  K={num_components} r={rank} D={dim} queries={num_queries}")
    for name, seconds in times.items():
        print(f"  {name:<22} {seconds * 1e3:9.1f} ms  {flops / seconds / 1e9:7.1f} GFLOP/s")
    ratio = times["matched matmuls"] / times["GaussianMixture.score"]
    print(f"  throughput vs matched matmuls: {ratio:.2f}  (target >= 0.50)")


def bench_gaussian(dim, num_queries, repeats):
    keys = jax.random.split(jax.random.key(2), 3)
    model = scores.Gaussian(jnp.zeros(dim), jax.random.uniform(keys[0], (dim,)), _random_basis(keys[1], dim, dim))
    x = jax.random.normal(keys[2], (num_queries, dim))
    sigma = jnp.full((num_queries,), 0.5)
    one_matmul = jax.jit(lambda x, u: x @ u)
    times = time_alternating(
        {"Gaussian.score": lambda: _score(model, x, sigma), "one matmul": lambda: one_matmul(x, model.eigvecs)},
        repeats,
    )
    print(f"\nGaussian.score  D={dim} rank={dim} queries={num_queries}")
    for name, seconds in times.items():
        print(f"  {name:<16} {seconds * 1e3:9.1f} ms")
    print(f"  time / one matmul: {times['Gaussian.score'] / times['one matmul']:.2f}  (target <= 2)")


MEMORY_PROBE = """
import sys, jax, jax.numpy as jnp
sys.path.insert(0, {bench!r})
from _timing import peak_increase_mib
from bench_scores_memory import run
run({num_points}, {dim}, {num_queries}, {formulation!r})
"""


def memory_case(num_points, dim, num_queries, formulation):
    """Peak memory of one call with 4096-ish queries, in a fresh process; returns MiB or None on failure."""
    code = MEMORY_PROBE.format(
        bench=str(Path(__file__).resolve().parent), num_points=num_points, dim=dim, num_queries=num_queries,
        formulation=formulation,
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1] if result.stderr else "failed"
    return float(result.stdout.strip().splitlines()[-1]), ""


def bench_memory(num_queries, dim, sizes, one_shot):
    print(f"\nPeak memory added by one DeltaMixture.score call, {num_queries} queries, D={dim} (target <= 512 MiB)")
    for num_points in sizes:
        streamed, error = memory_case(num_points, dim, num_queries, "streamed")
        if streamed is not None:
            line = f"  N={num_points:>7}: streamed {streamed:8.0f} MiB"
        else:
            line = f"  N={num_points}: streamed failed: {error}"
        if one_shot:
            naive, error = memory_case(num_points, dim, num_queries, "one-shot")
            line += f"   one-shot jnp {naive:8.0f} MiB" if naive is not None else f"   one-shot failed: {error}"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--one-shot-memory", action="store_true",
                        help="also measure the one-shot formulation's memory (several GB)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)), float32")
    if args.quick:
        bench_delta(5000, 768, 128, args.repeats)
        bench_mixture(20, 16, 256, 128, args.repeats)
        bench_gaussian(512, 128, args.repeats)
        if not args.skip_memory:
            bench_memory(512, 784, [10_000], args.one_shot_memory)
        return
    bench_delta(50_000, 3072, 128, args.repeats)
    bench_mixture(100, 64, 784, 256, args.repeats)
    bench_gaussian(3072, 256, args.repeats)
    if not args.skip_memory:
        bench_memory(4096, 784, [100_000, 200_000], args.one_shot_memory)


if __name__ == "__main__":
    main()
