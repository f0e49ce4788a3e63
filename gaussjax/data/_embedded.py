"""Datasets that ship inside scikit-learn: `digits` and `patches` (no download)."""

from __future__ import annotations

import numpy as np

from gaussjax._checks import check_positive_int
from gaussjax._errors import InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._pixels import to_signed_unit
from gaussjax.data._splits import split_indices


def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, labels 0-9) as `(N, 8, 8, 1)`.

    Pixel intensities 0..16 map to [-1, 1]. Splits are stratified by class:
    `"train"` (1,442 images), `"test"` (355) or `"all"`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    index = split_indices(len(bunch.target), split, labels=bunch.target)
    images = to_signed_unit(bunch.images[index, :, :, None], (0.0, 16.0), name="digits images")
    return Dataset("digits", images, bunch.target[index], split)


def extract_patches(image: np.ndarray, patch_size: int, stride: int) -> np.ndarray:
    """All `patch_size`-square patches of `image (H, W, C)` on a grid of step `stride`, row-major.

    Returns `(n_rows * n_cols, patch_size, patch_size, C)`.
    """
    height, width = image.shape[:2]
    if patch_size > min(height, width):
        raise InputValueError(f"`patch_size` {patch_size} exceeds the image size {height}x{width}")
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size), axis=(0, 1))
    windows = windows[::stride, ::stride]  # (rows, cols, C, p, p)
    return np.moveaxis(windows, 2, -1).reshape(-1, patch_size, patch_size, image.shape[2])


def load_patches(split: str = "train", *, patch_size: int = 16, stride: int | None = None) -> Dataset:
    """RGB patches of scikit-learn's two sample photographs (`china.jpg`, `flower.jpg`, 427x640).

    Patches are cut on a grid of step `stride` (default `patch_size`: non-overlapping)
    from each photograph in turn, giving `(N, patch_size, patch_size, 3)`; the default
    16x16 grid yields 2,080 patches (1,664 train, 416 test). The split is a fixed
    random partition of the patches; with `stride < patch_size` neighbouring train
    and test patches share pixels. No labels.
    """
    from sklearn.datasets import load_sample_images

    patch_size = check_positive_int("patch_size", patch_size)
    stride = patch_size if stride is None else check_positive_int("stride", stride)
    photos = load_sample_images().images
    patches = np.concatenate([extract_patches(photo, patch_size, stride) for photo in photos])
    index = split_indices(len(patches), split)
    return Dataset("patches", to_signed_unit(patches[index], (0.0, 255.0), name="patches"), None, split)
