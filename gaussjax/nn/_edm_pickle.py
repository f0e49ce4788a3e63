"""`load_edm_pickle`: an NVlabs/edm snapshot pickle as a `NeuralDenoiser`, without torch and without running its code.

The pickle is read as data by `gaussjax.nn._torch_pickle` (a restricted unpickler that
refuses anything but tensors, storages, containers and EDM's persistent-object records).
From the network's record only its class name, constructor arguments, parameters and
buffers are used; they are mapped onto the Flax modules of `gaussjax.nn`:

- preconditioners `EDMPrecond`, `VPPrecond`, `VEPrecond`, `iDDPMPrecond`;
- networks `SongUNet` (DDPM++ and NCSN++, with its Fourier frequencies) and
  `DhariwalUNet` (ADM).

Anything else in the file (another class, an unknown constructor argument, a buffer or a
parameter gaussjax has no place for) is an error that names it. The network computes in
float32 whatever `use_fp16` says (EDM's fp16 path is a CUDA speed option).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from gaussjax.nn._denoiser import NeuralDenoiser
from gaussjax.nn._dhariwal import DhariwalUNet
from gaussjax.nn._precond import EDMPrecond, VEPrecond, VPPrecond, check_iddpm_u, iDDPMPrecond
from gaussjax.nn._torch_pickle import ModuleRecord, read_edm_pickle
from gaussjax.nn._torch_state import variables_from_state_dict
from gaussjax.nn._unet import SongUNet

PRECONDITIONERS = {cls.__name__: cls for cls in (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond)}
NETWORKS = {cls.__name__: cls for cls in (SongUNet, DhariwalUNet)}
# Constructor arguments of EDM's preconditioners that describe the wrapped network (or a CUDA option).
NETWORK_ARGUMENTS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "model_type")


def load_edm_pickle(path: str | os.PathLike, *, network: str = "ema") -> NeuralDenoiser:
    """Load a network from an NVlabs/edm snapshot pickle, as a denoiser.

    Reads `network-snapshot-*.pkl` files of EDM's `training_loop.py` and the released
    `edm-*.pkl` / `baseline-*.pkl` networks, without torch and without executing any code
    from the file (see `gaussjax.nn._torch_pickle`).

    Args:
        path: the `.pkl` file.
        network: the snapshot entry holding the network (EDM writes `'ema'`).

    Returns:
        A `NeuralDenoiser`: `denoise(x, sigma)` on flat `(..., D)` or image
        `(..., H, W, C)` queries, images in [-1, 1] as EDM's.

    Raises:
        UnsafePickleError: the file references anything outside the allow-list.
        ValueError: the file holds no `network`, or a class, argument, parameter or buffer
            that gaussjax cannot map (named in the message).
    """
    snapshot = read_edm_pickle(path)
    record = snapshot.get(network) if isinstance(snapshot, dict) else None
    if not isinstance(record, ModuleRecord):
        networks = sorted(key for key, value in snapshot.items() if isinstance(value, ModuleRecord)
                          and value.class_name.rsplit(".", 1)[-1] in PRECONDITIONERS) if isinstance(snapshot, dict) else []
        raise ValueError(f"{path}: no network {network!r} in the snapshot (networks: {networks}); pass `network=`")
    return denoiser_from_record(record, source=str(path))


def denoiser_from_record(record: ModuleRecord, *, source: str = "the snapshot") -> NeuralDenoiser:
    """The `NeuralDenoiser` of an EDM preconditioner record (see `load_edm_pickle`)."""
    precond_class = _lookup(PRECONDITIONERS, record, "preconditioner", source)
    model = record.modules.get("model")
    if not isinstance(model, ModuleRecord):
        raise ValueError(f"{source}: the {record.class_name} has no `model` network")
    net_class = _lookup(NETWORKS, model, "network", source)
    parameters, buffers = _flatten(record)

    net_kwargs = _arguments(model, net_class, source, ignore=())
    freqs = buffers.pop("model.map_noise.freqs", None)
    if freqs is not None:
        net_kwargs["fourier_freqs"] = tuple(np.asarray(freqs, np.float32).tolist())
    net = net_class(**net_kwargs)
    precond = precond_class(net=net, **_arguments(record, precond_class, source, ignore=_model_arguments(record)))
    _check_buffers(buffers, precond, source)

    c = net.in_channels
    x = jax.ShapeDtypeStruct((1, net.img_resolution, net.img_resolution, c), jnp.float32)
    labels = jax.ShapeDtypeStruct((1, net.label_dim), jnp.float32) if net.label_dim else None
    expected = jax.eval_shape(precond.init, jax.random.key(0), x, jnp.ones((1,)), labels)
    try:
        variables = variables_from_state_dict(parameters, expected)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return NeuralDenoiser(precond, jax.tree_util.tree_map(jnp.asarray, variables))


def _lookup(table: dict, record: ModuleRecord, what: str, source: str):
    name = record.class_name.rsplit(".", 1)[-1]
    if name not in table:
        raise ValueError(f"{source}: gaussjax has no {what} {record.class_name!r} (it maps {', '.join(table)})")
    return table[name]


def _model_arguments(record: ModuleRecord) -> tuple[str, ...]:
    """The preconditioner's arguments that it forwards to its network (EDM's `**model_kwargs`)."""
    model = record.modules["model"]
    return NETWORK_ARGUMENTS + tuple(model.init_kwargs)


def _arguments(record: ModuleRecord, cls, source: str, *, ignore) -> dict:
    """`record.init_kwargs` as keyword arguments of the Flax module `cls`; an unknown one is an error."""
    if record.init_args:
        raise ValueError(f"{source}: the {record.class_name} was built with positional arguments "
                         f"{record.init_args!r}; gaussjax reads keyword arguments only")
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "net"}
    kwargs, unknown = {}, []
    for key, value in record.init_kwargs.items():
        if key in ignore:
            continue
        if key not in fields:
            unknown.append(key)
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    if unknown:
        raise ValueError(f"{source}: {cls.__name__} argument(s) {', '.join(map(repr, unknown))} have no gaussjax "
                         "counterpart")
    return kwargs


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
    """Every buffer must be a constant the Flax module computes itself, with the same value."""
    for name, value in buffers.items():
        value = np.asarray(value, np.float64)
        if name == "u" and isinstance(precond, iDDPMPrecond):
            try:
                check_iddpm_u(value, precond.C_1, precond.C_2, precond.M)
            except ValueError as error:
                raise ValueError(f"{source}: buffer 'u': {error}") from None
        elif name.endswith(".resample_filter"):
            taps = np.asarray(getattr(precond.net, "resample_filter", (1, 1)), np.float64)
            expected = np.outer(taps, taps) / np.square(taps.sum())
            if value.reshape(-1).size != expected.size or not np.allclose(value.reshape(expected.shape), expected):
                raise ValueError(f"{source}: buffer {name!r} is not the resampling filter {tuple(taps)} of "
                                 f"the {type(precond.net).__name__}")
        else:
            raise ValueError(f"{source}: buffer {name!r} has no gaussjax counterpart")
