"""NVlabs/edm's image datasets: the zip file (or folder) of PNGs that EDM's `dataset_tool.py` writes.

Layout, as EDM's `ImageFolderDataset` reads it: image files anywhere under the root
(`dataset_tool.py` names them `00000/img00000000.png`, `00000/img00000001.png`, ...),
taken in the order of their sorted relative paths, and an optional top-level
`dataset.json` holding `{"labels": [[relative_path, class_index], ...]}` or
`{"labels": null}`.

`dataset_tool.py` writes only PNGs, and only PNG is decoded here (Pillow's other formats
are never tried: PostScript bytes named `.png` are refused, not handed to Ghostscript).
Files with no image extension Pillow knows are ignored, as EDM ignores them; a file with
another image extension (`.jpg`, `.eps`, ...), which EDM would read, is refused.

The files are not trusted: every image's header is checked (size, mode, pixels against its
bytes: `gaussjax.data._image_files`) before any pixel is allocated or decoded, and zip
members of one name, duplicate or negative labels are refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from gaussjax._checks import check_positive_int
from gaussjax._errors import InputFileNotFoundError, InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._image_files import READ_ERRORS, image_errors, open_image
from gaussjax.data._memory import empty_aligned
from gaussjax.data._pixels import to_signed_unit

LABELS_FILE = "dataset.json"
MAX_LABELS_BYTES = 256 << 20  # ImageNet's 1.28 M labels take ~60 MiB of JSON
MAX_LABEL = int(np.iinfo(np.int64).max)
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}  # Pillow's 8-bit modes, channels as stored
IMAGE_EXTENSION, IMAGE_FORMATS = ".png", ("PNG",)  # what dataset_tool.py writes
DECODE_CHUNK = 1024  # images decoded to uint8 before their conversion to float32

Opener = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]


@contextlib.contextmanager
def open_members(root: Path) -> Iterator[tuple[dict[str, int], Opener]]:
    """The files of `root` (a directory or a `.zip`) as `{relative POSIX path: bytes}`, and a function opening one.

    Raises `ValueError` if `root` is neither a directory nor a readable zip file, if the zip
    holds two members of one name, or (when opened) if a member is encrypted or compressed
    by a method `zipfile` cannot read.
    """
    if root.is_dir():
        sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
        yield sizes, lambda name: (root / name).open("rb")
        return
    if root.suffix.lower() != ".zip":
        raise InputValueError("`root` must be a directory or a .zip file (as EDM's dataset_tool.py writes), got "
                              f"{root}")
    try:
        archive = zipfile.ZipFile(root)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InputValueError(f"`root` {root} is not a readable zip file: {error}") from None
    with archive:
        yield member_sizes(archive, root), functools.partial(open_member, archive, root)


def member_sizes(archive: zipfile.ZipFile, root: Path) -> dict[str, int]:
    """`{name: uncompressed bytes}` of the archive's files; `ValueError` if two share a name (which to read?)."""
    sizes = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        if info.filename in sizes:
            raise InputValueError(f"{root} holds two members named {info.filename}: which one is meant is ambiguous")
        sizes[info.filename] = info.file_size
    return sizes


@contextlib.contextmanager
def open_member(archive: zipfile.ZipFile, root: Path, name: str) -> Iterator[IO[bytes]]:
    """Member `name` opened for reading; an encrypted member or an unknown compression method is a `ValueError`."""
    try:
        file = archive.open(name)
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise InputValueError(f"cannot read member {name} of {root}: {error}") from None
    with file:
        yield file


def image_names(names: list[str], root: Path) -> list[str]:
    """The `.png` names (case-insensitive), sorted as EDM sorts them; `ValueError` for another image extension."""
    from PIL import Image

    extensions = Image.registered_extensions()
    images, others = [], []
    for name in names:
        extension = os.path.splitext(name)[1].lower()
        if extension == IMAGE_EXTENSION:
            images.append(name)
        elif extension in extensions:
            others.append(name)
    if others:
        raise InputValueError(
            f"{sorted(others)[0]} in {root} is not a PNG: EDM's dataset_tool.py writes PNG images only, and only "
            f"PNG is read ({len(others)} such files); remove them or convert them to PNG"
        )
    return sorted(images)


def stored_shape(image, name: str) -> tuple[int, int, int]:
    """`(H, W, C)` of a lazily opened image, from its header; `ValueError` naming `name` unless an 8-bit mode."""
    if image.mode not in CHANNELS:
        modes = ", ".join(CHANNELS)
        raise InputValueError(f"image {name}: Pillow mode {image.mode!r} is not one of the 8-bit modes {modes}")
    return image.height, image.width, CHANNELS[image.mode]


def common_shape(names: list[str], sizes: dict[str, int], open_file: Opener, root: Path) -> tuple[int, int, int]:
    """The `(H, W, C)` that every image's header declares, nothing decoded; `ValueError` naming two that differ."""
    first = None
    for name in names:
        with open_file(name) as file, open_image(file, f"{name} in {root}", IMAGE_FORMATS, sizes[name]) as image:
            shape = stored_shape(image, f"{name} in {root}")
        if first is None:
            first = shape
        elif shape != first:
            raise InputValueError(
                f"images in {root} differ in shape (H, W, C): {names[0]} is {first}, {name} is {shape}"
            )
    assert first is not None  # `names` is not empty
    return first


