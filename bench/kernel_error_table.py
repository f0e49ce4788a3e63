"""Print the interpreted kernels' error table of docs/kernels.md: `python bench/kernel_error_table.py`.

For the delta denoiser (`q = x`, `k = v = y`, `c = -||y||^2 / 2`, `s = 1 / sigma^2`), N = 257 points
and 9 queries, the maximum relative error `max |a - b| / max |b|` of the Triton kernel (interpreted; the
CPU path) against DeltaMixture's XLA path and against float64 NumPy, of the XLA path against float64, and of
the TPU kernel (TPU interpreter, random grid order) against float64; then the same for the score
`(D(x) - x) / sigma^2` (kernel and XLA against float64). Two data sets per D: "near", points uniform in
[-1, 1]^D and each query 0.05 from one of them (one point dominates at small sigma); "mixed", points and
queries in a cluster of spread `sigma / sqrt(D)` about a point uniform in [-1, 1]^D, so that at every sigma
many points weigh (the hard case for float32: scores of size ~D/6 whose differences are ~sigma^2).
"""

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas import tpu as pltpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "kernels"))  # the tests' float64 reference
from test_softmax_weighted_sum import data, relative_error, weighted_sum64  # noqa: E402

from gaussjax.kernels import _mosaic, softmax_weighted_sum  # noqa: E402
from gaussjax.scores import DeltaMixture  # noqa: E402


def mixed(rng, dim, sigma):
    centre = rng.uniform(-1, 1, size=dim)
    cluster = centre + sigma / np.sqrt(dim) * rng.normal(size=(257 + 9, dim))
    points, queries = cluster[:257].astype(np.float32), cluster[257:].astype(np.float32)
    return queries, points, (-0.5 * np.sum(points.astype(np.float64) ** 2, axis=1)).astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    print("| data | D | sigma | kernel vs XLA | kernel vs float64 | XLA vs float64 | TPU kernel vs float64 "
          "| score: kernel vs float64 | score: XLA vs float64 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("near", "mixed"):
        for dim in (2, 64, 784, 3072):
            near = data(rng, 9, 257, dim)
            for sigma in (0.01, 0.1, 1.0, 80.0):
                queries, points, bias = near if kind == "near" else mixed(rng, dim, sigma)
                xla = DeltaMixture(points, implementation="xla")
                scale = 1 / sigma**2
                mean64 = weighted_sum64(queries, points, bias, scale)[0]
                fused = np.asarray(softmax_weighted_sum(queries, points, bias, scale).mean, np.float64)
                reference = np.asarray(xla.denoise(queries, sigma), np.float64)
                args = (jnp.asarray(queries), jnp.full(9, scale, jnp.float32), jnp.asarray(points),
                        jnp.asarray(bias), jnp.asarray(points))
                tpu = _mosaic.weighted_sum(*args, interpret=pltpu.InterpretParams(random_seed=dim))[0]
                moved64 = mean64 - queries  # sigma^2 times the score
                print(f"| {kind} | {dim} | {sigma:g} | {relative_error(fused, reference):.1e} "
                      f"| {relative_error(fused, mean64):.1e} | {relative_error(reference, mean64):.1e} "
                      f"| {relative_error(tpu, mean64):.1e} | {relative_error(fused - queries, moved64):.1e} "
                      f"| {relative_error(reference - queries, moved64):.1e} |")


if __name__ == "__main__":
    main()
