"""Streaming a dataset as fixed-size chunks of flat vectors, with bounded memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from jaxtyping import Float, Shaped

from gaussjax._checks import check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.data._array import as_nhwc
from gaussjax.data._dataset import Dataset, images_to_flat
from gaussjax.data._npy import load_npy
from gaussjax.data._pixels import check_pixel_range, default_value_range, to_signed_unit


def iter_chunks(
    source: Dataset | str | os.PathLike | Shaped[np.ndarray, " N *image"],
    chunk_size: int = 4096,
    *,
    value_range: tuple[float, float] | None = None,
    channels_first: bool = False,
) -> Iterator[Float[np.ndarray, "n D"]]:
    """Yield float32 flat vectors `(n, D)` in [-1, 1], `chunk_size` rows at a time, in order.

    Args:
        source: a `Dataset`; a path to a `.npy` file of images (memory-mapped, so
            only one chunk is ever converted to float at a time); or an array of
            stored images `(N, H, W[, C])` such as an `np.memmap`.
        chunk_size: rows per chunk; the last chunk may be shorter.
        value_range, channels_first: how the stored images are to be read, as in
            `load_dataset("array", ...)`; ignored for a `Dataset`.

    This is the input `gaussjax.fit_gaussian` and friends accept for data too large
    to hold in memory as float32 at once.
    """
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if value_range is not None:
        value_range = check_pixel_range("value_range", value_range)
    if isinstance(source, Dataset):
        yield from source.chunks(chunk_size)
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix != ".npy":
            raise InputValueError(f"`source` path must be a .npy file (memory-mapped), got {path}")
        source = load_npy(path, mmap_mode="r")
    if not isinstance(source, np.ndarray):
        raise InputTypeError(f"`source` must be a Dataset, a .npy path or an array, got {type(source).__name__}")
    images = as_nhwc(source, channels_first=channels_first, name="source")
    if len(images) == 0:
        raise InputValueError("`source` is empty")
    if value_range is None:
        value_range = default_value_range(images, name="source")
    for start in range(0, len(images), chunk_size):
        chunk = np.asarray(images[start : start + chunk_size])
        yield images_to_flat(to_signed_unit(chunk, value_range, name=f"source rows {start}+"))
