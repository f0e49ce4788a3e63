"""Restricted readers of torch files: EDM snapshot pickles and ``torch.save`` state dicts, no code run.

EDM's ``training_loop.py`` pickles ``dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)`` with
the standard library. Loading that with ``pickle.load`` imports torch and *executes* the Python source that
``torch_utils.persistence`` embeds in every network (``meta['module_src']``). This module reads the same
bytes without torch and without running anything from the file:

- An explicit allow-list maps each ``(module, name)`` global the pickle may reference to a local stand-in.
  Every other global, every persistent id that is not a torch storage, and every ``BUILD`` aimed at anything
  but a module, a numpy dtype or an ``OrderedDict`` raises :class:`UnsafePickleError` before anything of the
  file runs.
- Persistent EDM objects (``_reconstruct_persistent_obj(meta)``) are read from ``meta['class_name']`` and
  ``meta['state']``; ``meta['type']`` must be ``'class'``. ``meta['module_src']`` is never run: its SHA-256 is
  looked up in :data:`EDM_MODULE_SOURCES`, and a read with classes from any other source warns once (the
  classes are rebuilt from their names, so a fork's changed network would otherwise pass for EDM's).
- Tensors become NumPy arrays viewing the storage bytes (read-only, no copy for the legacy format, one copy
  for the zip format); float16 stays float16. Storage views and strided views are bounds-checked first.
- The finished object tree may hold only plain data (None, bool, int, float, complex, str, bytes, NumPy
  arrays/scalars/dtypes, tuples, lists, sets, dicts and :class:`ModuleRecord`); anything else is refused.
  Modules form a tree: a module (or a container holding one) reached twice is refused.

A read costs time and memory linear in the file's size, whatever the file holds. Its pickles run on pickle's
pure-Python unpickler, each step checked before anything is hashed, called, inflated or allocated:

- dict keys and set elements must be str, bytes, None, bool, float or 64-bit int (a tuple key, which the memo
  can make a DAG of ``2**depth`` leaves, is refused before it is hashed);
- calls take at most 8 arguments and are charged the lengths of their arguments, at most
  ``_WORK_PER_BYTE`` per byte of the serialization in all (so a memo-shared argument cannot be processed over
  and over); the tree of data they build, counted as if unshared, may hold at most ``_NODES_PER_BYTE`` nodes
  per byte of the file and nest at most ``_MAX_DEPTH`` levels, so any walk of the result is linear too;
- tensor sizes and strides have at most 64 dimensions of ints below ``2**63``;
- zip members must be stored or deflated, unencrypted, of exactly their storage's size (``data.pkl`` of any
  size), and may inflate to ``_MAX_INFLATION`` times the archive in all; this is checked before inflating
  and each member is read with a bounded read;
- error messages describe objects with :func:`describe` (bounded), never a full ``repr``.

Allowed globals of the outer pickle:

- ``torch_utils.persistence._reconstruct_persistent_obj``: EDM's persistent classes (networks, losses,
  ``AugmentPipe``).
- ``torch._utils._rebuild_tensor_v2``, ``_rebuild_tensor_v3``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``: tensors and parameters (``requires_grad``, hooks and state dropped).
- ``torch.storage._load_from_bytes``: a storage as a nested torch serialization, legacy or zip format.
- ``torch.Size`` (read as a tuple) and the torch dtypes ``torch.float16/bfloat16/float32/float64/uint8/int8/
  int16/int32/int64/bool/uint16/uint32/uint64`` (arguments of ``_rebuild_tensor_v3``).
- Plain torch modules, read as :class:`ModuleRecord` named by their qualified global:
  ``torch.nn.modules.container.{ModuleDict, ModuleList, Sequential, ParameterDict, ParameterList}``,
  ``torch.nn.modules.linear.{Linear, Identity}``, ``torch.nn.modules.conv.Conv2d``,
  ``torch.nn.modules.normalization.GroupNorm``, ``torch.nn.modules.activation.SiLU``,
  ``torch.nn.modules.dropout.Dropout``.
- ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (read as dicts), ``builtins.set``/``frozenset``
  (protocols below 4), ``_codecs.encode`` with ``'latin1'`` (bytes in protocol 2).
- ``numpy.dtype`` and ``numpy.{_core,core}.multiarray.scalar`` for numeric dtypes only (EDM stores
  ``np.sqrt(0.5)`` as ``skip_scale``).

Globals of the nested storage pickles: ``torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage``
and ``torch.UntypedStorage``, named only inside persistent ids ``('storage', type, key, location, numel[,
view_metadata])``.

:func:`read_torch_state_dict` reads a file that ``torch.save(module.state_dict())`` wrote, in the legacy
(``_use_new_zipfile_serialization=False``) or the zip format, with the same storage machinery. Its pickle may
name only:

- the storage classes above, inside ``('storage', ...)`` persistent ids;
- ``torch._utils._rebuild_tensor`` (torch < 0.4), ``_rebuild_tensor_v2``, ``_rebuild_tensor_v3``,
  ``_rebuild_parameter``, ``_rebuild_parameter_with_state``, ``torch.Size`` and the torch dtypes above;
- ``collections.OrderedDict``, whose ``BUILD`` state may only be ``{'_metadata': ...}`` (the per-module
  versions ``Module.state_dict()`` records; checked to be plain data, then dropped).

The top level must be a dict of ``str`` names to tensors; any other value is refused.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import itertools
import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from typing import Any, NamedTuple

import numpy as np

__all__ = ["EDM_MODULE_SOURCES", "ModuleRecord", "UnsafePickleError", "describe", "read_edm_pickle",
           "read_torch_state_dict"]

# SHA-256 of the UTF-8 text of each NVlabs/edm module whose classes torch_utils.persistence pickles with their
# source (meta['module_src']), at every commit of github.com/NVlabs/edm's main branch that changed the module.
EDM_MODULE_SOURCES = {
    "2294828d5f59f5fd008f7141e6b8af2095918f2ce019f280a933e4779b5c3cef": "training/networks.py at 0a2ff34",
    "5db27dcd96674b95c72d5e6491b879cdc35e24039ada3411b4b46a28ed1fe284": "training/networks.py at b2a26c9",
    "b26f0937bc72b18cc5f9869c86035ca9b872138cdfae7994237e9733951e4415": "training/loss.py at 0a2ff34",
    "fd411af7c2d74489ce11a245293047369fc044d00a9aeed1c0bd46b322c8a8b5": "training/augment.py at 0a2ff34",
}

_WORK_PER_BYTE = 2  # call-argument lengths charged per byte of a serialization
_NODES_PER_BYTE = 4  # data-tree nodes (counted as if unshared) per byte of the file
_MAX_DEPTH = 100  # nesting of the data tree
_MAX_ARGS = 8  # arguments of one call (_rebuild_tensor_v3 takes 8)
_MAX_DIMS = 64  # dimensions of a tensor (NumPy's limit)
_MAX_NAME = 256  # characters of an EDM class name
_MAX_INFLATION = 4  # bytes zip members may inflate to, per byte of their archive, in all
_SHOWN_ITEMS = 4  # items of a container that describe() shows
_SHOWN_CHARS = 60  # characters of a string that describe() shows
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# What a malformed file raises while it is read; each becomes a ValueError that names the file.
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, struct.error, zipfile.BadZipFile)


class UnsafePickleError(ValueError):
    """A pickle referenced something outside the allow-list (a global, persistent id or object)."""


@dataclasses.dataclass(frozen=True)
class ModuleRecord:
    """A torch module (or EDM persistent object) read as data.

    Attributes:
        class_name: ``meta['class_name']`` for EDM persistent classes (e.g. ``'EDMPrecond'``); the qualified
            global for plain torch modules (e.g. ``'torch.nn.modules.container.ModuleDict'``).
        init_args: positional constructor arguments EDM recorded (``()`` for plain torch modules).
        init_kwargs: keyword constructor arguments EDM recorded (``{}`` for plain torch modules).
        parameters: name -> array or None, in registration order.
        buffers: name -> array or None, in registration order.
        modules: name -> child record or None, in registration order.
        non_persistent_buffers: buffer names left out of :meth:`state_dict`.
        attributes: the remaining public instance attributes (e.g. ``sigma_data``, ``training``).
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    parameters: dict
    buffers: dict
    modules: dict
    non_persistent_buffers: frozenset = frozenset()
    attributes: dict = dataclasses.field(default_factory=dict)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays under torch's ``Module.state_dict()`` names: parameters, persistent buffers, then children."""
        out = {name: value for name, value in self.parameters.items() if value is not None}
        out.update((name, value) for name, value in self.buffers.items()
                   if value is not None and name not in self.non_persistent_buffers)
        for child_name, child in self.modules.items():
            if child is not None:
                out.update((f"{child_name}.{name}", value) for name, value in child.state_dict().items())
        return out


