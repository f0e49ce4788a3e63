"""A `NeuralDenoiser` as a safetensors file: its arrays and the configuration that rebuilds it, no pickles.

File layout (huggingface/safetensors): an unsigned 64-bit little-endian header length
`n`, then `n` bytes of a JSON header mapping each tensor name to `{"dtype", "shape",
"data_offsets": [begin, end]}` (byte offsets into the data that follows) plus a
`"__metadata__"` map of strings, then the tensors' raw little-endian bytes, back to back.

Tensor names are the dotted Flax variable paths (`params.net.enc_8x8_conv.kernel`).
`__metadata__["gaussjax"]` is a JSON string `{"format": "gaussjax.network/1",
"precond": {"class", "kwargs"}, "net": {"class", "kwargs"}, "image_shape": [H, W, C]}`,
plus `"class_labels"` for a denoiser with fixed class labels. Classes are resolved
through an allow-list, so loading a file never runs code named by the file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from gaussjax._checks import check_choice
from gaussjax.nn._denoiser import NeuralDenoiser

FORMAT = "gaussjax.network/1"
PRECOND_CLASSES = ("EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond")
NET_CLASSES = ("SongUNet", "DhariwalUNet")
DTYPES = {name: np.dtype(dtype).newbyteorder("<")  # little-endian, whatever the host
          for name, dtype in (("F32", np.float32), ("F16", np.float16), ("BF16", ml_dtypes.bfloat16))}
STORAGE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_NOT_CONFIG = ("parent", "name", "net")  # Flax bookkeeping fields, and the sub-module stored on its own


def module_config(module) -> dict:
    """`{"class", "kwargs"}` of a Flax module: every dataclass field but `parent`, `name`, `net`; tuples as lists."""

    def plain(name, value):
        if isinstance(value, (tuple, list)):
            return [plain(name, v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"field `{name}` of {type(module).__name__} is a {type(value).__name__}, not storable as JSON")

    fields = (f.name for f in dataclasses.fields(module) if f.name not in _NOT_CONFIG)
    return {"class": type(module).__name__, "kwargs": {name: plain(name, getattr(module, name)) for name in fields}}


def _as_tuples(value):
    """JSON lists back to the tuples Flax module fields hold (nested lists too)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def resolve_class(kind: str, name, allowed: tuple[str, ...], where: str):
    """The `gaussjax.nn` class called `name`, if it is in `allowed`; `ValueError` naming `where` otherwise."""
    if name not in allowed:
        raise ValueError(f"{where}: unknown {kind} class {name!r}; expected one of {', '.join(allowed)}")
    cls = getattr(importlib.import_module("gaussjax.nn"), name, None)
    if cls is None:
        raise ValueError(f"{where}: {kind} class {name!r} is not available in this version of gaussjax.nn")
    return cls


def _variables_by_name(variables) -> dict:
    """`{dotted path: leaf}` of a nested variables dict (`{'params': {...}}`), in sorted order."""
    flat = traverse_util.flatten_dict(variables)
    dotted = [key for key in flat if any("." in part for part in key)]
    if dotted:
        raise ValueError(f"variable path {dotted[0]} has a '.' in a name; it cannot be a dotted tensor name")
    return {".".join(key): flat[key] for key in sorted(flat)}


def network_metadata(denoiser: NeuralDenoiser) -> dict:
    """The `gaussjax` metadata of `denoiser` (see the module docstring), checked against the allow-lists."""
    precond, net = module_config(denoiser.module), module_config(denoiser.module.net)
    resolve_class("precond", precond["class"], PRECOND_CLASSES, "`denoiser`")
    resolve_class("net", net["class"], NET_CLASSES, "`denoiser`")
    metadata = {"format": FORMAT, "precond": precond, "net": net, "image_shape": list(denoiser.image_shape)}
    if denoiser.class_labels is not None:
        metadata["class_labels"] = np.asarray(denoiser.class_labels, np.float32).tolist()
    return metadata


