"""torch storages and their serializations: element types, storages named by persistent id, bounds-checked strided
views, and torch's two formats (legacy and zip) that hold a pickle plus the bytes of the storages it names.

A storage is read-only NumPy memory: a view of the file's bytes (legacy format) or of one zip member (zip
format). Views into it (legacy storage views, tensors) are checked to lie inside it before they are made; zip
members are checked to be stored or deflated, unencrypted, of exactly their storage's size (``data.pkl`` of any
size) and to inflate to at most ``MAX_INFLATION`` times the archive in all, before they are inflated.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
import zlib
from typing import Any, Literal

import ml_dtypes
import numpy as np

from gaussjax._errors import InputValueError
from gaussjax._torch._errors import Global, UnsafePickleError, describe, reason
from gaussjax._torch._unpickler import Allowed, AllowList, RestrictedUnpickler, function

MAX_DIMS = 64  # dimensions of a tensor (NumPy's limit)
MAX_INFLATION = 4  # bytes zip members may inflate to, per byte of their archive, in all
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8, "BFloat16Storage": ml_dtypes.bfloat16,
}
TORCH_DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "uint8": np.uint8, "int8": np.int8,
    "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_, "uint16": np.uint16,
    "uint32": np.uint32, "uint64": np.uint64, "bfloat16": ml_dtypes.bfloat16,
}


@dataclasses.dataclass(frozen=True)
class StorageType(Global):
    """Stand-in for ``torch.<Kind>Storage``: only its element dtype matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


