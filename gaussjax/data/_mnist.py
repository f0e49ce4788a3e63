"""MNIST from the files a user already has: the four IDX files (plain or .gz) or `mnist.npz`."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from gaussjax._checks import check_choice, check_positive_int
from gaussjax._errors import InputFileNotFoundError, InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import find_file, has_more, open_stream, read_exactly, resolve_root
from gaussjax.data._npy import npz_member, open_npz
from gaussjax.data._pixels import to_signed_unit

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a NumPy array of its declared shape and type.

    The header (magic number, dimensions) is read first; then exactly the bytes it
    declares, in bounded chunks, so a gzip bomb is refused after inflating at most the
    declared size plus one byte. Raises `ValueError` naming `path` on a wrong magic
    number, a truncated file, or trailing data after the declared payload.
    """
    with open_stream(path) as (stream, most):
        magic = stream.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
            found = f"0x{magic.hex()}" if magic else "none (the file is empty)"
            raise InputValueError(
                f"{path} is not an IDX file: bad magic number {found} (expected 0x0000, "
                f"a type code in {', '.join(f'{code:02x}' for code in _IDX_DTYPES)}, then the number of dimensions)"
            )
        dtype, ndim = np.dtype(_IDX_DTYPES[magic[2]]), magic[3]
        header = read_exactly(stream, 4 * ndim, path, f"its header of {ndim} dimensions")
        shape = struct.unpack(f">{ndim}I", header.data)
        nbytes = math.prod(shape) * dtype.itemsize
        if 4 + 4 * ndim + nbytes > most:
            raise InputValueError(
                f"{path} is truncated: header shape {shape} needs {4 + 4 * ndim + nbytes} bytes, "
                f"more than its {path.stat().st_size} bytes can hold"
            )
        data = read_exactly(stream, nbytes, path, f"the data of header shape {shape}")
        if has_more(stream, path):
            raise InputValueError(f"{path} has trailing data: more than the {nbytes} bytes "
                                  f"its header shape {shape} declares")
    return data.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _idx_candidates(split: str, kind: str) -> list[str]:
    stem = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}[kind]
    names = [f"{_PREFIX[split]}-{stem}", f"{_PREFIX[split]}-{stem.replace('-idx', '.idx')}"]
    return [name + suffix for name in names for suffix in ("", ".gz")]


def _read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    keys = (f"x_{split}", f"y_{split}")
    with open_npz(path) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise InputValueError(f"{path} lacks arrays {missing}; a Keras-style mnist.npz holds "
                                  f"{sorted(archive.files)}")
        return npz_member(archive, keys[0], path), npz_member(archive, keys[1], path)


def _missing_message(root: Path, directories: list[Path], split: str) -> str:
    expected = ", ".join(f"{_idx_candidates(split, k)[0]}[.gz]" for k in ("images", "labels"))
    searched = ", ".join(str(d) for d in directories)
    return (
        f"MNIST {split} files not found in {searched}: put {expected} there, "
        f"or a Keras-style mnist.npz (arrays x_train, y_train, x_test, y_test) at {root / 'mnist.npz'}"
    )


def load_mnist(root=None, split: str = "train", *, pad_to: int | None = None) -> Dataset:
    """MNIST as `(N, 28, 28, 1)` in [-1, 1] with labels 0-9 (60,000 train / 10,000 test).

    Args:
        root: a directory holding the IDX files (`train-images-idx3-ubyte[.gz]`, ...,
            also looked for under `root/MNIST/raw`) or `mnist.npz`; or the path of an
            `.npz` file itself.
        split: `"train"` or `"test"`.
        pad_to: zero-pad each (square) image symmetrically to `pad_to x pad_to` pixels
            (pad value: black, i.e. -1), e.g. `32` for the paper's mini-EDM setting.
    """
    check_choice("split", split, tuple(_PREFIX))
    if pad_to is not None:
        pad_to = check_positive_int("pad_to", pad_to)
    root = resolve_root("mnist", root)
    if root.is_file():
        images, labels = _read_npz(root, split)
    else:
        directories = [root, root / "MNIST" / "raw"]
        image_file = find_file(directories, _idx_candidates(split, "images"))
        label_file = find_file(directories, _idx_candidates(split, "labels"))
        if image_file and label_file:
            images, labels = read_idx(image_file), read_idx(label_file)
        elif (npz := find_file(directories, ["mnist.npz"])) is not None:
            images, labels = _read_npz(npz, split)
        else:
            raise InputFileNotFoundError(_missing_message(root, directories, split))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputValueError(f"MNIST images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise InputValueError(f"MNIST has {images.shape[0]} images but labels of shape {labels.shape}")
    if pad_to is not None:
        height, width = images.shape[1:]
        if height != width or height > pad_to:
            raise InputValueError(
                f"`pad_to` = {pad_to} needs square images no larger than {pad_to} x {pad_to}, got {height} x {width}"
            )
        extra = pad_to - height
        images = np.pad(images, ((0, 0), (extra // 2, extra - extra // 2), (extra // 2, extra - extra // 2)))
    return Dataset("mnist", to_signed_unit(images[..., None], (0.0, 255.0), name="MNIST images"), labels, split)
