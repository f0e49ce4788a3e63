"""Torch state dicts as Flax variables: one mapping, with each network family's module names passed in.

A Flax variable ``(collection, *modules, leaf)`` is the torch entry ``<torch modules>.<torch leaf>``:

=========================  ==========================  ====================================================
Flax ``collection/leaf``   torch leaf                  layout (torch -> Flax)
=========================  ==========================  ====================================================
``params/kernel``          ``weight``                  linear ``(out, in) -> (in, out)``; convolution
                                                       ``(out, in, kh, kw) -> (kh, kw, in, out)``
``params/scale``           ``weight`` (normalization)  ``(C,)``
``params/bias``            ``bias``                    ``(C,)``
``batch_stats/mean``       ``running_mean``            ``(C,)``
``batch_stats/var``        ``running_var``             ``(C,)``
=========================  ==========================  ====================================================

and the module path is renamed by the family's :class:`Naming`: :data:`EDM` (gaussjax's U-Nets and
preconditioners keep EDM's attribute names: ``net`` is the preconditioner's ``model``, and ``enc_<name>`` /
``dec_<name>`` are the entries ``enc.<name>`` / ``dec.<name>`` of EDM's ``ModuleDict``s) or :data:`INCEPTION`
(torchvision's ``Inception3`` names unchanged, dotted in torch and split in Flax; the classifier ``fc.*`` and
BatchNorm's ``*.num_batches_tracked`` counters are skipped).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import jax
import ml_dtypes
import numpy as np

from gaussjax._errors import InputTypeError, InputValueError

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_SHOWN = 8  # entries an error lists per kind of problem


@dataclasses.dataclass(frozen=True)
class Naming:
    """How a family of torch networks names the variables of its Flax counterpart.

    Attributes:
        weights: what a fitting state dict holds, for errors (``"FID's Inception weights"``).
        model: the Flax side, for errors (``"Inception"``: "entries with no Inception variable").
        torch_modules: Flax module path -> torch module path (both tuples of names).
        ignored: a regular expression of the torch entries that have no Flax variable and are skipped.
        checks: Flax leaf name -> ``(label, check)``: an entry whose float32 value fails ``check`` is listed
            under ``label``.
    """

    weights: str
    model: str
    torch_modules: Callable[[tuple[str, ...]], tuple[str, ...]]
    ignored: str = ""
    checks: Mapping[str, tuple[str, Callable[[np.ndarray], bool]]] = dataclasses.field(default_factory=dict)


def _edm_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """EDM's module path of a gaussjax one: ``net`` -> ``model`` first, then ``enc_<name>`` -> ``enc``, ``<name>``."""
    path = ["model" if i == 0 and name == "net" else name for i, name in enumerate(modules)]
    for i, name in enumerate(path):
        head, underscore, entry = name.partition("_")
        if head in ("enc", "dec") and underscore:
            path[i:i + 1] = [head, entry]
            break
    return tuple(path)


EDM = Naming("the network's weights", "gaussjax", _edm_modules)
INCEPTION = Naming("FID's Inception weights", "Inception", lambda modules: modules,
                   ignored=r"fc\.(weight|bias)|.*\.num_batches_tracked",
                   checks={"var": ("running variances with negative values", lambda var: bool((var >= 0).all()))})


def torch_shapes(expected: Mapping, naming: Naming) -> dict[str, tuple[int, ...]]:
    """torch name -> torch shape of every variable of ``expected`` (the module's variables or their shapes)."""
    return {name: _torch_shape(path[-1], shape) for name, (path, shape) in _table(expected, naming).items()}