def read_edm_pickle(path: str | os.PathLike) -> dict:
    """Read an EDM snapshot pickle (``network-snapshot-*.pkl``, ``edm-*.pkl``) without torch or code execution.

    Args:
        path: the pickle file.

    Returns:
        The snapshot's top-level dict, e.g. ``{'ema': ModuleRecord, 'loss_fn': ModuleRecord, 'augment_pipe':
        ModuleRecord or None, 'dataset_kwargs': dict}``, with every tensor as a read-only NumPy array. Modules
        form a tree, and the whole result, counted as if unshared, holds at most 4 nodes per byte of the file.

    Warns:
        UserWarning: once, naming the classes, when a persistent class's pickled source is none of
            :data:`EDM_MODULE_SOURCES` (the class is rebuilt from its name all the same).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file references anything outside the allow-list (see the module docstring).
        ValueError: the file is truncated, too costly for its size, or not a pickle of this kind (a
            ``torch.save`` file, say); the message names ``path``.
    """
    with open(path, "rb") as file:
        data = file.read()
    converter = _Converter(len(data))
    try:
        snapshot = _snapshot(converter.convert(_snapshot_root(data)))
    except UnsafePickleError as error:
        raise UnsafePickleError(f"path {os.fspath(path)!r}: {error}") from error
    except _READ_ERRORS as error:
        message = f"path {os.fspath(path)!r} is not a readable EDM snapshot pickle: {_reason(error)}"
        raise ValueError(message) from error
    if converter.unknown_sources:
        names = list(converter.unknown_sources)
        shown = ", ".join(map(describe, names[:_SHOWN_ITEMS])) + (f" and {len(names) - _SHOWN_ITEMS} more"
                                                                  if len(names) > _SHOWN_ITEMS else "")
        warnings.warn(f"path {os.fspath(path)!r}: the class(es) {shown} were rebuilt from their names, but their "
                      "pickled source is no NVlabs/edm release's (a fork's changed network?)", UserWarning,
                      stacklevel=2)
    return snapshot


def _reason(error: Exception) -> str:
    """``error`` for a message: its type and the start of its text (which may quote the file at length)."""
    text = str(error)
    return f"{type(error).__name__}: {text[:5 * _SHOWN_CHARS]}{'...' if len(text) > 5 * _SHOWN_CHARS else ''}"