def save_safetensors(path, denoiser: NeuralDenoiser, *, dtype: str = "float32") -> Path:
    """Write `denoiser` (network config, image shape, class labels and variables) to a safetensors file.

    Args:
        path: the file to write (replaced atomically: a temporary file is renamed over it).
        denoiser: a `NeuralDenoiser` whose network classes are in `PRECOND_CLASSES` / `NET_CLASSES`.
        dtype: storage type of every variable: `"float32"`, `"float16"` or `"bfloat16"`
            (loading converts back to the network's float32).

    Returns:
        `path` as a `Path`. Raises `ValueError` if a variable overflows `dtype`.
    """
    if not isinstance(denoiser, NeuralDenoiser):
        raise TypeError(f"`denoiser` must be a NeuralDenoiser, got {type(denoiser).__name__}")
    check_choice("dtype", dtype, tuple(STORAGE))
    path, tag = Path(path), STORAGE[dtype]
    metadata = {"gaussjax": json.dumps(network_metadata(denoiser))}
    arrays, header, offset = [], {"__metadata__": metadata}, 0
    for name, leaf in _variables_by_name(denoiser.params).items():
        with np.errstate(over="ignore"):  # overflow is reported below, naming the variable
            array = np.ascontiguousarray(np.asarray(leaf).astype(DTYPES[tag]))
        if tag != "F32" and np.isinf(array.astype(np.float32)).any() and np.isfinite(np.asarray(leaf)).all():
            raise ValueError(f"variable {name} overflows {dtype}; save it with dtype='float32'")
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # pad with spaces so the data starts 8-byte aligned
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for array in arrays:
            file.write(array.reshape(-1).view(np.uint8))
    os.replace(temporary, path)
    return path


def read_header(file, size: int, where: str) -> tuple[dict, dict]:
    """`(tensors, metadata)` of an open safetensors file of `size` bytes, checked to tile its data exactly.

    `tensors` maps each name to `(dtype, shape, begin, end)` with offsets into the data.
    Raises `ValueError` naming `where` for anything malformed or truncated.
    """
    if size < 8:
        raise ValueError(f"{where} is truncated: {size} bytes, not even the 8-byte header length")
    (length,) = struct.unpack("<Q", file.read(8))
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{where} has a corrupt header: it declares {length} header bytes in a {size}-byte file")
    try:
        header = json.loads(file.read(length))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where} has a corrupt header (not JSON): {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where} has a corrupt header: a JSON {type(header).__name__}, not an object")  # noqa: TRY004 (bad file contents)
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{where}: `__metadata__` must map strings to strings")
    tensors = {name: _tensor_entry(name, entry, where) for name, entry in header.items()}
    end = 0
    for name, (_, _, begin, stop) in sorted(tensors.items(), key=lambda item: item[1][2:]):
        if begin != end:
            raise ValueError(f"{where}: tensor {name} starts at byte {begin} of the data, expected {end}")
        end = stop
    if end != size - 8 - length:
        raise ValueError(f"{where} is truncated or has trailing bytes: the header describes {end} data bytes, "
                         f"the file holds {size - 8 - length}")
    return tensors, metadata


def _tensor_entry(name: str, entry, where: str) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """One header entry as `(dtype, shape, begin, end)`, its byte span matching its dtype and shape."""
    if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)
            and all(type(s) is int and s >= 0 for s in entry["shape"] + entry["data_offsets"])
            and len(entry["data_offsets"]) == 2):
        raise ValueError(f"{where}: header entry of tensor {name} is malformed: {str(entry)[:200]}")
    if entry.get("dtype") not in DTYPES:
        raise ValueError(f"{where}: tensor {name} has dtype {entry.get('dtype')!r}; supported: {', '.join(DTYPES)}")
    dtype, shape, (begin, end) = DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{where}: tensor {name} spans bytes [{begin}, {end}), not the "
                         f"{int(np.prod(shape)) * dtype.itemsize} of a {entry['dtype']} array of shape {shape}")
    return dtype, shape, begin, end


