"""One short check of the kernels on a GPU or TPU (~1 minute): `PYTHONPATH=. python bench/kernel_check.py`.

Prints, section by section (a failing section prints its error and the next one runs): the selection,
the kernel's error against float64 and the XLA path (delta case, several D and sigma), the derivatives
(jvp, grad) against the XLA path's autodiff, PatchMixture LS/ELS against XLA, and the delta denoiser's
time and throughput (4 B N D FLOPs per call) for both implementations at equal (HIGHEST) precision.
"""

import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

import gaussjax as gj
from gaussjax.kernels import _selection, _triton, softmax_weighted_sum


def section(title):
    def run(fn):
        print(f"\n== {title}", flush=True)
        try:
            fn()
        except Exception:  # report and go on: one run should say as much as it can
            traceback.print_exc()
        return fn
    return run


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


rng = np.random.default_rng(0)
SMALL = "small" in sys.argv[1:]  # a CPU trial of this script: small sizes
DIMS, QUERIES, POINTS = ((2, 64), 64, 512) if SMALL else ((64, 784, 3072), 1024, 16384)
print("jax", jax.__version__, jax.devices(), "triton backend:", _triton.AVAILABLE,
      "auto -> kernel (float32):", _selection.use_kernel("auto", jnp.float32))


@section("accuracy: kernel vs float64 and vs XLA (B=33, N=1000)")
def _accuracy():
    for dim in DIMS[:2] if SMALL else (2, *DIMS):
        points = rng.uniform(-1, 1, size=(1000, dim)).astype(np.float32)
        x = (points[:33] + 0.05 * rng.normal(size=(33, dim))).astype(np.float32)
        xla = gj.DeltaMixture(points, implementation="xla")
        for sigma in (0.01, 1.0, 80.0):
            fused = softmax_weighted_sum(x, points, -0.5 * np.sum(points**2, axis=1), 1 / sigma**2).mean
            logits = (x.astype(np.float64) @ points.T.astype(np.float64)
                      - 0.5 * np.sum(points.astype(np.float64) ** 2, axis=1)[None, :]) / sigma**2
            w = np.exp(logits - logits.max(axis=1, keepdims=True))
            exact = (w / w.sum(axis=1, keepdims=True)) @ points.astype(np.float64)
            print(f"D={dim:5d} sigma={sigma:5g}  vs float64 {relative(fused, exact):.1e}  "
                  f"vs XLA {relative(fused, xla.denoise(x, sigma)):.1e}  XLA vs float64 "
                  f"{relative(xla.denoise(x, sigma), exact):.1e}", flush=True)


@section("derivatives: pallas vs XLA autodiff (D=64)")
def _derivatives():
    points = rng.uniform(-1, 1, size=(500, 64)).astype(np.float32)
    x = (points[:5] + 0.3 * rng.normal(size=(5, 64))).astype(np.float32)
    sigma = np.full(5, 3.0, np.float32)  # many points weigh (at small sigma the Jacobian is ~0 and says nothing)
    models = [gj.DeltaMixture(points, implementation=i) for i in ("pallas", "xla")]
    grads = [jax.grad(lambda x, m=m: jnp.sum(jnp.sin(m.denoise(x, sigma))))(x) for m in models]
    jvps = [jax.jvp(lambda x, m=m: m.denoise(x, sigma), (x,), (x,))[1] for m in models]
    print(f"grad {relative(*grads):.1e}  jvp {relative(*jvps):.1e}")


@section("PatchMixture LS/ELS: pallas vs XLA (32x32x3, N=64, k=5)")
def _patches():
    images = rng.uniform(-1, 1, size=(8 if SMALL else 64, 32, 32, 3)).astype(np.float32)
    x = (images[:4] + 0.2 * rng.normal(size=images[:4].shape)).astype(np.float32)
    for equivariant in (False, True):
        out = [gj.PatchMixture(images, 5, equivariant=equivariant, implementation=i).denoise(x, 0.3)
               for i in ("pallas", "xla")]
        print(f"{'ELS' if equivariant else 'LS'} {relative(*out):.1e}")


def timed(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@section(f"speed: delta denoiser, B={QUERIES} queries, N={POINTS} points (median of 5)")
def _speed():
    for dim in DIMS:
        points = jnp.asarray(rng.uniform(-1, 1, size=(POINTS, dim)), jnp.float32)
        x = jnp.asarray(rng.uniform(-1, 1, size=(QUERIES, dim)), jnp.float32)
        row = []
        for implementation in ("xla", "pallas"):
            model = gj.DeltaMixture(points, implementation=implementation)
            seconds = timed(jax.jit(lambda m, x: m.denoise(x, 0.5)), model, x)
            flops = 4 * len(x) * len(points) * dim
            row.append(f"{implementation} {seconds * 1e3:8.2f} ms {flops / seconds / 1e12:6.2f} TFLOP/s")
        print(f"D={dim:5d}  " + "  ".join(row), flush=True)
