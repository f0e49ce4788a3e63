"""`load_edm_pickle`: an NVlabs/edm snapshot pickle as a `NeuralDenoiser`, without torch and without running its code.

The pickle is read as data by `gaussjax._torch` (a restricted unpickler that
refuses anything but tensors, storages, containers and EDM's persistent-object records).
From the network's record only its class name, constructor arguments, parameters and
buffers are used; they are mapped onto the Flax modules of `gaussjax.nn`:

- preconditioners `EDMPrecond`, `VPPrecond`, `VEPrecond`, `iDDPMPrecond`;
- networks `SongUNet` (DDPM++ and NCSN++, with its Fourier frequencies) and
  `DhariwalUNet` (ADM).

Anything else in the file (another class, an unknown constructor argument, a buffer or a
parameter gaussjax has no place for) is an error that names it. The network computes in
float32 whatever `use_fp16` says (EDM's fp16 path is a CUDA speed option).

The cost is linear in the file's size: the constructor arguments are checked
(`gaussjax.nn._stored_config`) and the network must not need more parameters than the file
stores elements before anything is built, and no tensor is converted before its shape is
known to be the one the network expects.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._errors import InputValueError
from gaussjax._torch import ModuleRecord, describe, read_edm_pickle, variables_from_state_dict
from gaussjax.nn._denoiser import NeuralDenoiser
from gaussjax.nn._dhariwal import DhariwalUNet
from gaussjax.nn._precond import EDMPrecond, VEPrecond, VPPrecond, check_iddpm_u, iDDPMPrecond
from gaussjax.nn._stored_config import check_parameter_budget, stored_arguments
from gaussjax.nn._unet import SongUNet

PRECONDITIONERS = {cls.__name__: cls for cls in (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond)}
NETWORKS = {cls.__name__: cls for cls in (SongUNet, DhariwalUNet)}
# Constructor arguments of EDM's preconditioners that describe the wrapped network (or a CUDA option).
NETWORK_ARGUMENTS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "model_type")
FREQS = "model.map_noise.freqs"  # NCSN++'s Fourier frequencies: `SongUNet.fourier_freqs`


def load_edm_pickle(path: str | os.PathLike, *, network: str = "ema") -> NeuralDenoiser:
    """Load a network from an NVlabs/edm snapshot pickle, as a denoiser.

    Reads `network-snapshot-*.pkl` files of EDM's `training_loop.py` and the released
    `edm-*.pkl` / `baseline-*.pkl` networks, without torch and without executing any code
    from the file (see `gaussjax._torch`).

    Args:
        path: the `.pkl` file.
        network: the snapshot entry holding the network (EDM writes `'ema'`).

    Returns:
        A `NeuralDenoiser`: `denoise(x, sigma)` on flat `(..., D)` or image
        `(..., H, W, C)` queries, images in [-1, 1] as EDM's.

    Raises:
        UnsafePickleError: the file references anything outside the allow-list.
        ValueError: naming the file and what is wrong: the file holds no `network`, or a
            class, argument, parameter or buffer that gaussjax cannot map, an argument out
            of range (e.g. a non-finite `sigma_data`), a network larger than the elements
            the file stores (or tensors that are views repeating elements), or non-finite
            weights.
    """
    snapshot = read_edm_pickle(path)
    record = snapshot.get(network) if isinstance(snapshot, dict) else None
    if not isinstance(record, ModuleRecord):
        networks = [] if not isinstance(snapshot, dict) else sorted(
            key for key, value in snapshot.items()
            if isinstance(value, ModuleRecord) and value.class_name.rsplit(".", 1)[-1] in PRECONDITIONERS)
        raise InputValueError(f"{path}: no network {network!r} in the snapshot (networks: {networks}); pass `network=`")
    return denoiser_from_record(record, source=str(path))


def denoiser_from_record(record: ModuleRecord, *, source: str = "the snapshot") -> NeuralDenoiser:
    """The `NeuralDenoiser` of an EDM preconditioner record (see `load_edm_pickle`)."""
    precond_class = _lookup(PRECONDITIONERS, record, "preconditioner", source)
    model = record.modules.get("model")
    if not isinstance(model, ModuleRecord):
        raise InputValueError(f"{source}: the {record.class_name} has no `model` network")
    net_class = _lookup(NETWORKS, model, "network", source)
    parameters, buffers = _flatten(record)
    precond_where, net_where = f"{source}: {record.class_name}", f"{source}: {record.class_name}.model"

    net_kwargs = _arguments(model, net_class, net_where, ignore=())
    precond_kwargs = _arguments(record, precond_class, precond_where, ignore=_model_arguments(record))
    check_parameter_budget(net_class, net_kwargs, _stored_elements(parameters, source), net_where)
    net = _build(net_class, net_kwargs, net_where)
    freqs = buffers.pop(FREQS, None)
    if freqs is not None:
        net = _build(net_class, {**net_kwargs, "fourier_freqs": _fourier_freqs(freqs, net, source)}, net_where)
    precond = _build(precond_class, {"net": net, **precond_kwargs}, precond_where)
    _check_buffers(buffers, precond, source)

    c = net.in_channels
    x = jax.ShapeDtypeStruct((1, net.img_resolution, net.img_resolution, c), jnp.float32)
    labels = jax.ShapeDtypeStruct((1, net.label_dim), jnp.float32) if net.label_dim else None
    expected = jax.eval_shape(precond.init, jax.random.key(0), x, jnp.ones((1,)), labels)
    try:
        variables = variables_from_state_dict(parameters, expected)
    except ValueError as error:
        raise InputValueError(f"{source}: {error}") from None
    return NeuralDenoiser(precond, jax.tree_util.tree_map(jnp.asarray, variables))


def _lookup(table: dict, record: ModuleRecord, what: str, source: str):
    name = record.class_name.rsplit(".", 1)[-1]
    if name not in table:
        raise InputValueError(f"{source}: gaussjax has no {what} {record.class_name!r} (it maps {', '.join(table)})")
    return table[name]


def _model_arguments(record: ModuleRecord) -> tuple[str, ...]:
    """The preconditioner's arguments that it forwards to its network (EDM's `**model_kwargs`)."""
    model = record.modules["model"]
    return NETWORK_ARGUMENTS + tuple(model.init_kwargs)


def _arguments(record: ModuleRecord, cls, where: str, *, ignore) -> dict:
    """`record.init_kwargs` but those in `ignore`, checked as keyword arguments of the Flax module `cls`."""
    if record.init_args:
        raise InputValueError(f"{where} was built with positional arguments {describe(record.init_args)}; gaussjax "
                              "reads keyword arguments only")
    return stored_arguments(cls, {k: v for k, v in record.init_kwargs.items() if k not in ignore}, where)


def _build(cls, kwargs: dict, where: str):
    """`cls(**kwargs)`; its TypeError or ValueError (naming the argument) as a ValueError naming `where`."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InputValueError(f"{where}: {error}") from None


