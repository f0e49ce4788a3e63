"""Shared benchmark helpers: alternating timed runs with medians, and peak-memory probes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import jax


def time_alternating(functions: dict, repeats: int = 7) -> dict[str, float]:
    """Median wall time (s) of each zero-argument callable, run in alternation after one warm-up each.

    Alternating A, B, A, B, ... spreads the noise of a shared machine evenly over the
    candidates; the median discards the outliers.
    """
    for function in functions.values():
        jax.block_until_ready(function())
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(function())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_increase_mib(function) -> float:
    """Peak resident memory added by calling `function()` once, in MiB.

    Resets the kernel's high-water mark (`/proc/self/clear_refs`), so only the call
    itself is measured, not what the process held or peaked at before it.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    jax.block_until_ready(function())
    return (_status_kib("VmHWM") - before) / 1024
