"""PyTorch state dicts of NVlabs/edm networks as Flax variables (one naming and layout rule for every module).

gaussjax's Flax modules keep EDM's attribute names, so a state-dict entry maps
mechanically to a Flax parameter:

- a `ModuleDict` entry `enc.32x32_block0.conv0.weight` becomes the module
  `enc_32x32_block0` (the same for `dec`);
- a preconditioner's `model.` prefix becomes `net` (`EDMPrecond.net`);
- `weight` of a normalization layer (a name containing `norm`) is `scale`; `weight` of
  a linear layer `(out, in)` is the `kernel (in, out)`; of a convolution
  `(out, in, k, k)` the `kernel (k, k, in, out)`; `bias` stays `bias`.

Buffers (constants of the architecture, not parameters: resampling filters, Fourier
frequencies, iDDPM's sigma table) are not mapped here; the importer reads or checks
them itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

PREFIXES = {"model": "net"}  # EDM attribute -> gaussjax field
MODULE_DICTS = ("enc", "dec")


def flax_path(name: str) -> tuple[str, ...]:
    """The Flax parameter path of the state-dict entry `name` (e.g. `model.enc.8x8_conv.weight`)."""
    *path, leaf = name.split(".")
    path = [PREFIXES.get(part, part) if i == 0 else part for i, part in enumerate(path)]
    for i in range(len(path) - 1):
        if path[i] in MODULE_DICTS:
            path[i:i + 2] = [f"{path[i]}_{path[i + 1]}"]
            break
    if not path:
        raise ValueError(f"state-dict entry {name!r} is not inside a module")
    if "norm" in path[-1]:
        key = {"weight": "scale", "bias": "bias"}.get(leaf)
    else:
        key = {"weight": "kernel", "bias": "bias"}.get(leaf)
    if key is None:
        raise ValueError(f"state-dict entry {name!r}: gaussjax maps only weights and biases, not {leaf!r}")
    return (*path, key)


def flax_value(name: str, value: np.ndarray) -> np.ndarray:
    """`value` in Flax's layout: linear `(out, in) -> (in, out)`, conv `(out, in, k, k) -> (k, k, in, out)`."""
    value = np.asarray(value)
    if name.endswith(".weight") and value.ndim == 2:
        return value.T
    if name.endswith(".weight") and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], expected) -> dict:
    """`{'params': ...}` from a torch state dict, checked against the module's own variables.

    Args:
        state_dict: dotted name -> array (parameters only; remove buffers first), as
            `torch.nn.Module.state_dict()` or `ModuleRecord.state_dict()` names them.
        expected: the module's variables or their shapes (`jax.eval_shape(module.init, ...)`),
            `{'params': ...}`.

    Returns:
        `{'params': ...}` with float32 NumPy arrays, the tree of `expected`.

    Raises:
        ValueError: naming every entry with no Flax counterpart, every Flax parameter the
            state dict lacks, any shape that differs, and every entry with NaN or infinite
            values in float32. An entry is converted only once its shape is known to fit.
    """
    shapes = {tuple(k.key for k in path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_leaves_with_path(expected["params"])}
    params, unknown, mismatched, non_finite = {}, [], {}, []
    for name, value in state_dict.items():
        path = flax_path(name)
        flax = flax_value(name, value)
        if path not in shapes:
            unknown.append(name)
            continue
        if tuple(flax.shape) != shapes[path]:
            mismatched[path] = f"{name} {np.shape(value)} as {'/'.join(path)} {flax.shape}, expected {shapes[path]}"
            continue
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            value = np.asarray(flax, np.float32)
        if not np.isfinite(value).all():
            non_finite.append(name)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    missing = sorted("/".join(p) for p in shapes if p not in mismatched and not _has(params, p))
    problems = []
    for label, names in (("entries with no gaussjax parameter", unknown), ("parameters the state dict lacks", missing),
                         ("entries with NaN or infinite values", non_finite)):
        if names:
            problems.append(f"{label}: {', '.join(names[:8])}" + (f" (and {len(names) - 8} more)" if len(names) > 8
                                                                   else ""))
    if mismatched:
        problems.append(f"shapes that differ: {'; '.join(list(mismatched.values())[:8])}")
    if problems:
        raise ValueError("the state dict does not fit the network: " + "; ".join(problems))
    return {"params": params}


def _has(tree: dict, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True
