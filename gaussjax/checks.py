"""Validation at the boundary: one family of checks whose errors name the argument, and the errors they raise.

The library checks its own arguments with these; `train/` checks its configuration fields and
`analysis/` its command-line options with the same functions, so a value is refused with the same
message wherever it is given. Every error is an :class:`InputError` (and a `ValueError`, `TypeError`,
`KeyError` or `FileNotFoundError`); the command-line tools print that family as one `error:` line
and let anything else, a bug, keep its traceback.

Example:
    >>> from gaussjax.checks import check_int, check_real
    >>> check_int("steps", 10, minimum=1)
    10
    >>> check_real("lr", 0.0, minimum=0, strict=True)
    Traceback (most recent call last):
    ...
    gaussjax._errors.InputValueError: `lr` must be a finite number > 0, got 0.0
"""

from gaussjax._checks import check_choice, check_images, check_int, check_real
from gaussjax._errors import InputError, InputFileNotFoundError, InputKeyError, InputTypeError, InputValueError

__all__ = [
    "InputError",
    "InputFileNotFoundError",
    "InputKeyError",
    "InputTypeError",
    "InputValueError",
    "check_choice",
    "check_images",
    "check_int",
    "check_real",
]
