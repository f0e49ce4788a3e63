"""How the torch readers report what they refuse: :class:`UnsafePickleError`, bounded descriptions, errors naming
the file.
"""

from __future__ import annotations

import itertools
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import TypeVar

from gaussjax._errors import InputValueError

SHOWN_ITEMS = 4  # items of a container that describe() shows
SHOWN_CHARS = 60  # characters of a string that describe() shows

# What a malformed file raises while it is read; each becomes a ValueError that names the file.
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, struct.error, zipfile.BadZipFile)

T = TypeVar("T")


class UnsafePickleError(InputValueError):
    """A pickle referenced something outside the allow-list (a global, persistent id or object)."""


class Global:
    """Base of the stand-ins for allowed globals: :func:`describe` shows them by their ``repr``, which is short."""

    __slots__ = ()


def describe(obj, depth: int = 2) -> str:
    """A short description of ``obj`` for error messages, at a cost bounded whatever ``obj`` is.

    Shows at most ``SHOWN_ITEMS`` items of a container, ``depth`` levels deep, ``SHOWN_CHARS`` characters of
    a string and the value of an int of at most 64 bits; anything else by its type. Never a full ``repr``,
    which a pickle's memo can make exponential (a DAG of tuples) or huge.
    """
    kind = type(obj)
    if obj is None or kind in (bool, float, complex) or isinstance(obj, Global):
        return repr(obj)
    if kind is int:
        return repr(obj) if obj.bit_length() <= 64 else f"<int of {obj.bit_length()} bits>"
    if kind in (str, bytes):
        shown = repr(obj[:SHOWN_CHARS])
        return shown if len(obj) <= SHOWN_CHARS else f"{shown}... ({len(obj)} long)"
    if isinstance(obj, type):
        return f"<class {obj.__qualname__}>"
    if kind not in (tuple, list, set, frozenset) and not isinstance(obj, dict):
        return f"<{kind.__qualname__}>"
    if depth == 0:
        return f"<{kind.__qualname__} of {len(obj)}>"
    if isinstance(obj, dict):
        items = [f"{describe(k, 0)}: {describe(v, depth - 1)}" for k, v in itertools.islice(obj.items(), SHOWN_ITEMS)]
    else:
        items = [describe(v, depth - 1) for v in itertools.islice(obj, SHOWN_ITEMS)]
    if len(obj) > SHOWN_ITEMS:
        items.append(f"... {len(obj)} items")
    brackets: dict[type, tuple[str, str]] = {tuple: ("(", ")"), list: ("[", "]")}
    left, right = brackets.get(kind, ("{", "}"))
    return left + ", ".join(items) + ("," if kind is tuple and len(obj) == 1 else "") + right


def global_name(module: str, name: str) -> str:
    """``'module.name'`` for a message, each part cut to ``SHOWN_CHARS`` characters."""
    return f"'{module[:SHOWN_CHARS]}.{name[:SHOWN_CHARS]}'"


def reason(error: Exception) -> str:
    """``error`` for a message: its type and the start of its text (which may quote the file at length)."""
    text = str(error)
    return f"{type(error).__name__}: {text[:5 * SHOWN_CHARS]}{'...' if len(text) > 5 * SHOWN_CHARS else ''}"


def read_file(path: str | os.PathLike, what: str, read: Callable[[bytes], T]) -> T:
    """``read(data)`` of the bytes of ``path``, with every error of a malformed file naming ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: ``read`` refused something; the message is prefixed with ``path``.
        ValueError: ``read`` met a malformed file: ``path is not a readable <what>: <reason>``.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        return read(data)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"path {os.fspath(path)!r}: {error}") from error
    except _READ_ERRORS as error:
        raise InputValueError(f"path {os.fspath(path)!r} is not a readable {what}: {reason(error)}") from error
