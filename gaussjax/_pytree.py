"""gaussjax's one pytree mechanism, `Module`, and models as arguments of compiled functions.

Models are `Module`s: immutable `equinox.Module` pytrees whose array fields are leaves and
whose fields declared `eqx.field(static=True)` are hashable metadata (they select shapes and
code paths, so changing them recompiles). `jit_call` is the one jitted model call;
`traceable_model` lets any other object with a `.denoise` method in, carried as static data.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import numpy as np

from gaussjax._errors import InputValueError


class Module(eqx.Module):
    """An `equinox.Module` hashed and compared by identity, as a plain Python object.

    Identity makes a bound method such as `model.denoise` hashable, so `jax.jit(model.denoise)`
    works (equinox's own hash combines the fields, and array fields cannot be hashed).
    Construction runs `__init__` / `__post_init__`, where fields are assigned and inputs
    checked; JAX's unflattening bypasses them, so the checks never see tracers.
    """

    __hash__ = object.__hash__
    __eq__ = object.__eq__


@jax.tree_util.register_static
class _OpaqueModel:
    """A model that is not a pytree of arrays, carried through `jax.jit` as static data.

    Hashed and compared by the wrapped model's identity: one compilation per instance, with its arrays as
    compile-time constants. Attribute access is forwarded to the wrapped model.
    """

    def __init__(self, model):
        self.model = model

    def __hash__(self):
        return id(self.model)

    def __eq__(self, other):
        return isinstance(other, _OpaqueModel) and other.model is self.model

    def __getattr__(self, name):
        return getattr(self.model, name)


def _is_array_leaf(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex, bool))


def traceable_model(model):
    """`model` itself if it is a pytree of arrays (its arrays are then traced by `jax.jit`), else
    a static wrapper (see `_OpaqueModel`), so any object with `.denoise` can enter a jitted function."""
    if all(_is_array_leaf(leaf) for leaf in jax.tree_util.tree_leaves(model)):
        return model
    return _OpaqueModel(model)


@functools.partial(jax.jit, static_argnames="method")
def jit_call(model, method: str, x, sigma):
    """`model.<method>(x, sigma)`, compiled once per model structure (type, static fields) and input shapes.

    `model` is a pytree of arrays (traced) or a `traceable_model` wrapper.
    """
    return getattr(model, method)(x, sigma)


def check_output_shape(name: str, output, x) -> None:
    """Raise `ValueError` naming `name` unless the denoiser output `output` has the shape of its input `x`.

    Shapes are static, so this also runs while a function is traced.
    """
    if tuple(output.shape) != tuple(x.shape):
        raise InputValueError(
            f"`{name}.denoise` returned shape {tuple(output.shape)} for states of shape {tuple(x.shape)}: "
            "a denoiser returns the shape of its input (..., D)"
        )


def denoise_checked(name: str, model, x, sigma):
    """`model.denoise(x, sigma)` compiled (`model` any object with `.denoise`), its shape checked as `name`'s."""
    output = jit_call(traceable_model(model), "denoise", x, sigma)
    check_output_shape(name, output, x)
    return output
