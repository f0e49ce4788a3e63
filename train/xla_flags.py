"""XLA:CPU flags that `python -m train` sets before JAX starts (XLA reads `XLA_FLAGS` once)."""

from __future__ import annotations

import importlib.util
import mmap
import os
from pathlib import Path

# XLA:CPU's YNNPACK fusions run this U-Net's train step ~1.7x slower than its Eigen kernels
# (bench/train_step.py); `python -m train` switches them off unless XLA_FLAGS already decides.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def jaxlib_knows_flag(flag: str) -> bool:
    """Whether the installed jaxlib's binaries mention `flag` (XLA aborts on unknown flags)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    needle = flag.lstrip("-").encode()
    for location in spec.submodule_search_locations:
        for library in Path(location).glob("*.so"):
            if library.stat().st_size == 0:
                continue
            with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data.find(needle) >= 0:
                    return True
    return False


def prefer_eigen_kernels(environ=os.environ) -> None:
    """Add `--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS (before JAX starts), if jaxlib knows it."""
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FLAG.lstrip("-") not in flags and jaxlib_knows_flag(YNN_FLAG):
        environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
