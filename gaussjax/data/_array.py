"""Images stored as a NumPy `.npy` or `.npz` file, uint8 or float."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaussjax._errors import InputKeyError, InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._npy import load_npy, npz_member, open_npz
from gaussjax.data._pixels import check_pixel_range, default_value_range, to_signed_unit

_IMAGE_KEYS = ("images", "x", "x_train", "arr_0")
_LABEL_KEYS = ("labels", "y", "y_train")


def as_nhwc(array: np.ndarray, *, channels_first: bool = False, name: str = "images") -> np.ndarray:
    """View `(N, H, W)`, `(N, H, W, C)` or, with `channels_first`, `(N, C, H, W)` as `(N, H, W, C)`."""
    if array.ndim == 3:
        return array[..., None]
    if array.ndim != 4:
        raise InputValueError(f"{name} must have shape (N, H, W) or (N, H, W, C), got {array.shape}")
    if channels_first:
        array = np.moveaxis(array, 1, -1)
    if array.shape[-1] not in (1, 2, 3, 4):
        hint = "" if channels_first else "; pass channels_first=True for (N, C, H, W) data"
        raise InputValueError(f"{name} has {array.shape[-1]} channels in its last axis{hint}")
    return array


def _pick(files: list[str], key: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str | None:
    if key is not None:
        if key not in files:
            raise InputKeyError(f"{path} has no array {key!r} for the {what}; it holds {files}")
        return key
    return next((k for k in defaults if k in files), None)


def load_array(
    root=None,
    *,
    key: str | None = None,
    labels_key: str | None = None,
    value_range: tuple[float, float] | None = None,
    channels_first: bool = False,
) -> Dataset:
    """Images from a `.npy` file, or from one array of an `.npz` file (with optional labels).

    Args:
        root: the `.npy` / `.npz` file.
        key: the `.npz` array holding the images (default: the first of
            `images, x, x_train, arr_0` present).
        labels_key: the `.npz` array holding labels (default: `labels, y, y_train` if present).
        value_range: the stored values that map to -1 and 1 (finite). Default `(0, 255)` for
            uint8; float data is taken to be in [-1, 1] already, and values outside it
            raise (pass `(0, 1)` for [0, 1] floats).
        channels_first: the images are stored `(N, C, H, W)`.
    """
    if value_range is not None:
        value_range = check_pixel_range("value_range", value_range)
    path = resolve_root("array", root)
    if path.suffix not in (".npy", ".npz"):
        raise InputValueError(f"`root` must be a .npy or .npz file, got {path}")
    labels = None
    if path.suffix == ".npy":
        images = load_npy(path)
    else:
        with open_npz(path) as archive:
            image_key = _pick(archive.files, key, _IMAGE_KEYS, "images", path)
            if image_key is None:
                raise InputKeyError(f"{path} holds {archive.files}; pass key=... to say which array holds the images")
            label_key = _pick(archive.files, labels_key, _LABEL_KEYS, "labels", path)
            images = npz_member(archive, image_key, path)
            labels = None if label_key is None else npz_member(archive, label_key, path)
    images = as_nhwc(images, channels_first=channels_first, name=f"images in {path}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise InputValueError(f"{path} has {images.shape[0]} images but labels of shape {labels.shape}")
    if value_range is None:
        value_range = default_value_range(images, name=f"images in {path}")
    return Dataset("array", to_signed_unit(images, value_range, name=f"images in {path}"), labels, "all")
