"""Conversion of stored pixel values to the library's float32 range [-1, 1]."""

from __future__ import annotations

import numpy as np

from gaussjax._checks import check_value_range
from gaussjax._errors import InputTypeError, InputValueError

_FLOAT32_MAX, _FLOAT32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


def check_pixel_range(name: str, value) -> tuple[float, float]:
    """`value` as `(low, high)`: finite bounds with `low < high`, whose map onto [-1, 1] is finite in float32.

    An infinite bound would map every stored value to one end of [-1, 1] (an all-black
    or all-white dataset), so it is refused.
    """
    low, high = check_value_range(name, value)
    if not (-_FLOAT32_MAX <= low and high <= _FLOAT32_MAX):
        raise InputValueError(
            f"`{name}` must have finite bounds (within float32's range), got ({low:g}, {high:g}); "
            "pass the range the data is stored in, e.g. (0, 1) or (0, 255)"
        )
    if 2.0 / (high - low) > _FLOAT32_MAX or 2.0 / (high - low) < _FLOAT32_TINY:
        raise InputValueError(f"`{name}` = ({low:g}, {high:g}) is too narrow or too wide "
                              "to map onto [-1, 1] in float32")
    return low, high


def default_value_range(array: np.ndarray, *, name: str = "array") -> tuple[float, float]:
    """The value range a stored image array is assumed to span.

    `uint8` images span `(0, 255)`; float images are assumed to be already in the
    library's `(-1, 1)` convention (pass an explicit `value_range` otherwise).
    Other integer types have no safe default and raise.
    """
    if array.dtype == np.uint8:
        return (0.0, 255.0)
    if np.issubdtype(array.dtype, np.floating):
        return (-1.0, 1.0)
    raise InputTypeError(
        f"{name} has dtype {array.dtype}; pass value_range=(low, high) to say which "
        "stored values map to -1 and 1"
    )


def to_signed_unit(array: np.ndarray, value_range: tuple[float, float], *, name: str = "array") -> np.ndarray:
    """Map stored values in `value_range = (low, high)` affinely onto float32 [-1, 1].

    Raises `ValueError` if any value is NaN/inf or lies outside `value_range`, so
    mislabelled data (e.g. [0, 255] floats read as [-1, 1]) is caught at load time.
    """
    low, high = check_pixel_range("value_range", value_range)
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputValueError(f"{name} contains NaN or infinite values")
    if array.size:
        lo, hi = float(array.min()), float(array.max())
        if lo < low or hi > high:
            raise InputValueError(
                f"{name} has values in [{lo:g}, {hi:g}], outside value_range=({low:g}, {high:g}); "
                "pass the range the data is stored in, e.g. value_range=(0, 1) or (0, 255)"
            )
    out = (array.astype(np.float32) - np.float32(low)) * np.float32(2.0 / (high - low)) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)  # clip only float rounding at the ends
