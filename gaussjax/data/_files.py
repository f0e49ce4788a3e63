"""Locating a dataset's files on disk (with errors that say exactly what to put where), and reading them in
bounded chunks."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gaussjax._errors import InputFileNotFoundError, InputValueError

DATA_DIR_ENV = "GAUSSJAX_DATA"
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032  # deflate never inflates more than 1032:1 (zlib's technical details)
_CHUNK = 1 << 20


def resolve_root(name: str, root) -> Path:
    """The directory (or file) to read dataset `name` from.

    `root=None` falls back to `$GAUSSJAX_DATA/<name>`; nothing is ever downloaded.
    """
    if root is None:
        base = os.environ.get(DATA_DIR_ENV)
        if not base:
            raise InputValueError(
                f"dataset {name!r} is read from files you already have: pass root=... "
                f"(or set ${DATA_DIR_ENV} to a directory holding a {name!r} folder); nothing is downloaded"
            )
        root = Path(base) / name
    root = Path(root).expanduser()
    if not root.exists():
        raise InputFileNotFoundError(f"root for dataset {name!r} does not exist: {root}")
    return root


def find_file(directories: Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first existing `directory / candidate`, trying candidates in order within each directory."""
    for directory in directories:
        for candidate in candidates:
            path = directory / candidate
            if path.is_file():
                return path
    return None


@contextlib.contextmanager
def open_stream(path: Path) -> Iterator[tuple[io.BufferedIOBase, int]]:
    """`path` opened for reading, gunzipped on the fly if gzip-compressed (by magic number, not name).

    Also yields the most bytes the stream can give: the file's size, or for gzip its size
    times deflate's largest compression ratio, so that a header declaring more can be
    refused before anything is allocated or inflated. Read it with `read_exactly` and
    `has_more`, never with a bare `.read()` of the whole stream (a gzip bomb inflates
    without bound).
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
        file.seek(0)
        if not compressed:
            yield file, size
            return
        with gzip.GzipFile(fileobj=file) as stream:
            yield stream, size * _MAX_DEFLATE_RATIO


@contextlib.contextmanager
def _gzip_errors(stream: io.BufferedIOBase, path: Path):
    try:
        yield
    except (EOFError, OSError, zlib.error) as error:
        if not isinstance(stream, gzip.GzipFile):
            raise
        raise InputValueError(f"{path} is a truncated or corrupt gzip file: {error}") from None


def read_exactly(stream: io.BufferedIOBase, nbytes: int, path: Path, what: str) -> np.ndarray:
    """Exactly `nbytes` bytes of `stream` as uint8, read in chunks of at most 1 MiB.

    Raises `ValueError` naming `path` and `what` was being read if the stream ends early.
    """
    out = np.empty(nbytes, dtype=np.uint8)
    view, filled = out.data, 0
    with _gzip_errors(stream, path):
        while filled < nbytes:
            count = stream.readinto(view[filled : filled + _CHUNK])
            if not count:
                raise InputValueError(f"{path} is truncated: {what} needs {nbytes} bytes, it has only {filled}")
            filled += count
    return out


def has_more(stream: io.BufferedIOBase, path: Path) -> bool:
    """Whether `stream` holds any byte beyond what was read (one byte is inflated at most, not the rest)."""
    with _gzip_errors(stream, path):
        return bool(stream.read(1))
