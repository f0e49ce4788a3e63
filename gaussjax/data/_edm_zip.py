"""NVlabs/edm's image datasets: the zip file (or folder) of PNGs that EDM's `dataset_tool.py` writes.

Layout, as EDM's `ImageFolderDataset` reads it: image files anywhere under the root
(`dataset_tool.py` names them `00000/img00000000.png`, `00000/img00000001.png`, ...),
taken in the order of their sorted relative paths, and an optional top-level
`dataset.json` holding `{"labels": [[relative_path, class_index], ...]}` or
`{"labels": null}`. Members that are not images (by Pillow's registered extensions)
are ignored, as EDM does.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gaussjax._checks import check_positive_int
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._pixels import to_signed_unit

LABELS_FILE = "dataset.json"
MAX_LABELS_BYTES = 256 << 20  # ImageNet's 1.28 M labels take ~60 MiB of JSON
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}  # Pillow's 8-bit modes, channels as stored

Opener = Callable[[str], contextlib.AbstractContextManager[BinaryIO]]


@contextlib.contextmanager
def open_members(root: Path) -> Iterator[tuple[list[str], Opener]]:
    """The files of `root` (a directory or a `.zip`), as relative POSIX paths, and a function opening one.

    Raises `ValueError` if `root` is neither a directory nor a readable zip file.
    """
    if root.is_dir():
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        yield names, lambda name: (root / name).open("rb")
        return
    if root.suffix.lower() != ".zip":
        raise ValueError(f"`root` must be a directory or a .zip file (as EDM's dataset_tool.py writes), got {root}")
    try:
        archive = zipfile.ZipFile(root)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"`root` {root} is not a readable zip file: {error}") from None
    with archive:
        yield [info.filename for info in archive.infolist() if not info.is_dir()], archive.open


def image_names(names: list[str]) -> list[str]:
    """The names with an image extension Pillow knows (case-insensitive), sorted as EDM sorts them."""
    from PIL import Image

    extensions = Image.registered_extensions()
    return sorted(name for name in names if os.path.splitext(name)[1].lower() in extensions)


def decode_image(file: BinaryIO, name: str) -> np.ndarray:
    """One image as uint8 `(H, W, C)` with its stored channels (`L` -> C = 1, `RGB` -> C = 3, ...).

    Any error Pillow (or a damaged zip member) raises, and a mode other than 8-bit
    `L`, `LA`, `RGB` or `RGBA`, becomes a `ValueError` naming `name`.
    """
    from PIL import Image

    try:
        with Image.open(file) as image:
            if image.mode not in CHANNELS:
                raise ValueError(f"Pillow mode {image.mode!r} is not one of the 8-bit modes {', '.join(CHANNELS)}")
            array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise ValueError(f"cannot read image {name}: Pillow refuses it as a decompression bomb: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read image {name}: {error}") from None
    return array if array.ndim == 3 else array[..., None]


def read_label_pairs(file: BinaryIO, where: str) -> dict[str, int] | None:
    """`{relative_path: class_index}` from a `dataset.json` stream, or `None` for `{"labels": null}`.

    Raises `ValueError` naming `where` for invalid JSON, a missing `labels` key, entries
    other than `[str, int]` pairs (EDM's one-hot float labels are not supported), or a
    file over `MAX_LABELS_BYTES`.
    """
    try:
        text = file.read(MAX_LABELS_BYTES + 1)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read {where}: {error}") from None
    if len(text) > MAX_LABELS_BYTES:
        raise ValueError(f"{where} is larger than {MAX_LABELS_BYTES >> 20} MiB")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise ValueError(f'{where} must hold {{"labels": [[path, label], ...]}} or {{"labels": null}}')
    if data["labels"] is None:
        return None
    pairs = data["labels"]
    valid = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int for p in pairs
    )
    if not valid:
        raise ValueError(f"{where}: `labels` must be a list of [path, integer class] pairs")
    return dict(pairs)


def labels_in_order(pairs: dict[str, int], names: list[str], where: str) -> np.ndarray:
    """int64 `(len(names),)`: the label of each image name; every image labelled, every label an image."""
    unlabelled = [name for name in names if name not in pairs]
    if unlabelled:
        raise ValueError(f"{where} has no label for image {unlabelled[0]} ({len(unlabelled)} unlabelled)")
    extra = sorted(set(pairs) - set(names))
    if extra:
        raise ValueError(f"{where} labels {extra[0]}, which is not an image of the dataset ({len(extra)} such)")
    return np.array([pairs[name] for name in names], dtype=np.int64)


def load_edm_zip(root=None, *, max_size: int | None = None) -> Dataset:
    """An EDM dataset (`dataset_tool.py` output, a `.zip` or a folder) as `(N, H, W, C)` in [-1, 1].

    Args:
        root: the `.zip` file or the directory.
        max_size: keep only the first `max_size` images in sorted order (EDM's
            `max_size` keeps a random subset instead).

    Returns:
        A `Dataset` named `"edm-zip"`, split `"all"` (EDM datasets have none), with
        `.labels` int64 `(N,)` from `dataset.json`, or `None` when it is absent or
        holds `null`.

    Raises:
        FileNotFoundError: `root` does not exist or holds no image.
        ValueError: `root` is not a directory or a readable zip; an image is unreadable or
            differs in shape from the first; `dataset.json` is malformed, misses an image or
            labels a file that is not an image of the dataset.
    """
    if max_size is not None:
        max_size = check_positive_int("max_size", max_size)
    root = resolve_root("edm-zip", root)
    with open_members(root) as (names, open_member):
        images = image_names(names)
        if not images:
            raise FileNotFoundError(f"no image files found in {root}")
        labels = None
        if LABELS_FILE in names:
            where = f"{root / LABELS_FILE}" if root.is_dir() else f"{LABELS_FILE} in {root}"
            with open_member(LABELS_FILE) as file:
                pairs = read_label_pairs(file, where)
            labels = None if pairs is None else labels_in_order(pairs, images, where)
        images = images[:max_size]
        pixels = None
        for i, name in enumerate(images):
            with open_member(name) as file:
                image = decode_image(file, f"{name} in {root}")
            if pixels is None:
                pixels = np.empty((len(images), *image.shape), dtype=np.uint8)
            elif image.shape != pixels.shape[1:]:
                raise ValueError(
                    f"images in {root} differ in shape (H, W, C): {images[0]} is {pixels.shape[1:]}, "
                    f"{name} is {image.shape}"
                )
            pixels[i] = image
    labels = None if labels is None else labels[:max_size]
    return Dataset("edm-zip", to_signed_unit(pixels, (0.0, 255.0), name=f"images in {root}"), labels, "all")
