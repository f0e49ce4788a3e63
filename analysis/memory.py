"""Refusing option values whose arrays would not fit in memory, before anything is allocated.

Each command estimates the bytes of its largest arrays from its options (counts, grid sizes)
and the data's dimension, and `check_memory` refuses the options with a ValueError naming them
when the estimate exceeds `MEMORY_SHARE` of the machine's memory: a mistyped
`--num-queries 1000000000` is an error line, not an exhausted machine.
"""

from __future__ import annotations

import decimal
import os
from pathlib import Path

from gaussjax.checks import InputValueError

MEMORY_SHARE = 0.5  # a command may plan to use at most this share of the machine's memory
FLOAT32, FLOAT64 = 4, 8  # bytes per value
ROW_BYTES = 1024  # a tidy CSV row held as a dict of about ten Python numbers and strings
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory() -> int:
    """Bytes of physical memory, or of this process's cgroup memory limit where that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            limit = Path(path).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def check_memory(nbytes: int, options: str) -> None:
    """Raise a ValueError naming `options` if about `nbytes` exceed `MEMORY_SHARE` of `machine_memory()`.

    Args:
        nbytes: the estimated bytes of the command's largest arrays (an exact Python int: option
            values may be far beyond float range).
        options: the options and values responsible, in words (e.g. "`--num-queries` 1000000000").
    """
    available = machine_memory()
    if nbytes > MEMORY_SHARE * available:
        raise InputValueError(f"{options} would need about {_gib(nbytes)} GiB of memory, more than "
                              f"{MEMORY_SHARE:.0%} of this machine's {_gib(available)} GiB; choose smaller values")


def _gib(nbytes: int) -> str:
    return f"{decimal.Decimal(nbytes) / 2**30:.3g}"
