"""Constructor arguments of a network read from a file, checked before anything is built.

The importers (`load_safetensors`, `load_edm_pickle`) rebuild a network from arguments
stored in the file. Constructing a `SongUNet` or `DhariwalUNet` plans every layer, and
tracing it (`jax.eval_shape`) visits every layer, so arguments from a hostile file could
make a tiny file cost unbounded time or memory before any tensor is compared. Two checks
come first:

- `stored_arguments`: only the module's own constructor arguments (never Flax's `parent`
  or `name`), each a number, string, None or a short flat list of those, integers in
  `[-MAX_INT, MAX_INT]`;
- `check_parameter_budget`: the network must not need more parameters than the file
  stores tensor elements, by the closed-form lower bound `minimum_parameter_count`.
"""

from __future__ import annotations

import dataclasses
import numbers
import reprlib

from gaussjax._errors import InputValueError

MAX_INT = 2**31 - 1  # largest integer argument a file may give
MAX_ENTRIES = 64  # longest list argument (`fourier_freqs` excepted: it has one entry per embedding frequency pair)
_UNLIMITED = ("fourier_freqs",)
_NOT_ARGUMENTS = ("parent", "name", "net")  # Flax bookkeeping fields, and the sub-module built on its own
# The arguments `minimum_parameter_count` reads (`channel_mult_noise` is SongUNet's only; DhariwalUNet's is 1).
SIZE_ARGUMENTS = ("model_channels", "channel_mult", "channel_mult_emb", "channel_mult_noise", "num_blocks",
                  "label_dim", "augment_dim", "in_channels", "out_channels")


def constructor_arguments(cls) -> tuple[str, ...]:
    """The dataclass fields of the Flax module `cls` a file may set (all but `parent`, `name`, `net`)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_ARGUMENTS)


def stored_arguments(cls, kwargs: dict, where: str) -> dict:
    """`kwargs` read from a file, checked to be plain constructor arguments of `cls`; lists become tuples.

    Args:
        cls: the Flax module the arguments are for.
        kwargs: name -> value as read from the file.
        where: the file and the place in it, e.g. `'net.safetensors: net.kwargs'`; messages
            name `where.argument`.

    Raises:
        ValueError: a name that is not in `constructor_arguments(cls)`, a value that is not
            None, a bool, a string, a real number or a flat list of those (at most
            `MAX_ENTRIES` long), or an integer beyond `MAX_INT` in magnitude.
    """
    allowed = constructor_arguments(cls)
    unknown = [reprlib.repr(key) for key in kwargs if key not in allowed]
    if unknown:
        raise InputValueError(f"{where}: {cls.__name__} has no argument(s) {', '.join(unknown)} that a file may set "
                              f"(it takes {', '.join(allowed)})")
    checked = {}
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ENTRIES and key not in _UNLIMITED:
                raise InputValueError(f"{where}.{key} has {len(value)} entries; at most {MAX_ENTRIES} are allowed")
            checked[key] = tuple(_scalar(f"{where}.{key}[{i}]", v) for i, v in enumerate(value))
        else:
            checked[key] = _scalar(f"{where}.{key}", value)
    return checked


def _scalar(name: str, value):
    """`value` if it is None, a bool, a string or a real number (integers as `int`, within `MAX_INT`)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        if abs(int(value)) > MAX_INT:  # (not printed: str() of a huge integer is slow, or refused by Python)
            raise InputValueError(f"{name} must be an integer of magnitude at most {MAX_INT}, got one of "
                                  f"{int(value).bit_length()} bits")
        return int(value)
    if isinstance(value, numbers.Real):
        return value
    raise InputValueError(f"{name} must be None, a bool, a string or a number, got {reprlib.repr(value)}")


def minimum_parameter_count(cls, kwargs: dict) -> int | None:
    """A lower bound of the parameter count of `cls(**kwargs)`, a `SongUNet` or `DhariwalUNet`, in `O(levels)`.

    With `C = model_channels`, `N = C * channel_mult_noise` (SongUNet; `N = C` for
    DhariwalUNet), `E = C * channel_mult_emb`, `c_l = C * channel_mult[l]` and
    `B = num_blocks`, both networks hold at least

        E (N + E) + C (label_dim + augment_dim) + 9 C (in_channels + out_channels)
            + (2 B + 1) sum_l c_l (9 c_l + E)

    parameters: the two mapping layers `N -> E -> E` from the noise embedding, the label and
    augmentation layers (at least `C` wide), the first and last 3x3 convolutions (at least
    `C` channels wide), and, at each level, the `B` encoder and at least `B + 1` decoder
    blocks, each with a 3x3 convolution `c_l -> c_l` and an embedding projection of at
    least `E c_l` weights. Biases and normalisations are left out. (The bound also bounds
    the arrays NumPy computes while the network is traced, e.g. the `N / 2` frequencies of
    the positional embedding.)

    Returns:
        The bound (an exact Python integer), or None when an argument it uses is not a
        non-negative integer (or, for `channel_mult`, a tuple of them): the constructor refuses those.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    values = {name: kwargs.get(name, defaults.get(name, 1)) for name in SIZE_ARGUMENTS}
    mults = values.pop("channel_mult")
    if not (all(_is_count(v) for v in values.values()) and isinstance(mults, tuple) and all(map(_is_count, mults))):
        return None
    c = values["model_channels"]
    n, e = c * values["channel_mult_noise"], c * values["channel_mult_emb"]
    blocks = (2 * values["num_blocks"] + 1) * sum(c * m * (9 * c * m + e) for m in mults)
    return (e * (n + e) + c * (values["label_dim"] + values["augment_dim"])
            + 9 * c * (values["in_channels"] + values["out_channels"]) + blocks)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_parameter_budget(cls, kwargs: dict, stored: int, where: str) -> None:
    """Raise a ValueError naming `where` and the size arguments if `cls(**kwargs)` needs more than `stored` parameters.

    `stored` is the number of tensor elements the file holds; `kwargs` as returned by `stored_arguments`.
    """
    needed = minimum_parameter_count(cls, kwargs)
    if needed is not None and needed > stored:
        sizes = ", ".join(f"{name}={kwargs[name]!r}" for name in SIZE_ARGUMENTS if name in kwargs)
        raise InputValueError(f"{where}: {cls.__name__}({sizes}) has at least {needed:.3g} parameters, but the file "
                              f"holds only {stored} tensor elements")