def _snapshot_root(data: bytes):
    """The unpickled snapshot; a ``torch.save`` file (either format) is named as such."""
    not_a_snapshot = ("a torch.save file ({} format), not an EDM snapshot pickle: read state dicts with "
                      "read_torch_state_dict")
    if data[:4] == _ZIP_MAGIC:
        raise ValueError(not_a_snapshot.format("zip"))
    root = _OuterUnpickler(io.BytesIO(data), len(data)).load()
    if type(root) is int and root == _LEGACY_MAGIC:
        raise ValueError(not_a_snapshot.format("legacy"))
    return root


def _snapshot(tree) -> dict:
    if not isinstance(tree, dict):
        raise TypeError(f"expected a snapshot dict at the top level, got {type(tree).__name__}")
    return tree


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins. BUILD reaches only _BUILDABLE ones, whose __setstate__ takes nothing but what torch writes.


class _StandIn:
    """A named, callable stand-in for an allowed global function."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<global {self.name}>"


class _OrderedDict(collections.OrderedDict):
    """``collections.OrderedDict``: built empty (SETITEMS fill it, keys checked), no attributes."""

    global_name = "collections.OrderedDict"

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError(f"refusing {self.global_name} built from arguments (only SETITEMS fill it)")
        super().__init__()

    def __setstate__(self, state):
        if not (state is None or (type(state) is dict and not state)):
            raise UnsafePickleError(f"refusing attributes on {self.global_name}")


class _EasyDict(_OrderedDict):
    """``dnnlib.util.EasyDict``, read as a dict."""

    global_name = "dnnlib.util.EasyDict"


class _PlainModule:
    """A plain torch module; subclasses carry the qualified global in ``qualified_name``; BUILD sets ``state``."""

    qualified_name = ""
    state = None

    def __setstate__(self, state):
        if type(state) is not dict:
            raise UnsafePickleError(f"refusing non-dict state of {self.qualified_name!r}")
        self.state = state


@dataclasses.dataclass(eq=False)
class _Persistent:
    """An EDM persistent object before conversion: its class name, instance state and module source."""

    class_name: str
    state: dict
    module_src: Any


@dataclasses.dataclass
class _DtypeSpec:
    """``numpy.dtype(code, align, copy)`` plus the byte order its BUILD state names."""

    code: str
    order: str = "="

    def __setstate__(self, state):
        if not (type(state) is tuple and len(state) >= 2 and type(state[1]) is str
                and state[1] in ("<", ">", "=", "|")):
            raise UnsafePickleError(f"refusing numpy.dtype state {describe(state)}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


_BUILDABLE = (_PlainModule, _DtypeSpec, _OrderedDict)  # what BUILD may set state on (with subclasses)


def _numpy_dtype(code, align=False, copy=False):
    del align, copy
    if not (type(code) is str and re.fullmatch(r"[biufc]\d{1,2}", code) and np.dtype(code).kind in "biufc"):
        raise UnsafePickleError(f"refusing numpy.dtype({describe(code)}): only numeric dtypes are allowed")
    return _DtypeSpec(code)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _DtypeSpec) or type(data) is not bytes:
        raise UnsafePickleError("refusing numpy scalar that is not a numeric dtype with bytes")
    return np.frombuffer(data, dtype.resolve(), count=1)[0]


def _codecs_encode(text, encoding="utf-8"):
    if not (type(text) is str and type(encoding) is str and encoding == "latin1"):
        raise UnsafePickleError(f"refusing _codecs.encode of {describe(text)} with encoding {describe(encoding)}")
    return text.encode("latin1")


def _plain_set(kind: type):
    """``set`` or ``frozenset`` of a list or tuple whose elements are checked by :func:`_key` first."""

    def build(items=()):
        if type(items) not in (list, tuple):
            raise UnsafePickleError(f"refusing {kind.__name__}({describe(items)}): only of a list or tuple")
        return kind(map(_key, items))

    return build


def _reconstruct_persistent(meta):
    if not isinstance(meta, dict):
        raise UnsafePickleError(f"refusing persistent object whose meta is a {type(meta).__name__}")
    kind, class_name, state = meta.get("type"), meta.get("class_name"), meta.get("state")
    if not (type(kind) is str and kind == "class"):
        raise UnsafePickleError(f"refusing persistent object of type {describe(kind)} (only 'class')")
    if not (type(class_name) is str and len(class_name) <= _MAX_NAME and class_name.isidentifier()):
        raise UnsafePickleError(f"refusing persistent class name {describe(class_name)}")
    if type(state) is not dict:
        raise UnsafePickleError(f"refusing persistent object {class_name!r} whose state is not a dict")
    return _Persistent(class_name, state, meta.get("module_src"))  # module_src is only hashed, never run


def describe(obj, depth: int = 2) -> str:
    """A short description of ``obj`` for error messages, at a cost bounded whatever ``obj`` is.

    Shows at most ``_SHOWN_ITEMS`` items of a container, ``depth`` levels deep, ``_SHOWN_CHARS`` characters of
    a string and the value of an int of at most 64 bits; anything else by its type. Never a full ``repr``,
    which a pickle's memo can make exponential (a DAG of tuples) or huge.
    """
    kind = type(obj)
    if obj is None or kind in (bool, float, complex, _StandIn, _StorageType, _TorchDtype):
        return repr(obj)
    if kind is int:
        return repr(obj) if obj.bit_length() <= 64 else f"<int of {obj.bit_length()} bits>"
    if kind in (str, bytes):
        shown = repr(obj[:_SHOWN_CHARS])
        return shown if len(obj) <= _SHOWN_CHARS else f"{shown}... ({len(obj)} long)"
    if isinstance(obj, type):
        return f"<class {obj.__qualname__}>"
    if kind not in (tuple, list, set, frozenset) and not isinstance(obj, dict):
        return f"<{kind.__qualname__}>"
    if depth == 0:
        return f"<{kind.__qualname__} of {len(obj)}>"
    if isinstance(obj, dict):
        items = [f"{describe(k, 0)}: {describe(v, depth - 1)}" for k, v in itertools.islice(obj.items(), _SHOWN_ITEMS)]
    else:
        items = [describe(v, depth - 1) for v in itertools.islice(obj, _SHOWN_ITEMS)]
    if len(obj) > _SHOWN_ITEMS:
        items.append(f"... {len(obj)} items")
    left, right = {tuple: "()", list: "[]"}.get(kind, "{}")
    return left + ", ".join(items) + ("," if kind is tuple and len(obj) == 1 else "") + right


# ---------------------------------------------------------------------------------------------------------------
# The restricted unpickler every pickle of a file goes through.

_KEY_TYPES = (str, bytes, int, float, bool, type(None))
_SIZED = (str, bytes, bytearray, tuple, list, dict, set, frozenset)


def _key(key):
    """``key``, if it may be hashed in time linear in its own bytes (a dict key or set element); else refused."""
    if type(key) not in _KEY_TYPES or (type(key) is int and key.bit_length() > 64):
        raise UnsafePickleError(f"refusing dict key or set element {describe(key)}: only str, bytes, None, bool, "
                                "float and 64-bit int")
    return key


def _fill(target, items: list):
    """``target`` (a dict) with ``items`` ``[key, value, key, value, ...]`` set, each key checked before hashing."""
    if not isinstance(target, dict):
        raise UnsafePickleError(f"refusing to set items on {describe(target)}: only on dicts")
    if len(items) % 2:
        raise pickle.UnpicklingError("odd number of items to set in a dict")
    for index in range(0, len(items), 2):
        target[_key(items[index])] = items[index + 1]
    return target


class _RestrictedUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler, every step that hashes, calls or sets state checked first.

    Subclasses give the allow-lists (``find_class``, ``persistent_load``). ``size`` is the length in bytes of
    the serialization the pickle belongs to; it sets the budget of work its calls may take.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, stream: io.BytesIO, size: int):
        super().__init__(stream)
        self.work_left = _WORK_PER_BYTE * size

    def load(self):
        """pickle's load loop, reading the in-memory stream directly (frames are only a buffering hint)."""
        self.metastack, self.stack, self.proto = [], [], 0
        self.append = self.stack.append
        self.read, self.readline = self._file_read, self._file_readline
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                opcode = read(1)
                if not opcode:
                    raise EOFError
                dispatch[opcode[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def load_frame(self):
        self.read(8)  # the frame's size: its bytes follow in the stream all the same

    dispatch[pickle.FRAME[0]] = load_frame

    def load_bytearray8(self):
        size = int.from_bytes(self.read(8), "little")
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        _fill(self.stack[-1], [key, value])

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        _fill(self.stack[-1], items)

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self):
        self.append(_fill({}, self.pop_mark()))

    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise UnsafePickleError(f"refusing to add items to {describe(target)}: only to sets")
        target.update(map(_key, items))

    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self):
        self.append(frozenset(map(_key, self.pop_mark())))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, _BUILDABLE):
            raise UnsafePickleError(f"refusing to set state on {describe(target)}")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        self.append(_new(self.stack.pop(), args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.append(_new(self.stack.pop(), args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):  # OBJ and INST
        self.append(self._call(klass, tuple(args)))

    def _call(self, function, args):
        """``function(*args)``, charged the number and the lengths of its arguments."""
        if type(args) is not tuple or len(args) > _MAX_ARGS:
            raise UnsafePickleError(f"refusing call arguments {describe(args)}: a tuple of at most {_MAX_ARGS}")
        self.work_left -= len(args) + sum(len(arg) for arg in args if type(arg) in _SIZED)
        if self.work_left < 0:
            raise ValueError(f"the pickle's calls take more than {_WORK_PER_BYTE} units of work per byte "
                             "(arguments shared through its memo and passed over and over)")
        return function(*args)


def _new(cls, args, kwargs):
    """``cls.__new__(cls)`` for NEWOBJ: torch writes no arguments for the classes allowed here."""
    if not isinstance(cls, type) or type(args) is not tuple or args or type(kwargs) is not dict or kwargs:
        raise UnsafePickleError(f"refusing NEWOBJ of {describe(cls)} with arguments {describe(args)}")
    return cls.__new__(cls)


def _global_name(module: str, name: str) -> str:
    return f"'{module[:_SHOWN_CHARS]}.{name[:_SHOWN_CHARS]}'"


# ---------------------------------------------------------------------------------------------------------------
# Tensors and storages.

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "uint8": np.uint8, "int8": np.int8,
    "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_, "uint16": np.uint16,
    "uint32": np.uint32, "uint64": np.uint64,
}
try:  # bfloat16 comes with JAX (ml_dtypes); without it such storages are refused as unknown.
    import ml_dtypes

    _STORAGE_DTYPES["BFloat16Storage"] = ml_dtypes.bfloat16
    _TORCH_DTYPES["bfloat16"] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
    pass


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<Kind>Storage``: only its element dtype matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


class _Storage(np.ndarray):
    """Marker type: a 1-D array holding a whole torch storage (not yet a tensor)."""


class _TorchDtype(_StorageType):
    """Stand-in for a torch dtype such as ``torch.float32``."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_TORCH_DTYPES[self.name])


def _is_size(value) -> bool:
    """Whether ``value`` is an int in ``[0, 2**63)``: a torch size, stride, offset or element count."""
    return type(value) is int and 0 <= value < 2**63


def _shape(dims) -> tuple[int, ...]:
    """``dims`` (a tensor's size or stride, or a ``torch.Size``) as a tuple of at most 64 ints in [0, 2**63)."""
    if type(dims) not in (tuple, list) or len(dims) > _MAX_DIMS or not all(map(_is_size, dims)):
        raise ValueError(f"tensor size or stride {describe(dims)}: expected at most {_MAX_DIMS} ints in [0, 2**63)")
    return tuple(dims)


def _strided(storage, offset, size, stride, dtype: np.dtype | None = None) -> np.ndarray:
    """A read-only view of ``storage`` (1-D) as a tensor, after checking it stays inside the storage."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"refusing tensor rebuilt from a {type(storage).__name__}, not a storage")
    base = storage.view(np.ndarray)
    if dtype is not None and base.dtype != dtype:
        base = base.view(np.uint8).view(dtype)
    size, stride = _shape(size), _shape(stride)
    if not _is_size(offset) or len(size) != len(stride):
        raise ValueError(f"tensor with invalid offset/size/stride {describe(offset)}, {size}, {stride}")
    if 0 in size:
        return np.zeros(size, base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.size:
        raise ValueError(f"tensor view (offset {offset}, size {size}, stride {stride}) overruns its storage "
                         f"of {base.size} elements")
    strides = [s * base.itemsize if n > 1 else 0 for n, s in zip(size, stride)]  # a lone index's stride is moot
    return np.lib.stride_tricks.as_strided(base[offset:], size, strides, writeable=False)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    return _strided(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks, metadata
    if not isinstance(dtype, _TorchDtype):
        raise UnsafePickleError(f"refusing tensor dtype {describe(dtype)}")
    return _strided(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks, state
    if not isinstance(data, np.ndarray):
        raise UnsafePickleError(f"refusing parameter wrapping a {type(data).__name__}")
    return data


class _StorageRef:
    """A storage named by a persistent id, whose bytes (``array``) are attached once they have been read."""

    def __init__(self, storage_type: _StorageType, numel: int):
        self.storage_type, self.numel, self.array = storage_type, numel, None


@dataclasses.dataclass(frozen=True, eq=False)
class _StorageView:
    """A legacy storage view: ``length`` elements of ``ref`` from ``start`` (checked to lie inside it)."""

    ref: _StorageRef
    start: int
    length: int

    @property
    def array(self) -> np.ndarray:
        return self.ref.array[self.start:self.start + self.length]


def _storage_view(ref: _StorageRef, view) -> _StorageView:
    """The view that legacy view metadata ``(view_key, start, length)`` names, if it lies inside ``ref``."""
    if not (type(view) is tuple and len(view) == 3 and _is_size(view[1]) and _is_size(view[2])
            and view[1] + view[2] <= ref.numel):
        raise ValueError(f"storage view {describe(view)} (key, start, length) does not lie inside its storage "
                         f"of {ref.numel} elements")
    return _StorageView(ref, view[1], view[2])


class _NestedUnpickler(_RestrictedUnpickler):
    """Unpickler of a torch serialization's main pickle: storage classes inside ``('storage', ...)`` ids only."""

    def __init__(self, stream: io.BytesIO, size: int, refs: dict):
        super().__init__(stream, size)
        self.refs = refs

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing global {_global_name(module, name)} in a storage's serialization")

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str and pid[0] == "storage"
                and type(pid[1]) is _StorageType and type(pid[2]) is str and _is_size(pid[4])):
            raise UnsafePickleError(f"refusing persistent id {describe(pid)}: only torch storages are allowed")
        _, storage_type, key, _location, numel, *view = pid
        ref = self.refs.setdefault(key, _StorageRef(storage_type, numel))
        if ref.storage_type != storage_type or ref.numel != numel:
            raise ValueError(f"storage {describe(key)} is named with two types or sizes")
        if view and view[0] is not None:
            return _storage_view(ref, view[0])
        return ref


class _DataUnpickler(_RestrictedUnpickler):
    """Unpickler of plain data only (the legacy format's magic number, version, system info and keys)."""

    def find_class(self, module, name):
        kind = ("the file is an EDM snapshot pickle (read it with load_edm_pickle), not a torch.save state dict"
                if module == "torch_utils.persistence" else "this is not a torch.save serialization")
        raise UnsafePickleError(f"refusing global {_global_name(module, name)} where a torch.save serialization "
                                f"holds plain data (its magic number, header or storage keys): {kind}")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {describe(pid)} in a torch serialization's header")


def _load_from_bytes(data) -> _Storage:
    """The single storage that ``torch.save(storage)`` wrote into ``data`` (legacy or zip format)."""
    if type(data) is not bytes:
        raise UnsafePickleError(f"refusing _load_from_bytes of a {type(data).__name__}")
    root = _read_serialization(data, {}, _NestedUnpickler)
    if not isinstance(root, (_StorageRef, _StorageView)):
        raise UnsafePickleError(f"refusing nested serialization holding a {type(root).__name__}, not a storage")
    return root.array.view(_Storage)


def _read_serialization(data: bytes, refs: dict, unpickler: type[_NestedUnpickler]) -> Any:
    """The root object of a torch serialization (zip or legacy format), with every storage of ``refs`` filled.

    ``unpickler`` reads the main pickle and records the storages it names in ``refs`` (key -> _StorageRef).
    """
    return (_read_zip if data[:4] == _ZIP_MAGIC else _read_legacy)(data, refs, unpickler)


def _read_legacy(data: bytes, refs: dict, unpickler: type[_NestedUnpickler]) -> Any:
    """Read torch's legacy format: magic, protocol, system info, pickle, storage keys, then raw storages."""
    stream = io.BytesIO(data)
    if _DataUnpickler(stream, len(data)).load() != _LEGACY_MAGIC:
        raise ValueError("neither torch's legacy nor its zip serialization (bad magic number)")
    _DataUnpickler(stream, len(data)).load()  # protocol version
    info = _DataUnpickler(stream, len(data)).load()
    order = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
    root = unpickler(stream, len(data), refs).load()
    keys = _DataUnpickler(stream, len(data)).load()
    if type(keys) is not list:
        raise ValueError(f"storage keys {describe(keys)} are not a list")
    position = stream.tell()
    for key in keys:
        ref = refs.get(key) if type(key) is str else None
        if ref is None:
            raise ValueError(f"storage key {describe(key)} names no storage of the pickle")
        dtype = ref.storage_type.dtype.newbyteorder(order)
        numel = int.from_bytes(data[position:position + 8], "little" if order == "<" else "big")
        position += 8
        if numel != ref.numel or position + numel * dtype.itemsize > len(data):
            raise ValueError(f"storage {describe(key)} is truncated or its size does not match its id")
        ref.array = np.frombuffer(data, dtype, count=numel, offset=position)
        position += numel * dtype.itemsize
    missing = [key for key, ref in refs.items() if ref.array is None]
    if missing:
        raise ValueError(f"{len(missing)} storage(s) named in the pickle have no bytes, e.g. {describe(missing[0])}")
    return root


class _ZipArchive:
    """A zip archive whose members' sizes are checked before they are inflated, then read with bounded reads."""

    def __init__(self, data: bytes):
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, NotImplementedError) as error:
            raise ValueError(f"unreadable zip archive: {_reason(error)}") from None
        self.inflation_left = _MAX_INFLATION * len(data)

    def read(self, name: str, size: int | None = None) -> bytes:
        """Member ``name``, which must hold exactly ``size`` bytes (any size if None)."""
        shown = describe(name)
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise ValueError(f"zip member {shown} is missing") from None
        if info.flag_bits & 0x1:
            raise ValueError(f"zip member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"zip member {shown} uses compression method {info.compress_type} "
                             "(only stored and deflated members are read)")
        if size is not None and info.file_size != size:
            raise ValueError(f"zip member {shown} holds {info.file_size} bytes, its storage {size}")
        if info.file_size > self.inflation_left:
            raise ValueError(f"zip member {shown} would inflate to {info.file_size} bytes, past "
                             f"{_MAX_INFLATION} times the archive's size in all")
        self.inflation_left -= info.file_size
        try:
            with self.zip.open(info) as member:
                raw = member.read(info.file_size)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
            raise ValueError(f"zip member {shown} is unreadable: {_reason(error)}") from None
        if len(raw) != info.file_size:
            raise ValueError(f"zip member {shown} is truncated")
        return raw


def _read_zip(data: bytes, refs: dict, unpickler: type[_NestedUnpickler]) -> Any:
    """Read torch's zip format: ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record per storage."""
    archive = _ZipArchive(data)
    members = archive.zip.namelist()
    names = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise ValueError("zip storage serialization without exactly one '<archive>/data.pkl'")
    prefix = names[0][: -len("data.pkl")]
    order = "<"
    if f"{prefix}byteorder" in members:
        order = {b"little": "<", b"big": ">"}.get(archive.read(f"{prefix}byteorder"))
        if order is None:
            raise ValueError(f"zip member '{prefix}byteorder' is neither 'little' nor 'big'")
    pickled = archive.read(names[0])
    root = unpickler(io.BytesIO(pickled), len(pickled), refs).load()
    for key, ref in refs.items():
        dtype = ref.storage_type.dtype.newbyteorder(order)
        ref.array = np.frombuffer(archive.read(f"{prefix}data/{key}", ref.numel * dtype.itemsize), dtype)
    return root


# ---------------------------------------------------------------------------------------------------------------
# The outer unpickler and the allow-list.

_PLAIN_MODULES = {
    "torch.nn.modules.container": ("ModuleDict", "ModuleList", "Sequential", "ParameterDict", "ParameterList"),
    "torch.nn.modules.linear": ("Linear", "Identity"),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.normalization": ("GroupNorm",),
    "torch.nn.modules.activation": ("SiLU",),
    "torch.nn.modules.dropout": ("Dropout",),
}


def _allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _OrderedDict,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("builtins", "set"): _StandIn("builtins.set", _plain_set(set)),
        ("builtins", "frozenset"): _StandIn("builtins.frozenset", _plain_set(frozenset)),
        ("_codecs", "encode"): _StandIn("_codecs.encode", _codecs_encode),
        ("numpy", "dtype"): _StandIn("numpy.dtype", _numpy_dtype),
        ("numpy._core.multiarray", "scalar"): _StandIn("numpy.scalar", _numpy_scalar),
        ("numpy.core.multiarray", "scalar"): _StandIn("numpy.scalar", _numpy_scalar),
        ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            _StandIn("_reconstruct_persistent_obj", _reconstruct_persistent),
        ("torch._utils", "_rebuild_tensor_v2"): _StandIn("_rebuild_tensor_v2", _rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _StandIn("_rebuild_tensor_v3", _rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _StandIn("_rebuild_parameter", _rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _StandIn("_rebuild_parameter_with_state", _rebuild_parameter),
        ("torch.storage", "_load_from_bytes"): _StandIn("_load_from_bytes", _load_from_bytes),
        ("torch", "Size"): _StandIn("torch.Size", _shape),
    }
    allowed.update((("torch", name), _TorchDtype(name)) for name in _TORCH_DTYPES)
    for module, names in _PLAIN_MODULES.items():
        for name in names:
            qualified = f"{module}.{name}"
            allowed[module, name] = type(name, (_PlainModule,), {"qualified_name": qualified})
    return allowed


_ALLOWED = _allow_list()


class _OuterUnpickler(_RestrictedUnpickler):
    """Unpickler of the snapshot itself: allow-listed globals mapped to stand-ins, no persistent ids."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(f"refusing global {_global_name(module, name)}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {describe(pid)}")


# ---------------------------------------------------------------------------------------------------------------
# Conversion of the unpickled tree into plain data and ModuleRecords.

_LEAVES = (type(None), bool, int, float, complex, str, bytes, np.generic)
_BUSY = object()  # memo mark of an object being converted (reached again: a cycle)


class _Converted(NamedTuple):
    """An object's conversion, the size of the tree it stands for and whether that tree holds a module."""

    value: Any
    nodes: int
    has_module: bool


class _Converter:
    """Converts unpickled objects into plain data and :class:`ModuleRecord` trees, each object once.

    Plain data shared through the pickle's memo stays shared, but the tree it stands for (counted as if
    unshared) may hold at most ``_NODES_PER_BYTE * size`` nodes and nest ``_MAX_DEPTH`` levels, so any later
    walk of the result is bounded by the file's size; a module, or a container holding one, reached twice is
    refused, so modules form a tree. ``unknown_sources`` collects (as dict keys, in order) the persistent class
    names whose ``module_src`` is none of :data:`EDM_MODULE_SOURCES`.
    """

    def __init__(self, size: int):
        self.max_nodes = _NODES_PER_BYTE * size
        self.memo: dict[int, Any] = {}  # id(object) -> _Converted (or _BUSY)
        self.known_sources: dict[int, bool] = {}  # id(module_src) -> whether it is an EDM release's
        self.unknown_sources: dict[str, None] = {}

    def convert(self, obj) -> Any:
        return self._visit(obj, 0).value

    def _visit(self, obj, depth: int) -> _Converted:
        if isinstance(obj, _LEAVES):
            return _Converted(obj, 1, False)
        if isinstance(obj, np.ndarray):
            return _Converted(obj.view(np.ndarray), 1, False)
        done = self.memo.get(id(obj))
        if done is _BUSY:
            raise ValueError("the pickle holds a reference cycle")
        if done is not None:
            if done.has_module:
                what = f"module {obj.class_name!r}" if isinstance(obj, _Persistent) else describe(obj)
                raise ValueError(f"{what} is reached twice in the pickle; modules must form a tree "
                                 "(holding or sharing submodules)")
            return done
        if depth >= _MAX_DEPTH:
            raise ValueError(f"the pickle's data nest deeper than {_MAX_DEPTH} levels")
        self.memo[id(obj)] = _BUSY
        done = self.memo[id(obj)] = self._convert(obj, depth + 1)
        if done.nodes > self.max_nodes:
            raise ValueError(f"the pickle's data, counted as a tree, hold over {self.max_nodes} nodes "
                             f"({_NODES_PER_BYTE} per byte of the file): objects shared over and over")
        return done

    def _convert(self, obj, depth: int) -> _Converted:
        if isinstance(obj, dict):  # keys were checked by _key when the dict was filled
            items = [(key, self._visit(value, depth)) for key, value in obj.items()]
            return _Converted({key: done.value for key, done in items}, 1 + sum(1 + d.nodes for _, d in items),
                              any(done.has_module for _, done in items))
        if type(obj) in (list, tuple, set, frozenset):
            items = [self._visit(value, depth) for value in obj]
            return _Converted(type(obj)(done.value for done in items), 1 + sum(done.nodes for done in items),
                              any(done.has_module for done in items))
        if type(obj) is _DtypeSpec:
            return _Converted(obj.resolve(), 1, False)
        if type(obj) is _Persistent:
            self._check_source(obj)
            state = self._visit(obj.state, depth)
            return _Converted(_record(obj.class_name, state.value), 1 + state.nodes, True)
        if isinstance(obj, _PlainModule):
            state = self._visit(obj.state, depth) if obj.state is not None else _Converted({}, 1, False)
            return _Converted(_record(obj.qualified_name, state.value), 1 + state.nodes, True)
        raise UnsafePickleError(f"refusing {type(obj).__qualname__} in the pickle's data: only plain data is allowed")

    def _check_source(self, obj: _Persistent) -> None:
        source = obj.module_src
        known = self.known_sources.get(id(source))
        if known is None:
            digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest() if type(source) is str else ""
            known = self.known_sources[id(source)] = digest in EDM_MODULE_SOURCES
        if not known:
            self.unknown_sources[obj.class_name] = None


def _record(class_name: str, state: dict) -> ModuleRecord:
    """A :class:`ModuleRecord` from a module's converted ``__dict__``."""
    if not all(type(name) is str for name in state):
        raise TypeError(f"{class_name} has an attribute name that is not a str")
    return ModuleRecord(
        class_name=class_name,
        init_args=tuple(_field(state, "_init_args", (tuple, list), (), class_name)),
        init_kwargs=dict(_field(state, "_init_kwargs", (dict,), {}, class_name)),
        parameters=_entries(state, "_parameters", np.ndarray, class_name),
        buffers=_entries(state, "_buffers", np.ndarray, class_name),
        modules=_entries(state, "_modules", ModuleRecord, class_name),
        non_persistent_buffers=frozenset(_field(state, "_non_persistent_buffers_set", (set, frozenset, list, tuple),
                                                (), class_name)),
        attributes={k: v for k, v in state.items() if not k.startswith("_")},
    )


def _field(state: dict, field: str, kinds: tuple[type, ...], default, class_name: str):
    """``state[field]`` checked to be one of ``kinds``; ``default`` if it is missing or None."""
    value = state.get(field)
    if value is None:
        return default
    if not isinstance(value, kinds):
        raise TypeError(f"{class_name}.{field} is a {type(value).__name__}, expected "
                        f"{' or '.join(kind.__name__ for kind in kinds)}")
    return value


def _entries(state: dict, field: str, kind: type, class_name: str) -> dict:
    """``state[field]`` (parameters, buffers or children), checked to map str names to ``kind`` or None."""
    entries = _field(state, field, (dict,), {}, class_name)
    for name, value in entries.items():
        if type(name) is not str or (value is not None and not isinstance(value, kind)):
            raise TypeError(f"{class_name}.{field}[{describe(name)}] is a {type(value).__name__}, expected "
                            f"{kind.__name__} under a str name")
    return dict(entries)


# ---------------------------------------------------------------------------------------------------------------
# torch.save(state_dict) files: the storage machinery above, with tensors rebuilt once their bytes are read.


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save(module.state_dict())`` file without torch or code execution.

    Both of torch's formats are read: the legacy one (``_use_new_zipfile_serialization=False``, and every
    file written before torch 1.6, e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) and the zip
    one. Only the globals listed in the module docstring are allowed.

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
    with open(path, "rb") as file:
        data = file.read()
    try:
        return _state_dict(_read_serialization(data, {}, _StateDictUnpickler), len(data))
    except UnsafePickleError as error:
        raise UnsafePickleError(f"path {os.fspath(path)!r}: {error}") from error
    except _READ_ERRORS as error:
        message = f"path {os.fspath(path)!r} is not a readable torch state dict: {_reason(error)}"
        raise ValueError(message) from error


@dataclasses.dataclass(frozen=True, eq=False)
class _TensorRef:
    """A tensor whose storage bytes follow the pickle: rebuilt by :meth:`resolve` once they are read."""

    storage: _StorageRef | _StorageView
    offset: int
    size: tuple
    stride: tuple
    dtype: np.dtype | None = None

    def resolve(self) -> np.ndarray:
        return _strided(self.storage.array.view(_Storage), self.offset, self.size, self.stride, self.dtype)


def _storage_arg(storage):
    if isinstance(storage, (_StorageRef, _StorageView)):
        return storage
    raise UnsafePickleError(f"refusing tensor rebuilt from a {type(storage).__name__}, not a storage")


def _lazy_tensor_v1(storage, offset, size, stride):
    return _TensorRef(_storage_arg(storage), offset, _shape(size), _shape(stride))


def _lazy_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    return _TensorRef(_storage_arg(storage), offset, _shape(size), _shape(stride))


def _lazy_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks, metadata
    if not isinstance(dtype, _TorchDtype):
        raise UnsafePickleError(f"refusing tensor dtype {describe(dtype)}")
    return _TensorRef(_storage_arg(storage), offset, _shape(size), _shape(stride), dtype.dtype)


def _lazy_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks, state
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"refusing parameter wrapping a {type(data).__name__}")
    return data


class _StateDict(_OrderedDict):
    """Stand-in for ``collections.OrderedDict``: a BUILD may set ``_metadata`` (checked to be data, then dropped)."""

    metadata = None

    def __setstate__(self, state):
        if state is None:
            return
        if not (type(state) is dict and len(state) <= 1 and all(key == "_metadata" for key in state)):
            names = describe(list(state)) if type(state) is dict else type(state).__name__
            raise UnsafePickleError(f"refusing attributes {names} on collections.OrderedDict (only _metadata)")
        self.metadata = state.get("_metadata")



def _state_dict_allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor"): _StandIn("_rebuild_tensor", _lazy_tensor_v1),
        ("torch._utils", "_rebuild_tensor_v2"): _StandIn("_rebuild_tensor_v2", _lazy_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _StandIn("_rebuild_tensor_v3", _lazy_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _StandIn("_rebuild_parameter", _lazy_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _StandIn("_rebuild_parameter_with_state", _lazy_parameter),
        ("torch", "Size"): _StandIn("torch.Size", _shape),
    }
    allowed.update((("torch", name), _TorchDtype(name)) for name in _TORCH_DTYPES)
    return allowed


_STATE_DICT_ALLOWED = _state_dict_allow_list()


class _StateDictUnpickler(_NestedUnpickler):
    """Unpickler of a ``torch.save``d state dict: storages by persistent id, tensors, OrderedDict."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _STATE_DICT_ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(f"refusing global {_global_name(module, name)}") from None


def _state_dict(root, size: int) -> dict[str, np.ndarray]:
    """``{name: array}`` from the unpickled root, which must map ``str`` names to tensors only."""
    if type(root) not in (dict, _StateDict):
        raise TypeError(f"expected a dict of tensors at the top level, got {type(root).__name__}")
    if getattr(root, "metadata", None) is not None:
        _Converter(size).convert(root.metadata)  # refuses anything but plain data; torch's version info, unused
    out = {}
    for name, value in root.items():
        if type(name) is not str:
            raise UnsafePickleError(f"refusing state-dict key of type {type(name).__name__}: {describe(name)}")
        if not isinstance(value, _TensorRef):
            raise UnsafePickleError(f"refusing state-dict entry {describe(name)}: a {type(value).__qualname__}, "
                                    "not a tensor")
        out[name] = value.resolve()
    return out
