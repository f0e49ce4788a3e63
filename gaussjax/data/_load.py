"""`load_dataset`: one entry point for every dataset by name."""

from __future__ import annotations

from collections.abc import Callable

from gaussjax._checks import check_choice
from gaussjax._errors import InputValueError
from gaussjax.data._array import load_array
from gaussjax.data._cifar10 import load_cifar10
from gaussjax.data._dataset import Dataset
from gaussjax.data._edm_zip import load_edm_zip
from gaussjax.data._embedded import load_digits, load_patches
from gaussjax.data._folder import load_folder
from gaussjax.data._mnist import load_mnist
from gaussjax.data._splits import SPLITS

EMBEDDED = ("digits", "patches")
FROM_FILES = ("mnist", "cifar10", "folder", "array", "edm-zip")
WITHOUT_SPLIT: dict[str, Callable[..., Dataset]] = {"folder": load_folder, "array": load_array, "edm-zip": load_edm_zip}
DATASETS = EMBEDDED + FROM_FILES


def load_dataset(name: str, *, root=None, split: str = "train", **options) -> Dataset:
    """Load a dataset as float32 images `(N, H, W, C)` in [-1, 1]; nothing is downloaded.

    Args:
        name: `"digits"` (default data: scikit-learn's 8x8 digits) or `"patches"`
            (RGB patches of scikit-learn's sample photographs), both embedded; or
            `"mnist"`, `"cifar10"`, `"folder"`, `"array"`, `"edm-zip"` (a `.zip` or
            folder written by NVlabs/edm's `dataset_tool.py`, labels from its
            `dataset.json`), read from `root`.
        root: where the files are (unused for the embedded sets); `None` falls back
            to `$GAUSSJAX_DATA/<name>`.
        split: `"train"`, `"test"` or `"all"`. `mnist` and `cifar10` have their
            official splits, `digits` and `patches` a fixed deterministic one;
            `folder`, `array` and `edm-zip` have no split and return everything for
            `"train"` or `"all"`.
        **options: per-dataset options: `patch_size`, `stride` (patches); `pad_to`
            (mnist); `resolution`, `mode` (folder); `key`, `labels_key`,
            `value_range`, `channels_first` (array); `max_size` (edm-zip: the first
            `max_size` images in sorted order).

    Returns:
        A `Dataset` with `.images`, `.labels` (or `None`), `.flat` `(N, D)` and `.name`.

    Example:
        >>> load_dataset("digits").images.shape
        (1442, 8, 8, 1)
    """
    check_choice("name", name, DATASETS)
    check_choice("split", split, SPLITS)
    if name in EMBEDDED:
        if root is not None:
            raise InputValueError(f"dataset {name!r} is embedded in scikit-learn and takes no `root`")
        return {"digits": load_digits, "patches": load_patches}[name](split, **options)
    if name in WITHOUT_SPLIT:
        if split == "test":
            raise InputValueError(f"dataset {name!r} has no test split; use split='all'")
        return WITHOUT_SPLIT[name](root, **options)
    if split == "all":
        raise InputValueError(f"dataset {name!r} has official splits: use split='train' or split='test'")
    return {"mnist": load_mnist, "cifar10": load_cifar10}[name](root, split, **options)
