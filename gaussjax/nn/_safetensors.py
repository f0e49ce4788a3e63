"""A `NeuralDenoiser` as a safetensors file: its arrays and the configuration that rebuilds it, no pickles.

File layout (huggingface/safetensors): an unsigned 64-bit little-endian header length
`n`, then `n` bytes of a JSON header mapping each tensor name to `{"dtype", "shape",
"data_offsets": [begin, end]}` (byte offsets into the data that follows) plus a
`"__metadata__"` map of strings, then the tensors' raw little-endian bytes, back to back.

Tensor names are the dotted Flax variable paths (`params.net.enc_8x8_conv.kernel`).
`__metadata__["gaussjax"]` is a JSON string `{"format": "gaussjax.network/1",
"precond": {"class", "kwargs"}, "net": {"class", "kwargs"}, "image_shape": [H, W, C]}`,
plus `"class_labels"` for a denoiser with fixed class labels. Classes are resolved
through an allow-list, so loading a file never runs code named by the file; constructor
arguments too (`gaussjax.nn._stored_config`), and the network they describe must not need
more parameters than the file stores tensor elements, so a file's cost is linear in its size.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import reprlib
import struct
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from gaussjax._checks import check_choice
from gaussjax._errors import InputFileNotFoundError, InputTypeError, InputValueError
from gaussjax.nn._denoiser import NeuralDenoiser
from gaussjax.nn._stored_config import check_parameter_budget, constructor_arguments, stored_arguments

FORMAT = "gaussjax.network/1"
PRECOND_CLASSES = ("EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond", "GaussianEDMPrecond", "GaussianVPPrecond",
                   "GaussianVEPrecond", "GaussianiDDPMPrecond")
NET_CLASSES = ("SongUNet", "DhariwalUNet")
DTYPES = {name: np.dtype(dtype).newbyteorder("<")  # little-endian, whatever the host
          for name, dtype in (("F32", np.float32), ("F16", np.float16), ("BF16", ml_dtypes.bfloat16))}
STORAGE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
MAX_DIGITS = 40  # longer JSON integer literals are not converted (Python's int() is quadratic in the digits)


def module_config(module) -> dict:
    """`{"class", "kwargs"}` of a Flax module: its `constructor_arguments`; tuples as lists."""

    def plain(name, value):
        if isinstance(value, (tuple, list)):
            return [plain(name, v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise InputTypeError(f"field `{name}` of {type(module).__name__} is a {type(value).__name__}, "
                             "not storable as JSON")

    fields = constructor_arguments(type(module))
    return {"class": type(module).__name__, "kwargs": {name: plain(name, getattr(module, name)) for name in fields}}


def resolve_class(kind: str, name, allowed: tuple[str, ...], where: str):
    """The `gaussjax.nn` class called `name`, if it is in `allowed`; `ValueError` naming `where` otherwise."""
    if not isinstance(name, str) or name not in allowed:
        raise InputValueError(f"{where}: unknown {kind} class {reprlib.repr(name)}; expected one of "
                              f"{', '.join(allowed)}")
    cls = getattr(importlib.import_module("gaussjax.nn"), name, None)
    if cls is None:
        raise InputValueError(f"{where}: {kind} class {name!r} is not available in this version of gaussjax.nn")
    return cls


def _variables_by_name(variables) -> dict:
    """`{dotted path: leaf}` of a nested variables dict (`{'params': {...}}`), in sorted order."""
    flat = traverse_util.flatten_dict(variables)
    dotted = [key for key in flat if any("." in part for part in key)]
    if dotted:
        raise InputValueError(f"variable path {dotted[0]} has a '.' in a name; it cannot be a dotted tensor name")
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
        path: the file to write (replaced atomically: a uniquely named temporary file in the
            same directory is renamed over it, and removed if anything fails).
        denoiser: a `NeuralDenoiser` whose network classes are in `PRECOND_CLASSES` / `NET_CLASSES`.
        dtype: storage type of every variable: `"float32"`, `"float16"` or `"bfloat16"`
            (loading converts back to the network's float32).

    Returns:
        `path` as a `Path`. Raises `ValueError` if a variable overflows `dtype`.
    """
    if not isinstance(denoiser, NeuralDenoiser):
        raise InputTypeError(f"`denoiser` must be a NeuralDenoiser, got {type(denoiser).__name__}")
    check_choice("dtype", dtype, tuple(STORAGE))
    path, tag = Path(path), STORAGE[dtype]
    metadata = {"gaussjax": json.dumps(network_metadata(denoiser))}
    header: dict[str, Any]
    arrays, header, offset = [], {"__metadata__": metadata}, 0
    for name, leaf in _variables_by_name(denoiser.params).items():
        with np.errstate(over="ignore"):  # overflow is reported below, naming the variable
            array = np.ascontiguousarray(np.asarray(leaf).astype(DTYPES[tag]))
        if tag != "F32" and np.isinf(array.astype(np.float32)).any() and np.isfinite(np.asarray(leaf)).all():
            raise InputValueError(f"variable {name} overflows {dtype}; save it with dtype='float32'")
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # pad with spaces so the data starts 8-byte aligned
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(struct.pack("<Q", len(encoded)))
            file.write(encoded)
            for array in arrays:
                file.write(array.reshape(-1).view(np.uint8).data)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's file is private (0600); give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _LongInteger:
    """A JSON integer literal of more than `MAX_DIGITS` digits, left unconverted; every check refuses it."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer literal too long to read ({self.digits} digits)"


def _parse_int(text: str):
    return int(text) if len(text) <= MAX_DIGITS else _LongInteger(len(text.lstrip("-")))


def _parse_json(text, message: str):
    """`text` (str or bytes) parsed as JSON; a ValueError starting with `message` if it is not JSON or too deep."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise InputValueError(f"{message} (its JSON nests too deeply)") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise InputValueError(f"{message} (not JSON: {error})") from None


