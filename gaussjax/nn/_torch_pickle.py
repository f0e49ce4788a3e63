"""Restricted readers of torch files: EDM snapshot pickles and ``torch.save`` state dicts, no code run.

EDM's ``training_loop.py`` pickles ``dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)`` with
the standard library. Loading that with ``pickle.load`` imports torch and *executes* the Python source that
``torch_utils.persistence`` embeds in every network (``meta['module_src']``). This module reads the same
bytes without torch and without running anything from the file:

- An explicit allow-list maps each ``(module, name)`` global the pickle may reference to a local stand-in.
  Every other global, every persistent id that is not a torch storage, and every ``BUILD`` aimed at a
  stand-in raises :class:`UnsafePickleError` before anything of the file runs.
- Persistent EDM objects (``_reconstruct_persistent_obj(meta)``) are read from ``meta['class_name']`` and
  ``meta['state']`` only; ``meta['type']`` must be ``'class'`` and ``meta['module_src']`` is dropped unread.
- Tensors become NumPy arrays viewing the storage bytes (read-only, no copy for the legacy format, one copy
  for the zip format); float16 stays float16. Strided views are bounds-checked before ``as_strided``.
- The finished object tree may hold only plain data (None, bool, int, float, complex, str, bytes, NumPy
  arrays/scalars/dtypes, tuples, lists, sets, dicts and :class:`ModuleRecord`); anything else is refused.

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
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

__all__ = ["ModuleRecord", "UnsafePickleError", "read_edm_pickle", "read_torch_state_dict"]


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
        ModuleRecord or None, 'dataset_kwargs': dict}``, with every tensor as a read-only NumPy array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file references anything outside the allow-list (see the module docstring).
        ValueError: the file is truncated or not a pickle of this kind; the message names ``path``.
    """
    with open(path, "rb") as file:
        try:
            return _snapshot(_to_data(_OuterUnpickler(file).load(), {}))
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, MemoryError, RecursionError, zipfile.BadZipFile, UnicodeDecodeError) as error:
            raise ValueError(f"path {os.fspath(path)!r} is not a readable EDM snapshot pickle: "
                             f"{type(error).__name__}: {error}") from error


def _snapshot(tree) -> dict:
    if not isinstance(tree, dict):
        raise TypeError(f"expected a snapshot dict at the top level, got {type(tree).__name__}")
    return tree


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins. Each defines __setstate__ so a BUILD opcode aimed at it (or at its class) cannot set attributes.


class _StandIn:
    """A named, callable stand-in for an allowed global function."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set state on global {self.name!r}")


class _Refuses:
    """Base of stand-in classes: objects whose BUILD state is handled explicitly or refused."""

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set state on {type(self).__qualname__}")


class _OrderedDict(collections.OrderedDict):
    def __setstate__(self, state):
        if state:
            raise UnsafePickleError("refusing attributes on collections.OrderedDict")


class _EasyDict(dict):
    def __setstate__(self, state):
        if state:
            raise UnsafePickleError("refusing attributes on dnnlib.util.EasyDict")


class _PlainModule(_Refuses):
    """A plain torch module; subclasses carry the qualified global in ``qualified_name``."""

    qualified_name = ""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"refusing non-dict state of {self.qualified_name!r}")
        self.__dict__["state"] = state


@dataclasses.dataclass
class _Persistent:
    """An EDM persistent object before conversion: its class name and instance state."""

    class_name: str
    state: dict

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set state on persistent object {self.class_name!r}")


@dataclasses.dataclass
class _DtypeSpec(_Refuses):
    """``numpy.dtype(code, align, copy)`` plus the byte order its BUILD state names."""

    code: str
    order: str = "="

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "=", "|")):
            raise UnsafePickleError(f"refusing numpy.dtype state {state!r}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


def _numpy_dtype(code, align=False, copy=False):
    del align, copy
    if not isinstance(code, str) or np.dtype(code).kind not in "biufc":
        raise UnsafePickleError(f"refusing numpy.dtype({code!r}): only numeric dtypes are allowed")
    return _DtypeSpec(code)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _DtypeSpec) or not isinstance(data, bytes):
        raise UnsafePickleError("refusing numpy scalar that is not a numeric dtype with bytes")
    return np.frombuffer(data, dtype.resolve(), count=1)[0]


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstruct_persistent(meta):
    if not isinstance(meta, dict):
        raise UnsafePickleError(f"refusing persistent object whose meta is a {type(meta).__name__}")
    if meta.get("type") != "class":
        raise UnsafePickleError(f"refusing persistent object of type {meta.get('type')!r} (only 'class')")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not class_name.isidentifier():
        raise UnsafePickleError(f"refusing persistent class name {class_name!r}")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"refusing persistent object {class_name!r} whose state is not a dict")
    return _Persistent(class_name, dict(state))  # module_src is dropped here, never read


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

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set state on torch.{self.name}")


class _Storage(np.ndarray):
    """Marker type: a 1-D array holding a whole torch storage (not yet a tensor)."""


class _TorchDtype(_StorageType):
    """Stand-in for a torch dtype such as ``torch.float32``."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_TORCH_DTYPES[self.name])