class TorchDtype(StorageType):
    """Stand-in for a torch dtype such as ``torch.float32``."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(TORCH_DTYPES[self.name])


def is_size(value) -> bool:
    """Whether ``value`` is an int in ``[0, 2**63)``: a torch size, stride, offset or element count."""
    return type(value) is int and 0 <= value < 2**63


def shape(dims) -> tuple[int, ...]:
    """``dims`` (a tensor's size or stride, or a ``torch.Size``) as a tuple of at most 64 ints in [0, 2**63)."""
    if type(dims) not in (tuple, list) or len(dims) > MAX_DIMS or not all(map(is_size, dims)):
        raise InputValueError(f"tensor size or stride {describe(dims)}: expected at most {MAX_DIMS} ints in [0, 2**63)")
    return tuple(dims)


def strided(base: np.ndarray, offset, size: tuple, stride: tuple, dtype: np.dtype | None = None) -> np.ndarray:
    """A read-only view of the storage ``base`` (1-D, reinterpreted as ``dtype`` if given) as a tensor, after
    checking that it stays inside the storage."""
    if dtype is not None and base.dtype != dtype:
        base = base.view(np.uint8).view(dtype)
    if not is_size(offset) or len(size) != len(stride):
        raise InputValueError(f"tensor with invalid offset/size/stride {describe(offset)}, {size}, {stride}")
    if 0 in size:
        return np.zeros(size, base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= base.size:
        raise InputValueError(f"tensor view (offset {offset}, size {size}, stride {stride}) overruns its storage "
                              f"of {base.size} elements")
    # a lone index's stride is moot
    strides = [s * base.itemsize if n > 1 else 0 for n, s in zip(size, stride, strict=True)]
    return np.lib.stride_tricks.as_strided(base[offset:], size, strides, writeable=False)


class StorageRef:
    """A storage named by a persistent id, whose bytes (``array``, 1-D) are attached once they have been read."""

    array: np.ndarray | None  # None until the storage's bytes are read

    def __init__(self, storage_type: StorageType, numel: int):
        self.storage_type, self.numel, self.array = storage_type, numel, None

    def resolve(self) -> np.ndarray:
        assert self.array is not None  # a serialization's storages are all read before anything is resolved
        return self.array


@dataclasses.dataclass(frozen=True, eq=False)
class StorageView:
    """A legacy storage view: ``length`` elements of ``ref`` from ``start`` (checked to lie inside it)."""

    ref: StorageRef
    start: int
    length: int

    def resolve(self) -> np.ndarray:
        return self.ref.resolve()[self.start:self.start + self.length]


STORAGES_OR_VIEWS = (StorageRef, StorageView)


class _StorageTable:
    """The storages a serialization's main pickle names, by key: the stand-in of its persistent ids."""

    def __init__(self) -> None:
        self.refs: dict[str, StorageRef] = {}

    def load(self, pid) -> StorageRef | StorageView:
        """The storage of persistent id ``('storage', type, key, location, numel[, view_metadata])``."""
        if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str and pid[0] == "storage"
                and type(pid[1]) is StorageType and type(pid[2]) is str and is_size(pid[4])):
            raise UnsafePickleError(f"refusing persistent id {describe(pid)}: only torch storages are allowed")
        _, storage_type, key, _location, numel, *view = pid
        ref = self.refs.setdefault(key, StorageRef(storage_type, numel))
        if ref.storage_type != storage_type or ref.numel != numel:
            raise InputValueError(f"storage {describe(key)} is named with two types or sizes")
        if view and view[0] is not None:
            return _storage_view(ref, view[0])
        return ref


def _storage_view(ref: StorageRef, view) -> StorageView:
    """The view that legacy view metadata ``(view_key, start, length)`` names, if it lies inside ``ref``."""
    if not (type(view) is tuple and len(view) == 3 and is_size(view[1]) and is_size(view[2])
            and view[1] + view[2] <= ref.numel):
        raise InputValueError(f"storage view {describe(view)} (key, start, length) does not lie inside its storage "
                              f"of {ref.numel} elements")
    return StorageView(ref, view[1], view[2])


STORAGE_TYPES = tuple(Allowed("torch", name, StorageType(name), "a storage's element type, inside a persistent id "
                              "`('storage', type, key, location, numel[, view])`") for name in STORAGE_DTYPES)
TORCH_DTYPE_NAMES = tuple(Allowed("torch", name, TorchDtype(name), "a tensor's dtype") for name in TORCH_DTYPES)

# A serialization's plain-data pickles: its magic number, protocol version, system info and storage keys.
_HEADER = AllowList(
    "A torch serialization's header", (),
    where="where a torch.save serialization holds plain data (its magic number, header or storage keys)",
    hints={"torch_utils.persistence": "the file is an EDM snapshot pickle (read it with load_edm_pickle), not a "
                                      "torch.save state dict", "": "this is not a torch.save serialization"})


def read_serialization(data: bytes, allowed: AllowList) -> Any:
    """The root object of a torch serialization (zip or legacy format), every storage it names read.

    ``allowed`` gives the globals of its main pickle; persistent ids name storages, as
    :class:`StorageRef` / :class:`StorageView` whose bytes are attached before this returns.
    """
    return (_read_zip if data[:4] == ZIP_MAGIC else _read_legacy)(data, allowed)


def _read_legacy(data: bytes, allowed: AllowList) -> Any:
    """Read torch's legacy format: magic, protocol, system info, pickle, storage keys, then raw storages."""
    stream, size, storages = io.BytesIO(data), len(data), _StorageTable()
    if RestrictedUnpickler(stream, size, _HEADER).load() != LEGACY_MAGIC:
        raise InputValueError("neither torch's legacy nor its zip serialization (bad magic number)")
    RestrictedUnpickler(stream, size, _HEADER).load()  # protocol version
    info = RestrictedUnpickler(stream, size, _HEADER).load()
    order: Literal["<", ">"] = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
    root = RestrictedUnpickler(stream, size, allowed, storages.load).load()
    keys = RestrictedUnpickler(stream, size, _HEADER).load()
    if type(keys) is not list:
        raise InputValueError(f"storage keys {describe(keys)} are not a list")
    position = stream.tell()
    for key in keys:
        ref = storages.refs.get(key) if type(key) is str else None
        if ref is None:
            raise InputValueError(f"storage key {describe(key)} names no storage of the pickle")
        dtype = ref.storage_type.dtype.newbyteorder(order)
        numel = int.from_bytes(data[position:position + 8], "little" if order == "<" else "big")
        position += 8
        if numel != ref.numel or position + numel * dtype.itemsize > len(data):
            raise InputValueError(f"storage {describe(key)} is truncated or its size does not match its id")
        ref.array = np.frombuffer(data, dtype, count=numel, offset=position)
        position += numel * dtype.itemsize
    missing = [key for key, ref in storages.refs.items() if ref.array is None]
    if missing:
        raise InputValueError(f"{len(missing)} storage(s) named in the pickle have no bytes, e.g. "
                              f"{describe(missing[0])}")
    return root


class _ZipArchive:
    """A zip archive whose members' sizes are checked before they are inflated, then read with bounded reads."""

    def __init__(self, data: bytes):
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, NotImplementedError) as error:
            raise InputValueError(f"unreadable zip archive: {reason(error)}") from None
        self.inflation_left = MAX_INFLATION * len(data)

    def read(self, name: str, size: int | None = None) -> bytes:
        """Member ``name``, which must hold exactly ``size`` bytes (any size if None)."""
        shown = describe(name)
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise InputValueError(f"zip member {shown} is missing") from None
        if info.flag_bits & 0x1:
            raise InputValueError(f"zip member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputValueError(f"zip member {shown} uses compression method {info.compress_type} "
                                  "(only stored and deflated members are read)")
        if size is not None and info.file_size != size:
            raise InputValueError(f"zip member {shown} holds {info.file_size} bytes, its storage {size}")
        if info.file_size > self.inflation_left:
            raise InputValueError(f"zip member {shown} would inflate to {info.file_size} bytes, past "
                                  f"{MAX_INFLATION} times the archive's size in all")
        self.inflation_left -= info.file_size
        try:
            with self.zip.open(info) as member:
                raw = member.read(info.file_size)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
            raise InputValueError(f"zip member {shown} is unreadable: {reason(error)}") from None
        if len(raw) != info.file_size:
            raise InputValueError(f"zip member {shown} is truncated")
        return raw


