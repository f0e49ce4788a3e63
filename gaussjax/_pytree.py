"""Immutable dataclasses that are JAX pytrees.

`@pytree_dataclass` makes a frozen dataclass and registers it with JAX. Array fields
are leaves; fields declared with `static_field()` are hashable metadata (they select
shapes and code paths, so changing them recompiles). Unflattening bypasses
`__init__`/`__post_init__`, so input validation in `__post_init__` runs when a user
constructs a model, never on the tracers JAX passes around inside `jit`/`vmap`/`grad`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


def static_field(**kwargs):
    """A dataclass field stored as pytree metadata rather than as a leaf."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
    """Decorator: a frozen dataclass registered as a JAX pytree (see module docstring)."""
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
    leaves = tuple(f.name for f in fields if not f.metadata.get("static"))
    static = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(obj):
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in leaves)
        return children, tuple(getattr(obj, n) for n in static)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in zip(leaves + static, tuple(children) + tuple(aux)):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten)
    return cls


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
