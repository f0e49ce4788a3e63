"""The errors gaussjax raises for its callers' input: one family under :class:`InputError`.

Each class is also the built-in exception of its kind (`InputValueError` is a `ValueError`, ...), so
`except ValueError` keeps working; `except gaussjax.InputError` catches exactly what a caller's
arguments, options or files cause. Command-line tools catch that family alone and print its message
as one line: any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """Base of the errors caused by a caller's input; the message names the argument, option or file."""


class InputValueError(InputError, ValueError):
    """An argument, option or file holds a value outside its contract (a range, a shape, a format)."""


class InputTypeError(InputError, TypeError):
    """An argument or a file's field has the wrong type."""


class InputKeyError(InputError, KeyError):
    """A name the input asks for is not there (e.g. an array missing from an `.npz`)."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file or directory the caller named does not exist; the message says where it was looked for."""