def _stored_elements(parameters: dict, source: str) -> int:
    """The number of elements of the parameters, once they are known to be distinct elements of the file.

    A tensor is a strided view of a storage, so a stride-0 view, or tensors viewing the same
    storage, make a few stored bytes stand for any number of elements. The parameters' bytes
    must not exceed the bytes of memory their views span together (EDM's networks, one
    storage per parameter, meet this with equality).
    """
    arrays = [array for array in parameters.values() if array.size]
    covered = reach = 0
    for low, high in sorted(map(_byte_span, arrays)):
        covered += max(0, high - max(low, reach))
        reach = max(reach, high)
    nbytes = sum(array.nbytes for array in arrays)
    if nbytes > covered:
        raise InputValueError(f"{source}: the parameters hold {nbytes} bytes of elements in {covered} bytes of "
                              "storage: tensors that repeat elements (stride-0 or overlapping views) are refused")
    return sum(array.size for array in arrays)


def _byte_span(array: np.ndarray) -> tuple[int, int]:
    """`(low, high)`: the addresses of the bytes between a non-empty array's first and last elements."""
    start = array.__array_interface__["data"][0]
    extents = [(n - 1) * stride for n, stride in zip(array.shape, array.strides, strict=True)]
    return start + sum(min(e, 0) for e in extents), start + sum(max(e, 0) for e in extents) + array.itemsize


def _fourier_freqs(value: np.ndarray, net, source: str) -> tuple[float, ...]:
    """The buffer `FREQS` as `SongUNet.fourier_freqs`: its shape checked before it is converted, then its values."""
    if not (isinstance(net, SongUNet) and net.embedding_type == "fourier"):
        raise InputValueError(f"{source}: buffer {FREQS!r} has no gaussjax counterpart: "
                              f"the {type(net).__name__} has no Fourier embedding")
    expected = (net.noise_channels // 2,)
    if value.shape != expected:
        raise InputValueError(f"{source}: buffer {FREQS!r} has shape {value.shape}; the network's Fourier embedding "
                              f"takes model_channels * channel_mult_noise / 2 = {expected[0]} frequencies")
    with np.errstate(over="ignore"):  # overflow to inf is refused below
        freqs = np.asarray(value, np.float32)
    if not np.isfinite(freqs).all():
        raise InputValueError(f"{source}: buffer {FREQS!r} holds NaN or infinite frequencies")
    return tuple(freqs.tolist())


def _flatten(record: ModuleRecord, prefix: str = "") -> tuple[dict, dict]:
    """Dotted names -> arrays of the record's parameters and of its (persistent) buffers."""
    parameters, buffers = {}, {}
    for name, value in record.parameters.items():
        if value is not None:
            parameters[prefix + name] = value
    for name, value in record.buffers.items():
        if value is not None and name not in record.non_persistent_buffers:
            buffers[prefix + name] = value
    for name, module in record.modules.items():
        if module is not None:
            p, b = _flatten(module, f"{prefix}{name}.")
            parameters.update(p)
            buffers.update(b)
    return parameters, buffers


def _check_buffers(buffers: dict, precond, source: str) -> None:
    """Every buffer must be a constant the Flax module computes itself, with the same size, then the same value."""
    for name, value in buffers.items():
        if name == "u" and isinstance(precond, iDDPMPrecond):
            try:
                check_iddpm_u(value, precond.C_1, precond.C_2, int(precond.M))
            except ValueError as error:
                raise InputValueError(f"{source}: buffer 'u': {error}") from None
        elif name.endswith(".resample_filter"):
            taps = np.asarray(getattr(precond.net, "resample_filter", (1, 1)), np.float64)
            expected = np.outer(taps, taps) / np.square(taps.sum())
            if value.size != expected.size or not np.allclose(np.asarray(value, np.float64).reshape(expected.shape),
                                                              expected):
                raise InputValueError(f"{source}: buffer {name!r} is not the resampling filter {tuple(taps)} of "
                                      f"the {type(precond.net).__name__}")
        else:
            raise InputValueError(f"{source}: buffer {name!r} has no gaussjax counterpart")
