"""Stand-ins for the plain-data globals of an EDM snapshot: ordered dicts, EDM's ``EasyDict``, sets, latin-1
bytes and numeric NumPy scalars. Each takes only the arguments and state its pickler writes.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Literal

import numpy as np

from gaussjax._torch._errors import UnsafePickleError, describe
from gaussjax._torch._unpickler import Allowed, Buildable, check_key, function


class OrderedDictStandIn(Buildable, collections.OrderedDict):
    """``collections.OrderedDict``: built empty (SETITEMS fill it, keys checked), no attributes."""

    global_name = "collections.OrderedDict"

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError(f"refusing {self.global_name} built from arguments (only SETITEMS fill it)")
        super().__init__()

    def __setstate__(self, state):
        if not (state is None or (type(state) is dict and not state)):
            raise UnsafePickleError(f"refusing attributes on {self.global_name}")


class _EasyDict(OrderedDictStandIn):
    """``dnnlib.util.EasyDict``, read as a dict."""

    global_name = "dnnlib.util.EasyDict"


@dataclasses.dataclass
class DtypeSpec(Buildable):
    """``numpy.dtype(code, align, copy)`` plus the byte order its BUILD state names."""

    code: str
    order: Literal["<", ">", "=", "|"] = "="

    def __setstate__(self, state):
        if not (type(state) is tuple and len(state) >= 2 and type(state[1]) is str
                and state[1] in ("<", ">", "=", "|")):
            raise UnsafePickleError(f"refusing numpy.dtype state {describe(state)}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


def _numpy_dtype(code, align=False, copy=False) -> DtypeSpec:
    del align, copy
    if not (type(code) is str and re.fullmatch(r"[biufc]\d{1,2}", code) and np.dtype(code).kind in "biufc"):
        raise UnsafePickleError(f"refusing numpy.dtype({describe(code)}): only numeric dtypes are allowed")
    return DtypeSpec(code)


def _numpy_scalar(dtype, data=None) -> np.generic:
    if not isinstance(dtype, DtypeSpec) or type(data) is not bytes:
        raise UnsafePickleError("refusing numpy scalar that is not a numeric dtype with bytes")
    return np.frombuffer(data, dtype.resolve(), count=1)[0]


def _codecs_encode(text, encoding="utf-8") -> bytes:
    if not (type(text) is str and type(encoding) is str and encoding == "latin1"):
        raise UnsafePickleError(f"refusing _codecs.encode of {describe(text)} with encoding {describe(encoding)}")
    return text.encode("latin1")


def _plain_set(kind: type):
    """``set`` or ``frozenset`` of a list or tuple whose elements are checked by :func:`check_key` first."""

    def build(items=()):
        if type(items) not in (list, tuple):
            raise UnsafePickleError(f"refusing {kind.__name__}({describe(items)}): only of a list or tuple")
        return kind(map(check_key, items))

    return build


_SCALAR = "a NumPy scalar of a numeric dtype (EDM stores `np.sqrt(0.5)` as `skip_scale`)"
PLAIN_DATA = (
    Allowed("collections", "OrderedDict", OrderedDictStandIn, "a dict"),
    Allowed("dnnlib.util", "EasyDict", _EasyDict, "a dict"),
    function("builtins", "set", _plain_set(set), "a set (pickle protocols below 4)"),
    function("builtins", "frozenset", _plain_set(frozenset), "a frozenset (pickle protocols below 4)"),
    function("_codecs", "encode", _codecs_encode, "bytes, with encoding `'latin1'` only (pickle protocol 2)"),
    function("numpy", "dtype", _numpy_dtype, "a numeric NumPy dtype"),
    function("numpy._core.multiarray", "scalar", _numpy_scalar, _SCALAR),
    function("numpy.core.multiarray", "scalar", _numpy_scalar, _SCALAR),
)