def parse_metadata(metadata: dict, where: str) -> dict:
    """The `gaussjax` metadata as a dict, checked for the format and the keys it must have."""
    if "gaussjax" not in metadata:
        raise ValueError(f"{where} is not a gaussjax network: its `__metadata__` has no 'gaussjax' entry")
    try:
        config = json.loads(metadata["gaussjax"])
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: the 'gaussjax' metadata is not JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else config
        raise ValueError(f"{where}: unknown network format {found!r}; this gaussjax reads {FORMAT!r}")
    for key in ("precond", "net"):
        if not (isinstance(config.get(key), dict) and isinstance(config[key].get("kwargs"), dict)):
            raise ValueError(  # noqa: TRY004 (bad file contents)
                f"{where}: the 'gaussjax' metadata needs {key!r}: {{'class': ..., 'kwargs': {{...}}}}")
    shape = config.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(s) is int and s > 0 for s in shape)):
        raise ValueError(f"{where}: the 'gaussjax' metadata needs 'image_shape': [H, W, C]")
    return config


def build_module(config: dict, where: str):
    """The preconditioned network described by the `gaussjax` metadata, classes from the allow-lists."""
    precond_cls = resolve_class("precond", config["precond"].get("class"), PRECOND_CLASSES, where)
    net_cls = resolve_class("net", config["net"].get("class"), NET_CLASSES, where)
    kwargs = {key: {k: _as_tuples(v) for k, v in config[key]["kwargs"].items()} for key in ("precond", "net")}
    try:
        return precond_cls(net=net_cls(**kwargs["net"]), **kwargs["precond"])
    except TypeError as error:
        raise ValueError(f"{where}: the stored configuration does not build {precond_cls.__name__}"
                         f"({net_cls.__name__}): {error}") from None


def expected_variables(module, image_shape) -> dict:
    """`{dotted path: jax.ShapeDtypeStruct}` of the variables `module.init` makes (nothing is computed)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    sigma = jax.ShapeDtypeStruct((1,), jnp.float32)
    return _variables_by_name(jax.eval_shape(module.init, jax.random.key(0), x, sigma))


def check_tensors(tensors: dict, expected: dict, where: str) -> None:
    """Raise `ValueError` naming the first missing, extra or wrongly shaped tensor."""
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise ValueError(f"{where} lacks tensor {missing[0]} of the network ({len(missing)} missing)")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(f"{where} has tensor {extra[0]}, which the network does not have ({len(extra)} extra)")
    for name, spec in expected.items():
        if tensors[name][1] != spec.shape:
            raise ValueError(f"{where}: tensor {name} has shape {tensors[name][1]}, the network expects {spec.shape}")


def load_safetensors(path) -> NeuralDenoiser:
    """The `NeuralDenoiser` that `save_safetensors` wrote to `path`.

    The network is rebuilt from the stored configuration (classes only from
    `PRECOND_CLASSES` / `NET_CLASSES` in `gaussjax.nn`), every tensor's name and shape is
    checked against the variables the network's `init` makes, and float16/bfloat16
    tensors are converted to the variables' dtype. The data is read from disk once.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is truncated or malformed, is not a gaussjax network of
            format `FORMAT`, names an unknown or unavailable class, or its tensors do not
            match the network (missing, extra or wrongly shaped: the error names the tensor).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {path} is not a file")
    where = str(path)
    with open(path, "rb") as file:
        tensors, metadata = read_header(file, path.stat().st_size, where)
        config = parse_metadata(metadata, where)
        module = build_module(config, where)
        expected = expected_variables(module, tuple(config["image_shape"]))
        check_tensors(tensors, expected, where)
        data = np.fromfile(file, dtype=np.uint8)  # the one copy
    flat = {}
    for name, spec in expected.items():
        dtype, shape, begin, end = tensors[name]
        flat[tuple(name.split("."))] = jnp.asarray(data[begin:end].view(dtype).reshape(shape), spec.dtype)
    labels = config.get("class_labels")
    return NeuralDenoiser(module=module, params=traverse_util.unflatten_dict(flat),
                          image_shape=tuple(config["image_shape"]), class_labels=labels)