def _strided(storage, offset, size, stride, dtype: np.dtype | None = None) -> np.ndarray:
    """A read-only view of ``storage`` (1-D) as a tensor, after checking it stays inside the storage."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"refusing tensor rebuilt from a {type(storage).__name__}, not a storage")
    base = storage.view(np.ndarray)
    if dtype is not None:
        base = base.view(np.uint8).view(dtype) if base.dtype != dtype else base
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)) or len(size) != len(stride):
        raise ValueError(f"tensor with invalid offset/size/stride {offset}, {size}, {stride}")
    if 0 in size:
        return np.zeros(size, base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.size:
        raise ValueError(f"tensor view (offset {offset}, size {size}, stride {stride}) overruns its storage "
                         f"of {base.size} elements")
    view = np.lib.stride_tricks.as_strided(base[offset:], size, [s * base.itemsize for s in stride],
                                           writeable=False)
    return view


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    return _strided(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks, metadata
    if not isinstance(dtype, _TorchDtype):
        raise UnsafePickleError(f"refusing tensor dtype {dtype!r}")
    return _strided(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks, state
    if not isinstance(data, np.ndarray):
        raise UnsafePickleError(f"refusing parameter wrapping a {type(data).__name__}")
    return data


def _torch_size(dims=()):
    if not all(isinstance(d, int) for d in dims):
        raise UnsafePickleError(f"refusing torch.Size{dims!r}")
    return tuple(dims)


class _StorageRef:
    """A storage named by a persistent id, whose bytes are attached once they have been read."""

    def __init__(self, storage_type: _StorageType, numel: int):
        self.storage_type, self.numel, self.array = storage_type, numel, None

    def __setstate__(self, state):
        raise UnsafePickleError("refusing to set state on a torch storage")


class _NestedUnpickler(pickle.Unpickler):
    """Unpickler of a nested torch serialization: storage classes inside ``('storage', ...)`` ids only."""

    def __init__(self, file, refs: dict):
        super().__init__(file)
        self.refs = refs

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing global '{module}.{name}' in a storage's serialization")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafePickleError(f"refusing persistent id {pid!r}: only torch storages are allowed")
        _, storage_type, key, _location, numel, *view = pid
        ref = self.refs.setdefault(key, _StorageRef(storage_type, numel))
        if view and view[0] is not None:
            return ("view", ref, view[0])
        return ref


class _DataUnpickler(pickle.Unpickler):
    """Unpickler of plain data only (the legacy format's magic number, version, system info and keys)."""

    def find_class(self, module, name):
        raise UnsafePickleError(f"refusing global '{module}.{name}' in a storage's serialization header")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a storage's serialization header")


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_from_bytes(data) -> _Storage:
    """The single storage that ``torch.save(storage)`` wrote into ``data`` (legacy or zip format)."""
    if not isinstance(data, bytes):
        raise UnsafePickleError(f"refusing _load_from_bytes of a {type(data).__name__}")
    refs: dict[str, _StorageRef] = {}
    if data[:4] == b"PK\x03\x04":
        root = _read_zip(data, refs)
    else:
        root = _read_legacy(data, refs)
    if isinstance(root, tuple):  # a storage view: ('view', base, (view_key, offset, size))
        _, ref, (_key, start, length) = root
        return ref.array[start:start + length].view(_Storage)
    if not isinstance(root, _StorageRef):
        raise UnsafePickleError(f"refusing nested serialization holding a {type(root).__name__}, not a storage")
    return root.array.view(_Storage)


def _read_legacy(data: bytes, refs: dict, unpickler: type[pickle.Unpickler] | None = None) -> Any:
    """Read torch's legacy format: magic, protocol, system info, pickle, storage keys, then raw storages.

    ``unpickler`` reads the main pickle (default :class:`_NestedUnpickler`); it records storages in ``refs``.
    """
    stream = io.BytesIO(data)
    if _DataUnpickler(stream).load() != _LEGACY_MAGIC:
        raise ValueError("storage bytes are neither torch's legacy nor zip serialization (bad magic number)")
    _DataUnpickler(stream).load()  # protocol version
    info = _DataUnpickler(stream).load()
    order = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
    root = (unpickler or _NestedUnpickler)(stream, refs).load()
    keys = _DataUnpickler(stream).load()
    position = stream.tell()
    for key in keys:
        ref = refs[key]
        numel = int.from_bytes(data[position:position + 8], "little" if order == "<" else "big")
        dtype = ref.storage_type.dtype.newbyteorder(order)
        position += 8
        if numel != ref.numel or position + numel * dtype.itemsize > len(data):
            raise ValueError(f"storage {key!r} is truncated or its size does not match its id")
        ref.array = np.frombuffer(data, dtype, count=numel, offset=position)
        position += numel * dtype.itemsize
    _check_filled(refs)
    return root


def _read_zip(data: bytes, refs: dict, unpickler: type[pickle.Unpickler] | None = None) -> Any:
    """Read torch's zip format: ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record per storage.

    ``unpickler`` reads ``data.pkl`` (default :class:`_NestedUnpickler`); it records storages in ``refs``.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            raise ValueError("zip storage serialization without exactly one '<archive>/data.pkl'")
        prefix = names[0][: -len("data.pkl")]
        order = "<"
        if f"{prefix}byteorder" in archive.namelist():
            order = "<" if archive.read(f"{prefix}byteorder") == b"little" else ">"
        root = (unpickler or _NestedUnpickler)(io.BytesIO(archive.read(names[0])), refs).load()
        for key, ref in refs.items():
            raw = archive.read(f"{prefix}data/{key}")  # the one copy of these bytes
            dtype = ref.storage_type.dtype.newbyteorder(order)
            if len(raw) != ref.numel * dtype.itemsize:
                raise ValueError(f"storage {key!r} holds {len(raw)} bytes, its id says {ref.numel} elements")
            ref.array = np.frombuffer(raw, dtype)
    _check_filled(refs)
    return root


def _check_filled(refs: dict) -> None:
    missing = [key for key, ref in refs.items() if ref.array is None]
    if missing:
        raise ValueError(f"storages {missing} are named but their bytes are missing")


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
        ("builtins", "set"): _StandIn("builtins.set", set),
        ("builtins", "frozenset"): _StandIn("builtins.frozenset", frozenset),
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
        ("torch", "Size"): _StandIn("torch.Size", _torch_size),
    }
    allowed.update((("torch", name), _TorchDtype(name)) for name in _TORCH_DTYPES)
    for module, names in _PLAIN_MODULES.items():
        for name in names:
            qualified = f"{module}.{name}"
            allowed[module, name] = type(name, (_PlainModule,), {"qualified_name": qualified})
    return allowed


_ALLOWED = _allow_list()


class _OuterUnpickler(pickle.Unpickler):
    """Unpickler of the snapshot itself: allow-listed globals mapped to stand-ins, no persistent ids."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(f"refusing global '{module}.{name}'") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


# ---------------------------------------------------------------------------------------------------------------
# Conversion of the unpickled tree into plain data and ModuleRecords.

_LEAVES = (type(None), bool, int, float, complex, str, bytes, np.generic)


def _to_data(obj, memo: dict) -> Any:
    """``obj`` with stand-ins replaced by plain data; refuses anything that is not plain data."""
    if isinstance(obj, _LEAVES):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray)
    if id(obj) in memo:
        if memo[id(obj)] is None:
            raise ValueError("the pickle holds a reference cycle")
        return memo[id(obj)]
    memo[id(obj)] = None
    memo[id(obj)] = result = _convert(obj, memo)
    return result


