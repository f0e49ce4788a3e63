"""Conversion of stored pixel values to the library's float32 range [-1, 1]."""

from __future__ import annotations

import numpy as np

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_value_range
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.data._memory import empty_aligned

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


def to_signed_unit(
    array: np.ndarray, value_range: tuple[float, float], *, name: str = "array", out: np.ndarray | None = None
) -> np.ndarray:
    """Map stored values in `value_range = (low, high)` affinely onto float32 [-1, 1].

    Computed as `(float32(x) - low) * (2 / (high - low)) - 1` in float32, clipped to [-1, 1],
    `BLOCK_ELEMENTS` values at a time into one 64-byte aligned float32 array (`out` if given:
    float32, `array`'s shape), so the memory is the output's plus one block, whatever the size.

    Raises `ValueError` if any value is NaN/inf or lies outside `value_range`, so
    mislabelled data (e.g. [0, 255] floats read as [-1, 1]) is caught at load time.
    """
    low, high = check_pixel_range("value_range", value_range)
    array = np.asarray(array)
    floating = np.issubdtype(array.dtype, np.floating)
    if out is None:
        out = empty_aligned(array.shape, np.float32)
    elif out.dtype != np.float32 or out.shape != array.shape or not out.flags.c_contiguous:
        raise InputValueError(f"`out` must be a C-contiguous float32 array of shape {array.shape}, got "
                              f"{out.dtype} {out.shape}")
    if array.size == 0:
        return out
    flat, result = (array, out) if array.ndim else (array.reshape(1), out.reshape(1))
    rows = max(1, BLOCK_ELEMENTS // (flat.size // len(flat)))
    lo, hi = np.inf, -np.inf
    for start in range(0, len(flat), rows):
        block = flat[start : start + rows]
        if floating and not np.all(np.isfinite(block)):
            raise InputValueError(f"{name} contains NaN or infinite values")
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if lo < low or hi > high:
        raise InputValueError(
            f"{name} has values in [{lo:g}, {hi:g}], outside value_range=({low:g}, {high:g}); "
            "pass the range the data is stored in, e.g. value_range=(0, 1) or (0, 255)"
        )
    scale = np.float32(2.0 / (high - low))
    for start in range(0, len(flat), rows):
        target = result[start : start + rows]
        target[...] = flat[start : start + rows]  # the float32 rounding of astype(np.float32)
        target -= np.float32(low)
        target *= scale
        target -= np.float32(1.0)
        np.clip(target, -1.0, 1.0, out=target)  # clip only float rounding at the ends
    return out

