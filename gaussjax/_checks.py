"""Argument validation at the Python boundary.

Every public function checks its inputs here, before any array work, so that bad
input fails with a message naming the argument and what was expected instead of
silently producing NaN deep inside a jitted computation.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import Any


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return `value` as an `int`, or raise if it is not an integer `>= minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """Raise unless `value` is one of `choices` (listed in the message)."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}")
    return value


def check_value_range(name: str, value: Any) -> tuple[float, float]:
    """Return `value` as `(low, high)` floats with `low < high`, or raise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}") from None
    if not low < high:
        raise ValueError(f"`{name}` must satisfy low < high, got ({low}, {high})")
    return low, high
