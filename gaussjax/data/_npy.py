"""Reading NumPy `.npy` / `.npz` files without ever unpickling, with errors that name the file."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from gaussjax._errors import InputValueError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _check_magic(path: Path, magics: tuple[bytes, ...], kind: str, writer: str) -> None:
    with open(path, "rb") as file:
        head = file.read(len(magics[0]))
    if not any(head.startswith(magic) for magic in magics):
        found = f"0x{head.hex()}" if head else "none (the file is empty)"
        raise InputValueError(
            f"{path} is not a valid {kind} file (bad magic {found}; expected 0x{magics[0].hex()} as "
            f"written by {writer}); pickles are never loaded"
        )


def load_npy(path: Path, *, mmap_mode: Literal["r+", "r", "w+", "c"] | None = None) -> np.ndarray:
    """The array in the `.npy` file `path` (memory-mapped with `mmap_mode`), never unpickled."""
    _check_magic(path, (_NPY_MAGIC,), ".npy", "numpy.save")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except _ERRORS as error:
        raise InputValueError(f"{path} is not a valid .npy file: {error}") from None


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The `.npz` archive `path`, opened for `npz_member` (use it as a context manager)."""
    _check_magic(path, _ZIP_MAGICS, ".npz", "numpy.savez")
    try:
        return np.load(path, allow_pickle=False)
    except _ERRORS as error:
        raise InputValueError(f"{path} is not a valid .npz file: {error}") from None


def npz_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """The array `key` of an archive from `open_npz`, never unpickled."""
    try:
        array = archive[key]
    except _ERRORS as error:
        raise InputValueError(f"{path}: array {key!r} cannot be read: {error}") from None
    if not isinstance(array, np.ndarray):
        raise InputValueError(f"{path}: member {key!r} is not a .npy array")
    return array
