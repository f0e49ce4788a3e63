"""Locating a dataset's files on disk, with errors that say exactly what to put where."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

DATA_DIR_ENV = "GAUSSJAX_DATA"


def resolve_root(name: str, root) -> Path:
    """The directory (or file) to read dataset `name` from.

    `root=None` falls back to `$GAUSSJAX_DATA/<name>`; nothing is ever downloaded.
    """
    if root is None:
        base = os.environ.get(DATA_DIR_ENV)
        if not base:
            raise ValueError(
                f"dataset {name!r} is read from files you already have: pass root=... "
                f"(or set ${DATA_DIR_ENV} to a directory holding a {name!r} folder); nothing is downloaded"
            )
        root = Path(base) / name
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"root for dataset {name!r} does not exist: {root}")
    return root


def find_file(directories: Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first existing `directory / candidate`, trying candidates in order within each directory."""
    for directory in directories:
        for candidate in candidates:
            path = directory / candidate
            if path.is_file():
                return path
    return None


def read_bytes(path: Path) -> bytes:
    """The content of `path`, gunzipped if it is gzip-compressed (by magic number, not name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError) as error:
            raise ValueError(f"{path} is a truncated or corrupt gzip file: {error}") from None
    return raw