def _read_zip(data: bytes, allowed: AllowList) -> Any:
    """Read torch's zip format: ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record per storage."""
    archive, storages = _ZipArchive(data), _StorageTable()
    members = archive.zip.namelist()
    names = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise InputValueError("zip storage serialization without exactly one '<archive>/data.pkl'")
    prefix = names[0][: -len("data.pkl")]
    order: Literal["<", ">"] = "<"
    if f"{prefix}byteorder" in members:
        orders: dict[bytes, Literal["<", ">"]] = {b"little": "<", b"big": ">"}
        found = orders.get(archive.read(f"{prefix}byteorder"))
        if found is None:
            raise InputValueError(f"zip member '{prefix}byteorder' is neither 'little' nor 'big'")
        order = found
    pickled = archive.read(names[0])
    root = RestrictedUnpickler(io.BytesIO(pickled), len(pickled), allowed, storages.load).load()
    for key, ref in storages.refs.items():
        dtype = ref.storage_type.dtype.newbyteorder(order)
        ref.array = np.frombuffer(archive.read(f"{prefix}data/{key}", ref.numel * dtype.itemsize), dtype)
    return root


# The main pickle of a storage's own serialization (``torch.storage._load_from_bytes``).
STORAGE = AllowList("The pickle of a storage's serialization, inside an EDM snapshot", STORAGE_TYPES,
                    where="in a storage's serialization")


def load_from_bytes(data) -> StorageRef | StorageView:
    """The single storage that ``torch.save(storage)`` wrote into ``data`` (legacy or zip format), read."""
    if type(data) is not bytes:
        raise UnsafePickleError(f"refusing _load_from_bytes of a {type(data).__name__}")
    root = read_serialization(data, STORAGE)
    if not isinstance(root, STORAGES_OR_VIEWS):
        raise UnsafePickleError(f"refusing nested serialization holding a {type(root).__name__}, not a storage")
    return root


LOAD_FROM_BYTES = function("torch.storage", "_load_from_bytes", load_from_bytes,
                           "a storage: a nested torch serialization (legacy or zip format) of one storage")
