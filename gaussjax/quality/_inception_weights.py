"""FID Inception weights: torchvision `Inception3` state-dict entries <-> Flax variables of `InceptionV3`.

Every weight of the network sits in a `BasicConv2d` (`<path>.conv`, `<path>.bn`); its torch
entries map one to one onto Flax variables at the same path:

=================================  ============================================  =====================
torch entry                        Flax variable                                 layout
=================================  ============================================  =====================
`<path>.conv.weight`               `params/<path>/conv/kernel`                   `(O, I, kh, kw)` ->
                                                                                 `(kh, kw, I, O)`
`<path>.bn.weight`, `.bn.bias`     `params/<path>/bn/scale`, `.../bn/bias`       `(C,)`
`<path>.bn.running_mean`, `_var`   `batch_stats/<path>/bn/mean`, `.../bn/var`    `(C,)`
=================================  ============================================  =====================

`<path>` is dotted in torch (`Mixed_6b.branch7x7_2`) and split in Flax. The classifier
(`fc.weight`, `fc.bias`: FID uses the features before it) and BatchNorm's
`num_batches_tracked` counters are ignored; any other entry without a Flax variable is an
error, as is a missing entry, a shape that differs, a value that is not finite in float32
and a negative running variance.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

# Flax (collection, leaf name) <-> torch leaf name.
_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
IGNORED = ("fc.weight", "fc.bias")  # the 1008-way classifier of the TensorFlow graph
IGNORED_SUFFIX = ".num_batches_tracked"


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:  # conv kernel (kh, kw, I, O) -> (O, I, kh, kw)
        kh, kw, c_in, c_out = flax_shape
        return (c_out, c_in, kh, kw)
    return tuple(flax_shape)


def _table(expected: Mapping) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """torch name -> (collection, Flax path, Flax shape) for every leaf of `expected`."""
    table = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(dict(expected)):
        collection, *modules, name = (k.key for k in path)
        torch_leaf = _TORCH_LEAF.get((collection, name))
        if torch_leaf is None or not modules:
            raise ValueError(f"Flax variable {collection}/{'/'.join((*modules, name))} has no torch counterpart")
        table[".".join((*modules, torch_leaf))] = (collection, tuple(modules) + (name,), tuple(leaf.shape))
    return table


def torch_shapes(expected: Mapping) -> dict[str, tuple[int, ...]]:
    """torch name -> torch shape of every variable of `expected` (`{'params', 'batch_stats'}` or their shapes)."""
    return {name: _torch_shape(shape) for name, (_, _, shape) in _table(expected).items()}


def variables_from_torch(state: Mapping[str, np.ndarray], expected: Mapping, *,
                         source: str = "the state dict") -> dict:
    """`{'params': ..., 'batch_stats': ...}` of float32 NumPy arrays from torch entries, checked against `expected`.

    Args:
        state: torch name -> array (torch layout, any float dtype).
        expected: the module's variables or their shapes (`jax.eval_shape(module.init, ...)`).
        source: how the error message names where `state` came from.

    Raises:
        ValueError: listing every entry without a Flax variable (other than `fc.*` and
            `*.num_batches_tracked`), every variable without an entry, every shape that
            differs, every entry that is not a float array, every entry with NaN or infinite
            values in float32 and every `running_var` with a negative value. An entry is
            converted only once its shape is known to fit.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of torch names to arrays, got {type(state).__name__}")
    table = _table(expected)
    variables: dict = {}
    unknown, mismatched, not_float, non_finite, negative = [], [], [], [], []
    for name, value in state.items():
        if name in IGNORED or (isinstance(name, str) and name.endswith(IGNORED_SUFFIX)):
            continue
        if name not in table:
            unknown.append(repr(name))
            continue
        collection, path, flax_shape = table[name]
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            not_float.append(f"{name} ({value.dtype})")
            continue
        if value.shape != _torch_shape(flax_shape):
            mismatched.append(f"{name} {value.shape}, expected {_torch_shape(flax_shape)}")
            continue
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            value = np.array(value, np.float32)
        if not np.isfinite(value).all():
            non_finite.append(name)
        elif name.endswith(".running_var") and (value < 0).any():
            negative.append(name)
        node = variables.setdefault(collection, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    given = set(state)
    missing = [name for name in table if name not in given]
    problems = []
    for label, names in (("entries with no Inception variable", unknown), ("missing entries", missing),
                         ("shapes that differ", mismatched), ("entries that are not float arrays", not_float),
                         ("entries with NaN or infinite values", non_finite),
                         ("running variances with negative values", negative)):
        if names:
            problems.append(f"{label}: {', '.join(names[:8])}" + (f" (and {len(names) - 8} more)"
                                                                   if len(names) > 8 else ""))
    if problems:
        raise ValueError(f"{source} does not hold FID's Inception weights: " + "; ".join(problems))
    return variables
