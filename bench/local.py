"""Benchmark the local (patch) denoisers on digits against a matched matmul.

    python bench/local.py             # 256 queries at sigma 0.5 (under 2 minutes on 2 cores)
    python bench/local.py --queries 64

Prints, per model, the median time per `denoise` call (after compilation; the model and
its baseline timed in alternation), its GFLOP/s, and the ratio to a "matched matmul":
a plain jitted `(B P, k^2 C) @ (k^2 C, S Q)` per chunk of S training images, summed
over the chunks -- the shapes and FLOP count of the ELS cross term. To add a model,
add a row to `MODELS`: name -> (constructor(images), FLOPs(B, N, H, W, C), patch size for the
ELS-shaped baseline); the other models (patch size None) are compared with square
512 x 256 x 512 matmuls of the same FLOP count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_alternating

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._precision import matmul
from gaussjax.data import load_dataset
from gaussjax.fit import fit_gaussian
from gaussjax.scores.local_delta import LocalDeltaMixture
from gaussjax.scores.patch import PatchMixture
from gaussjax.scores.patch_posterior import PatchPosteriorMean, crop_starts


def _ls_flops(k):
    return lambda b, n, h, w, c: 2 * b * n * h * w * (k * k * c + c)


def _els_flops(k):
    return lambda b, n, h, w, c: 2 * b * (h * w) * n * (h * w) * (k * k * c + c)


def _pspc_flops(p, stride):
    def flops(b, n, h, w, c):
        crops = len(crop_starts(h, p, stride)) * len(crop_starts(w, p, stride))
        return 2 * b * n * crops * 2 * p * p * c  # scores and weighted crop values
    return flops


def _locality_flops(b, n, h, w, c):
    d = h * w * c
    return 2 * b * n * (3 * d * d)  # (x * y) @ M, (y * y) @ M and the weighted values, per query


MODELS = {
    "LS k=3": (lambda y: PatchMixture(y, 3), _ls_flops(3), None),
    "LS k=5": (lambda y: PatchMixture(y, 5), _ls_flops(5), None),
    "ELS k=3": (lambda y: PatchMixture(y, 3, equivariant=True), _els_flops(3), 3),
    "ELS k=5": (lambda y: PatchMixture(y, 5, equivariant=True), _els_flops(5), 5),
    "PSPC p=4 s=2": (lambda y: PatchPosteriorMean(y, 4, 2), _pspc_flops(4, 2), None),
    "locality": (lambda y: LocalDeltaMixture(y, fit_gaussian(y.reshape(len(y), -1))), _locality_flops, None),
}


@jax.jit
def _denoise(model, x, sigma):
    return model.denoise(x, sigma)


@jax.jit
def _matched_matmul(rows, chunks):
    """`rows (M', R', K) @ chunk (K, S Q)` for every row block and chunk, each reduced to a number (kept live).

    Row blocks of `R' = BLOCK_ELEMENTS // 4 // (S Q)` rows, as the ELS stream cuts its queries.
    """
    return jax.lax.map(lambda r: jax.lax.map(lambda t: jnp.sum(matmul(r, t)), chunks), rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = jnp.asarray(load_dataset("digits").images, jnp.float32)  # (N, H, W, C)
    n, h, w, c = images.shape
    key = jax.random.key(0)
    x = images[: args.queries] + args.sigma * jax.random.normal(key, (args.queries, h, w, c))
    sigma = jnp.full((args.queries,), args.sigma)
    print(f"digits: N={n}, {h}x{w}x{c}; {args.queries} queries at sigma {args.sigma}; backend {jax.default_backend()}")
    print(f"{'model':<13} {'time (s)':>9} {'GFLOP/s':>8} {'matmul (s)':>10} {'ratio':>6}")
    for name, (construct, flops, k) in MODELS.items():
        model = construct(images)
        gflops = flops(args.queries, n, h, w, c) / 1e9
        if k is None:  # same FLOPs in square matmuls
            rows = jax.random.normal(key, (-(-int(gflops * 1e9) // (2 * 512 * 256 * 512)), 512, 256))
            chunks = jax.random.normal(key, (1, 256, 512))
        else:  # the ELS cross term's shapes
            s = model.chunk_size
            block = max(1, min(args.queries * h * w, BLOCK_ELEMENTS // 4 // (s * h * w)))
            rows = jax.random.normal(key, (-(-args.queries * h * w // block), block, k * k * c))
            chunks = jax.random.normal(key, (-(-n // s), k * k * c, s * h * w))
        times = time_alternating(
            {"model": lambda m=model: _denoise(m, x, sigma), "matmul": lambda r=rows, t=chunks: _matched_matmul(r, t)},
            repeats=args.repeats,
        )
        print(
            f"{name:<13} {times['model']:>9.3f} {gflops / times['model']:>8.1f} {times['matmul']:>10.3f} "
            f"{times['model'] / times['matmul']:>6.2f}"
        )


if __name__ == "__main__":
    main()