def _convert(obj, memo: dict) -> Any:
    if isinstance(obj, dict):
        return {_key(k): _to_data(v, memo) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(_to_data(v, memo) for v in obj) if type(obj) in (list, tuple, set, frozenset) \
            else _refuse(obj)
    if isinstance(obj, _DtypeSpec):
        return obj.resolve()
    if isinstance(obj, _Persistent):
        return _record(obj.class_name, _to_data(obj.state, memo))
    if isinstance(obj, _PlainModule):
        return _record(obj.qualified_name, _to_data(obj.__dict__.get("state", {}), memo))
    return _refuse(obj)


def _key(key):
    if not isinstance(key, (str, int, float, bool, bytes, type(None))):
        _refuse(key)
    return key


def _refuse(obj):
    raise UnsafePickleError(f"refusing {type(obj).__qualname__} in the pickle's data: only plain data is allowed")


def _record(class_name: str, state: dict) -> ModuleRecord:
    """A :class:`ModuleRecord` from a module's converted ``__dict__``."""
    parameters = _entries(state.get("_parameters", {}), np.ndarray, class_name, "_parameters")
    buffers = _entries(state.get("_buffers", {}), np.ndarray, class_name, "_buffers")
    modules = _entries(state.get("_modules", {}), ModuleRecord, class_name, "_modules")
    attributes = {k: v for k, v in state.items() if not k.startswith("_")}
    return ModuleRecord(
        class_name=class_name,
        init_args=tuple(state.get("_init_args") or ()),
        init_kwargs=dict(state.get("_init_kwargs") or {}),
        parameters=parameters,
        buffers=buffers,
        modules=modules,
        non_persistent_buffers=frozenset(state.get("_non_persistent_buffers_set") or ()),
        attributes=attributes,
    )


def _entries(entries, kind: type, class_name: str, field: str) -> dict:
    if not isinstance(entries, dict):
        raise TypeError(f"{class_name}.{field} is a {type(entries).__name__}, expected a dict")
    for name, value in entries.items():
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{class_name}.{field}[{name!r}] is a {type(value).__name__}, expected {kind.__name__}")
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
            under string names (a number, a string, a module...).
        ValueError: the file is truncated, or not a torch serialization of a dict; the message names ``path``.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        refs: dict[str, _StorageRef] = {}
        if data[:4] == b"PK\x03\x04":
            root = _read_zip(data, refs, _StateDictUnpickler)
        else:
            root = _read_legacy(data, refs, _StateDictUnpickler)
        return _state_dict(root)
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise ValueError(f"path {os.fspath(path)!r} is not a readable torch state dict: "
                         f"{type(error).__name__}: {error}") from error


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes follow the pickle: rebuilt by :meth:`resolve` once they are read."""

    storage: Any  # a _StorageRef, or ('view', _StorageRef, (key, start, length)) for a legacy storage view
    offset: int
    size: tuple
    stride: tuple
    dtype: np.dtype | None = None

    def __setstate__(self, state):
        raise UnsafePickleError("refusing to set state on a tensor")

    def resolve(self) -> np.ndarray:
        storage = self.storage
        if isinstance(storage, tuple):
            _, ref, view = storage
            if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
                raise UnsafePickleError(f"refusing storage view metadata {view!r}")
            base = ref.array[view[1]:view[1] + view[2]]
        else:
            base = storage.array
        return _strided(base.view(_Storage), self.offset, self.size, self.stride, self.dtype)


def _storage_arg(storage):
    if isinstance(storage, _StorageRef) or (isinstance(storage, tuple) and len(storage) == 3
                                           and storage[0] == "view" and isinstance(storage[1], _StorageRef)):
        return storage
    raise UnsafePickleError(f"refusing tensor rebuilt from a {type(storage).__name__}, not a storage")


def _lazy_tensor_v1(storage, offset, size, stride):
    return _TensorRef(_storage_arg(storage), offset, tuple(size), tuple(stride))


def _lazy_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    return _TensorRef(_storage_arg(storage), offset, tuple(size), tuple(stride))


def _lazy_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks, metadata
    if not isinstance(dtype, _TorchDtype):
        raise UnsafePickleError(f"refusing tensor dtype {dtype!r}")
    return _TensorRef(_storage_arg(storage), offset, tuple(size), tuple(stride), dtype.dtype)


def _lazy_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks, state
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"refusing parameter wrapping a {type(data).__name__}")
    return data


class _StateDict(collections.OrderedDict):
    """Stand-in for ``collections.OrderedDict``: a BUILD may set ``_metadata`` (checked to be data, then dropped)."""

    def __setstate__(self, state):
        if state is None:
            return
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise UnsafePickleError(f"refusing attributes {keys} on collections.OrderedDict (only _metadata)")
        if "_metadata" in state:
            _to_data(state["_metadata"], {})  # refuses anything but plain data; torch's version info, unused here


def _state_dict_allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor"): _StandIn("_rebuild_tensor", _lazy_tensor_v1),
        ("torch._utils", "_rebuild_tensor_v2"): _StandIn("_rebuild_tensor_v2", _lazy_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _StandIn("_rebuild_tensor_v3", _lazy_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _StandIn("_rebuild_parameter", _lazy_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _StandIn("_rebuild_parameter_with_state", _lazy_parameter),
        ("torch", "Size"): _StandIn("torch.Size", _torch_size),
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
            raise UnsafePickleError(f"refusing global '{module}.{name}'") from None


def _state_dict(root) -> dict[str, np.ndarray]:
    """``{name: array}`` from the unpickled root, which must map ``str`` names to tensors only."""
    if type(root) not in (dict, _StateDict):
        raise TypeError(f"expected a dict of tensors at the top level, got {type(root).__name__}")
    out = {}
    for name, value in root.items():
        if not isinstance(name, str):
            raise UnsafePickleError(f"refusing state-dict key of type {type(name).__name__}: {name!r}")
        if not isinstance(value, _TensorRef):
            raise UnsafePickleError(f"refusing state-dict entry {name!r}: a {type(value).__qualname__}, "
                                    "not a tensor")
        out[name] = value.resolve()
    return out
