"""``torch.save(module.state_dict())`` files read as data: :func:`read_torch_state_dict`."""

from __future__ import annotations

import os

import numpy as np

from gaussjax._errors import InputTypeError
from gaussjax._torch._data import OrderedDictStandIn
from gaussjax._torch._errors import UnsafePickleError, describe, read_file
from gaussjax._torch._rebuild import REBUILD_TENSOR, TENSORS, TensorRef
from gaussjax._torch._records import Converter
from gaussjax._torch._storage import STORAGE_TYPES, read_serialization
from gaussjax._torch._unpickler import Allowed, AllowList


class _StateDict(OrderedDictStandIn):
    """``collections.OrderedDict`` of a state dict: a BUILD may set ``_metadata`` (checked to be data, then dropped)."""

    metadata = None

    def __setstate__(self, state):
        if state is None:
            return
        if not (type(state) is dict and len(state) <= 1 and all(key == "_metadata" for key in state)):
            names = describe(list(state)) if type(state) is dict else type(state).__name__
            raise UnsafePickleError(f"refusing attributes {names} on collections.OrderedDict (only _metadata)")
        self.metadata = state.get("_metadata")


STATE_DICT = AllowList("A torch.save state dict's pickle", (
    Allowed("collections", "OrderedDict", _StateDict, "the state dict; its `_metadata` (the module versions "
            "`Module.state_dict()` records) is checked to be plain data, then dropped"),
    REBUILD_TENSOR, *TENSORS, *STORAGE_TYPES))


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save(module.state_dict())`` file without torch or code execution.

    Both of torch's formats are read: the legacy one (``_use_new_zipfile_serialization=False``, and every
    file written before torch 1.6, e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) and the zip
    one. Only the globals of :data:`STATE_DICT` are allowed.

    Args:
        path: the file.

    Returns:
        ``{name: array}`` in the file's order, each tensor as a read-only NumPy array of its torch dtype
        (float16 stays float16), strides and storage offsets applied. The ``_metadata`` that
        ``Module.state_dict()`` attaches is dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file names anything outside the allow-list, or holds anything but tensors
            under string names (a number, a string, a module...); an EDM snapshot pickle is named as such.
        ValueError: the file is truncated, too costly for its size, or not a torch serialization of a dict;
            the message names ``path``.
    """
    return read_file(path, "torch state dict", _state_dict)


def _state_dict(data: bytes) -> dict[str, np.ndarray]:
    """``{name: array}`` of the serialization ``data``, whose root must map ``str`` names to tensors only."""
    root = read_serialization(data, STATE_DICT)
    if type(root) not in (dict, _StateDict):
        raise InputTypeError(f"expected a dict of tensors at the top level, got {type(root).__name__}")
    if getattr(root, "metadata", None) is not None:
        Converter(len(data)).convert(root.metadata)  # refuses anything but plain data; torch's version info, unused
    out = {}
    for name, value in root.items():
        if type(name) is not str:
            raise UnsafePickleError(f"refusing state-dict key of type {type(name).__name__}: {describe(name)}")
        if not isinstance(value, TensorRef):
            raise UnsafePickleError(f"refusing state-dict entry {describe(name)}: a {type(value).__qualname__}, "
                                    "not a tensor")
        out[name] = value.resolve()
    return out
