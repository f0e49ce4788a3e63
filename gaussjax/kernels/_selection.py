"""Which implementation a model's `implementation` field selects: the XLA path or the fused kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gaussjax._checks import check_choice
from gaussjax.kernels import _triton

IMPLEMENTATIONS = ("auto", "xla", "pallas")


def check_implementation(implementation) -> str:
    """`implementation` if it is one of `IMPLEMENTATIONS`, else `ValueError` naming the choices."""
    return check_choice("implementation", implementation, IMPLEMENTATIONS)


# Backends on which `"auto"` runs the kernel: those where it was measured faster than the XLA path. On an
# NVIDIA H200 it was 2.6-2.9x slower for the delta score and 1.7x slower for CIFAR-size ELS (docs/kernels.md,
# "On a GPU"); TPUs are unmeasured. So none, for now: the kernel is opt-in (`"pallas"`).
AUTO_KERNEL_BACKENDS: frozenset[str] = frozenset()


def use_kernel(implementation: str, dtype) -> bool:
    """Whether `implementation` runs the fused kernel for data of `dtype`, on the default backend.

    `"pallas"`: always (interpreted where there is no lowering, e.g. on CPU). `"xla"`: never.
    `"auto"`: for float32 data on a backend of `AUTO_KERNEL_BACKENDS` (where the kernel was measured
    faster; none yet), else the XLA path. Resolved when the model is traced.
    """
    if implementation != "auto":
        return implementation == "pallas"
    backend = jax.default_backend()
    available = backend == "tpu" or (backend == "gpu" and _triton.AVAILABLE)
    return available and backend in AUTO_KERNEL_BACKENDS and jnp.dtype(dtype) == jnp.float32