def read_header(file, size: int, where: str) -> tuple[dict, dict]:
    """`(tensors, metadata)` of an open safetensors file of `size` bytes, checked to tile its data exactly.

    `tensors` maps each name to `(dtype, shape, begin, end)` with offsets into the data.
    Raises `ValueError` naming `where` for anything malformed or truncated.
    """
    if size < 8:
        raise InputValueError(f"{where} is truncated: {size} bytes, not even the 8-byte header length")
    (length,) = struct.unpack("<Q", file.read(8))
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise InputValueError(f"{where} has a corrupt header: it declares {length} header bytes in a {size}-byte file")
    header = _parse_json(file.read(length), f"{where} has a corrupt header")
    if not isinstance(header, dict):
        raise InputValueError(f"{where} has a corrupt header: a JSON {type(header).__name__}, not an object")  # noqa: TRY004 (bad file contents)
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise InputValueError(f"{where}: `__metadata__` must map strings to strings")
    tensors = {name: _tensor_entry(name, entry, where) for name, entry in header.items()}
    end = 0
    for name, (_, _, begin, stop) in sorted(tensors.items(), key=lambda item: item[1][2:]):
        if begin != end:
            raise InputValueError(f"{where}: tensor {name} starts at byte {begin} of the data, expected {end}")
        end = stop
    if end != size - 8 - length:
        raise InputValueError(f"{where} is truncated or has trailing bytes: the header describes {end} data bytes, "
                              f"the file holds {size - 8 - length}")
    return tensors, metadata


def _tensor_entry(name: str, entry, where: str) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """One header entry as `(dtype, shape, begin, end)`, its byte span matching its dtype and shape."""
    if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("data_offsets"), list)
            and all(type(s) is int and s >= 0 for s in entry["shape"] + entry["data_offsets"])
            and len(entry["data_offsets"]) == 2):
        raise InputValueError(f"{where}: header entry of tensor {name} is malformed: {reprlib.repr(entry)}")
    if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in DTYPES:
        raise InputValueError(f"{where}: tensor {name} has dtype {reprlib.repr(entry.get('dtype'))}; supported: "
                              f"{', '.join(DTYPES)}")
    dtype, shape, (begin, end) = DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise InputValueError(f"{where}: tensor {name} spans bytes [{begin}, {end}), not the "
                              f"{math.prod(shape) * dtype.itemsize} of a {entry['dtype']} array of shape {shape}")
    return dtype, shape, begin, end


def parse_metadata(metadata: dict, where: str) -> dict:
    """The `gaussjax` metadata as a dict, checked for the format and the keys it must have."""
    if "gaussjax" not in metadata:
        raise InputValueError(f"{where} is not a gaussjax network: its `__metadata__` has no 'gaussjax' entry")
    config = _parse_json(metadata["gaussjax"], f"{where}: the 'gaussjax' metadata is malformed")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else config
        raise InputValueError(f"{where}: unknown network format {reprlib.repr(found)}; this gaussjax reads {FORMAT!r}")
    for key in ("precond", "net"):
        if not (isinstance(config.get(key), dict) and isinstance(config[key].get("kwargs"), dict)):
            raise InputValueError(  # noqa: TRY004 (bad file contents)
                f"{where}: the 'gaussjax' metadata needs {key!r}: {{'class': ..., 'kwargs': {{...}}}}")
    shape = config.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(s) is int and s > 0 for s in shape)):
        raise InputValueError(f"{where}: the 'gaussjax' metadata needs 'image_shape': [H, W, C] of positive integers, "
                              f"got {reprlib.repr(shape)}")
    if "class_labels" in config:
        config["class_labels"] = _class_labels(config["class_labels"], where)
    return config