def decode_image(file: IO[bytes], name: str, nbytes: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One PNG as uint8 `shape = (H, W, C)`, channels as stored; any failure a `ValueError` naming `name`."""
    with open_image(file, name, IMAGE_FORMATS, nbytes) as image:
        if stored_shape(image, name) != shape:
            raise InputValueError(f"image {name} changed while being read: it is not {shape} any more")
        with image_errors(name):
            array = np.asarray(image, dtype=np.uint8)
    return array.reshape(shape)


def read_label_pairs(file: IO[bytes], where: str) -> dict[str, int] | None:
    """`{relative_path: class_index}` from a `dataset.json` stream, or `None` for `{"labels": null}`.

    Raises `ValueError` naming `where` for a file over `MAX_LABELS_BYTES`, invalid or too
    deeply nested JSON, a missing `labels` key, or an entry that is not a `[path, class]`
    pair with a class in `[0, 2**63)` (EDM's one-hot float labels are not supported), or
    that labels a path already labelled.
    """
    try:
        text = file.read(MAX_LABELS_BYTES + 1)
    except READ_ERRORS as error:
        raise InputValueError(f"cannot read {where}: {error}") from None
    if len(text) > MAX_LABELS_BYTES:
        raise InputValueError(f"{where} is larger than {MAX_LABELS_BYTES >> 20} MiB")
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputValueError(f"{where} is not a labels file: its JSON nests arrays or objects too deeply") from None
    except ValueError as error:  # also json.JSONDecodeError, UnicodeDecodeError, integers of over 4300 digits
        raise InputValueError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise InputValueError(f'{where} must hold {{"labels": [[path, label], ...]}} or {{"labels": null}}')
    if data["labels"] is None:
        return None
    if not isinstance(data["labels"], list):
        raise InputValueError(f"{where}: `labels` must be a list of [path, integer class] pairs or null")
    labels = {}
    for index, entry in enumerate(data["labels"]):
        path, label = label_entry(entry, f"{where}: `labels[{index}]`")
        if path in labels:
            raise InputValueError(f"{where}: `labels[{index}]` labels {path} again (each image has one label)")
        labels[path] = label
    return labels


def label_entry(entry, field: str) -> tuple[str, int]:
    """`entry` as `(path, class)`, or a `ValueError` naming `field` unless a `[str, int]` pair, `0 <= class < 2**63`."""
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and type(entry[1]) is int):
        raise InputValueError(f"{field} must be a [path, integer class] pair, got {str(entry):.80}")
    path, label = entry
    if not 0 <= label <= MAX_LABEL:
        raise InputValueError(f"{field}: the class of {path} must be an integer in [0, 2**63), got {str(label):.40}")
    return path, label


def labels_in_order(pairs: dict[str, int], names: list[str], where: str) -> np.ndarray:
    """int64 `(len(names),)`: the label of each image name; every image labelled, every label an image."""
    unlabelled = [name for name in names if name not in pairs]
    if unlabelled:
        raise InputValueError(f"{where} has no label for image {unlabelled[0]} ({len(unlabelled)} unlabelled)")
    extra = sorted(set(pairs) - set(names))
    if extra:
        raise InputValueError(f"{where} labels {extra[0]}, which is not an image of the dataset ({len(extra)} such)")
    return np.array([pairs[name] for name in names], dtype=np.int64)


def read_labels(root: Path, names: list[str], open_file: Opener) -> np.ndarray | None:
    """The labels of the images `names` from `root`'s `dataset.json`, or `None` (absent or `{"labels": null}`)."""
    where = f"{root / LABELS_FILE}" if root.is_dir() else f"{LABELS_FILE} in {root}"
    with open_file(LABELS_FILE) as file:
        pairs = read_label_pairs(file, where)
    return None if pairs is None else labels_in_order(pairs, names, where)


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
        ValueError: `root` is not a directory or a readable zip, or holds two members of one
            name; an image is not a PNG, is unreadable (an encrypted or unreadably compressed
            member too), declares more pixels than `_image_files` allows, or differs in shape
            from the first; `dataset.json` is malformed, labels an image twice or with a
            negative class, misses an image or labels a file that is not an image of the dataset.
    """
    if max_size is not None:
        max_size = check_positive_int("max_size", max_size)
    root = resolve_root("edm-zip", root)
    with open_members(root) as (sizes, open_file):
        images = image_names(list(sizes), root)
        if not images:
            raise InputFileNotFoundError(f"no image files ({IMAGE_EXTENSION}) found in {root}")
        labels = read_labels(root, images, open_file) if LABELS_FILE in sizes else None
        images = images[:max_size]
        shape = common_shape(images, sizes, open_file, root)
        pixels = decode_images(images, sizes, open_file, root, shape)
    labels = None if labels is None else labels[:max_size]
    return Dataset("edm-zip", pixels, labels, "all")


def decode_images(names: list[str], sizes: dict[str, int], open_file: Opener, root: Path,
                  shape: tuple[int, int, int]) -> np.ndarray:
    """float32 `(len(names), *shape)` in [-1, 1] (64-byte aligned), decoded `DECODE_CHUNK` images at a time.

    Memory: the float32 output and one chunk of uint8 pixels, whatever the number of images.
    """
    out = empty_aligned((len(names), *shape), np.float32)
    chunk = np.empty((min(DECODE_CHUNK, len(names)), *shape), dtype=np.uint8)
    for start in range(0, len(names), len(chunk)):
        block = names[start : start + len(chunk)]
        for i, name in enumerate(block):
            with open_file(name) as file:
                chunk[i] = decode_image(file, f"{name} in {root}", sizes[name], shape)
        to_signed_unit(chunk[: len(block)], (0.0, 255.0), name=f"images in {root}",
                       out=out[start : start + len(block)])
    return out
