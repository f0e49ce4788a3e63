"""Noise levels given on the command line: geometric grids and lists, within float32's range.

The commands compute in float32. A noise level is accepted when `sigma^2` and `1 / sigma^2` are
normal float32 numbers, the range in which gaussjax's models take it (beyond it the scores and
the closed-form curves overflow to inf and NaN, or lose all precision); errors name the option.
"""

from __future__ import annotations

import numpy as np

SIGMA_MIN = float(np.sqrt(np.finfo(np.float32).smallest_normal))  # about 1.1e-19
SIGMA_MAX = 1 / SIGMA_MIN  # about 9.2e18


def check_sigma(option: str, value: float) -> float:
    """`value` as a float if it is a noise level in `[SIGMA_MIN, SIGMA_MAX]`, else a ValueError naming `option`."""
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{option}` must be a positive finite number, got {value}")
    if not SIGMA_MIN <= value <= SIGMA_MAX:
        raise ValueError(f"`{option}` must be in [{SIGMA_MIN:.2g}, {SIGMA_MAX:.2g}] (sigma^2 and 1 / sigma^2 must be "
                         f"normal float32 numbers), got {value:.3g}")
    return float(value)


def sigma_grid(num: int, low: float, high: float, *, min_num: int = 1) -> np.ndarray:
    """`(num,)` geometric noise levels from `--sigma-min` (`low`) to `--sigma-max` (`high`), float64, validated.

    `num` (`--num-sigmas`) must be at least `min_num`.
    """
    if num < min_num:
        raise ValueError(f"`--num-sigmas` must be >= {min_num}, got {num}")
    check_sigma("--sigma-min", low)
    check_sigma("--sigma-max", high)
    if low > high:
        raise ValueError(f"need `--sigma-min` <= `--sigma-max`, got {low}, {high}")
    return np.geomspace(low, high, num)


def parse_sigmas(option: str, text: str) -> list[float]:
    """`'0.1,0.5,2'` as noise levels (`check_sigma`), in the given order, without repeats; errors name `option`."""
    try:
        sigmas = [float(item) for item in str(text).split(",") if item.strip()]
    except ValueError:
        sigmas = []
    if not sigmas:
        raise ValueError(f"`{option}` must be comma-separated positive numbers, got {text!r}")
    return list(dict.fromkeys(check_sigma(option, sigma) for sigma in sigmas))