def _class_labels(value, where: str) -> np.ndarray:
    """Stored class labels: a (nested) list of numbers as a float32 array (`NeuralDenoiser` checks the rest)."""
    try:
        labels = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, too deep for NumPy
        labels = None
    if labels is None or labels.ndim == 0 or labels.dtype.kind not in "iuf":
        raise InputValueError(f"{where}: 'class_labels' must be a list (or nested lists) of numbers, "
                              f"got {reprlib.repr(value)}")
    with np.errstate(over="ignore"):  # overflow to inf is refused as non-finite
        return labels.astype(np.float32)


def build_module(config: dict, where: str, stored: int):
    """The preconditioned network described by the `gaussjax` metadata, classes and arguments from the allow-lists.

    `stored` is the number of tensor elements in the file: a network that needs more
    parameters is refused before it is built (`check_parameter_budget`).
    """
    precond_cls = resolve_class("precond", config["precond"].get("class"), PRECOND_CLASSES, where)
    net_cls = resolve_class("net", config["net"].get("class"), NET_CLASSES, where)
    precond_kwargs = stored_arguments(precond_cls, config["precond"]["kwargs"], f"{where}: precond.kwargs")
    net_kwargs = stored_arguments(net_cls, config["net"]["kwargs"], f"{where}: net.kwargs")
    check_parameter_budget(net_cls, net_kwargs, stored, f"{where}: net.kwargs")
    try:
        return precond_cls(net=net_cls(**net_kwargs), **precond_kwargs)
    except (TypeError, ValueError) as error:
        raise InputValueError(f"{where}: the stored configuration does not build {precond_cls.__name__}"
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
        raise InputValueError(f"{where} lacks tensor {missing[0]} of the network ({len(missing)} missing)")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise InputValueError(f"{where} has tensor {extra[0]}, which the network does not have ({len(extra)} extra)")
    for name, spec in expected.items():
        if tensors[name][1] != spec.shape:
            raise InputValueError(f"{where}: tensor {name} has shape {tensors[name][1]}, the network expects "
                                  f"{spec.shape}")


def load_safetensors(path) -> NeuralDenoiser:
    """The `NeuralDenoiser` that `save_safetensors` wrote to `path`.

    The network is rebuilt from the stored configuration (classes only from
    `PRECOND_CLASSES` / `NET_CLASSES` in `gaussjax.nn`, constructor arguments only from
    their allow-list), every tensor's name and shape is checked against the variables the
    network's `init` makes, and float16/bfloat16 tensors are converted to the variables'
    dtype. The data is read from disk once. Time and memory are linear in the file's size.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming the file and the field or tensor: the file is truncated or
            malformed, is not a gaussjax network of format `FORMAT`, names an unknown or
            unavailable class or constructor argument, describes a network larger than its
            tensors, holds non-finite weights, class labels or `sigma_data`, or its tensors or
            `image_shape` do not match the network (missing, extra or wrongly shaped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"`path` {path} is not a file")
    where = str(path)
    with open(path, "rb") as file:
        tensors, metadata = read_header(file, path.stat().st_size, where)
        config = parse_metadata(metadata, where)
        module = build_module(config, where, stored=sum(math.prod(shape) for _, shape, _, _ in tensors.values()))
        net = module.net
        image_shape = (net.img_resolution, net.img_resolution, net.in_channels)
        if tuple(config["image_shape"]) != image_shape:
            raise InputValueError(f"{where}: 'image_shape' {config['image_shape']} is not the network's "
                                  f"(img_resolution, img_resolution, in_channels) = {list(image_shape)}")
        expected = expected_variables(module, image_shape)
        check_tensors(tensors, expected, where)
        data = np.fromfile(file, dtype=np.uint8)  # the one copy
    flat = {}
    for name, spec in expected.items():
        dtype, shape, begin, end = tensors[name]
        value = data[begin:end].view(dtype).reshape(shape).astype(spec.dtype)
        if not np.isfinite(value).all():
            raise InputValueError(f"{where}: tensor {name} holds NaN or infinite values")
        flat[tuple(name.split("."))] = jnp.asarray(value)
    try:
        return NeuralDenoiser(module=module, params=traverse_util.unflatten_dict(flat), image_shape=image_shape,
                              class_labels=config.get("class_labels"))
    except ValueError as error:  # the class labels
        raise InputValueError(f"{where}: {error}") from None