def variables_from_torch(state: Mapping[str, np.ndarray], expected: Mapping, naming: Naming, *,
                         source: str = "the state dict") -> dict:
    """Flax variables of float32 NumPy arrays from torch entries, checked against ``expected``.

    Args:
        state: torch name -> array (torch layout, any float dtype).
        expected: the module's variables or their shapes (``jax.eval_shape(module.init, ...)``), e.g.
            ``{'params': ..., 'batch_stats': ...}``.
        naming: the network family's names.
        source: how the error message names where ``state`` came from.

    Returns:
        The tree of ``expected``, each leaf the float32 value of its torch entry in Flax's layout.

    Raises:
        TypeError: ``state`` is not a mapping.
        ValueError: ``source does not hold <naming.weights>``, listing every entry without a Flax variable
            (other than the ignored ones), every variable without an entry, every shape that differs, every
            entry that is not a float array, every entry with NaN or infinite values in float32 and every
            entry failing one of ``naming.checks``. An entry is converted only once its shape is known to fit.
    """
    if not isinstance(state, Mapping):
        raise InputTypeError(f"state must be a mapping of torch names to arrays, got {type(state).__name__}")
    table = _table(expected, naming)
    problems: dict[str, list[str]] = {f"entries with no {naming.model} variable": [], "missing entries": [],
                                      "shapes that differ": [], "entries that are not float arrays": [],
                                      "entries with NaN or infinite values": []}
    problems.update((label, []) for label, _ in naming.checks.values())
    variables: dict = {}
    for name, value in state.items():
        if type(name) is str and naming.ignored and re.fullmatch(naming.ignored, name):
            continue
        if name not in table:
            problems[f"entries with no {naming.model} variable"].append(name if type(name) is str else repr(name))
            continue
        path, flax_shape = table[name]
        value = np.asarray(value)
        if not (np.issubdtype(value.dtype, np.floating) or value.dtype == ml_dtypes.bfloat16):
            problems["entries that are not float arrays"].append(f"{name} ({value.dtype})")
            continue
        torch_shape = _torch_shape(path[-1], flax_shape)
        if value.shape != torch_shape:
            problems["shapes that differ"].append(f"{name} {value.shape}, expected {torch_shape}")
            continue
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            value = np.asarray(_flax_layout(path[-1], value), np.float32)
        label, check = naming.checks.get(path[-1], ("", None))
        if not np.isfinite(value).all():
            problems["entries with NaN or infinite values"].append(name)
        elif check is not None and not check(value):
            problems[label].append(name)
        node = variables
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    problems["missing entries"] = [name for name in table if name not in state]
    listed = [f"{label}: {', '.join(names[:_SHOWN])}" + (f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN
                                                            else "") for label, names in problems.items() if names]
    if listed:
        raise InputValueError(f"{source} does not hold {naming.weights}: " + "; ".join(listed))
    return variables


def _table(expected: Mapping, naming: Naming) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """torch name -> (Flax path, Flax shape) for every leaf of ``expected``."""
    table: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(dict(expected)):
        keys = tuple(k.key for k in path)
        collection, *modules, name = keys
        torch_leaf = _TORCH_LEAF.get((collection, name))
        if torch_leaf is None or not modules:
            raise InputValueError(f"Flax variable {'/'.join(keys)} has no torch counterpart")
        torch_name = ".".join((*naming.torch_modules(tuple(modules)), torch_leaf))
        if torch_name in table:
            raise InputValueError(f"Flax variables {'/'.join(table[torch_name][0])} and {'/'.join(keys)} are both the "
                                  f"torch entry {torch_name}")
        table[torch_name] = (keys, tuple(leaf.shape))
    return table


def _torch_shape(leaf: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a Flax variable: kernels ``(in, out) -> (out, in)``, ``(kh, kw, in, out) -> (out, in, kh,
    kw)``."""
    if leaf == "kernel" and len(flax_shape) == 2:
        return flax_shape[::-1]
    if leaf == "kernel" and len(flax_shape) == 4:
        kh, kw, c_in, c_out = flax_shape
        return (c_out, c_in, kh, kw)
    return flax_shape


def _flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """``value`` (torch layout) in Flax's: the inverse of :func:`_torch_shape`'s transposition."""
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], expected) -> dict:
    """``{'params': ...}`` of an EDM network (gaussjax's U-Nets and preconditioners) from its torch state dict.

    Args:
        state_dict: dotted name -> array (parameters only; remove buffers first), as
            ``torch.nn.Module.state_dict()`` or ``ModuleRecord.state_dict()`` names them.
        expected: the module's variables or their shapes (``jax.eval_shape(module.init, ...)``),
            ``{'params': ...}``.

    Raises:
        ValueError: as :func:`variables_from_torch` with :data:`EDM`.
    """
    return variables_from_torch(state_dict, expected, EDM)


def inception_shapes(expected: Mapping) -> dict[str, tuple[int, ...]]:
    """:func:`torch_shapes` of FID's Inception (``fc.*`` and ``*.num_batches_tracked`` left out)."""
    return torch_shapes(expected, INCEPTION)


def inception_variables(state: Mapping[str, np.ndarray], expected: Mapping, *, source: str = "the state dict") -> dict:
    """``{'params': ..., 'batch_stats': ...}`` of FID's Inception: :func:`variables_from_torch` with
    :data:`INCEPTION`."""
    return variables_from_torch(state, expected, INCEPTION, source=source)
