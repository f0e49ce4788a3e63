"""Torch modules as data: :class:`ModuleRecord`, the stand-ins that become one (EDM's persistent objects, plain
torch modules), and :class:`Converter`, which turns an unpickled tree into plain data and records.

An EDM persistent object (``torch_utils.persistence._reconstruct_persistent_obj(meta)``) is read from
``meta['class_name']`` and ``meta['state']``; ``meta['type']`` must be ``'class'``. ``meta['module_src']`` is
never run: its SHA-256 is looked up in :data:`EDM_MODULE_SOURCES`, so that a class rebuilt from the name
alone can be reported when its source is no NVlabs/edm release's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import numpy as np

from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._torch._errors import UnsafePickleError, describe
from gaussjax._torch._unpickler import Allowed, Buildable, function

# SHA-256 of the UTF-8 text of each NVlabs/edm module whose classes torch_utils.persistence pickles with their
# source (meta['module_src']), at every commit of github.com/NVlabs/edm's main branch that changed the module.
EDM_MODULE_SOURCES = {
    "2294828d5f59f5fd008f7141e6b8af2095918f2ce019f280a933e4779b5c3cef": "training/networks.py at 0a2ff34",
    "5db27dcd96674b95c72d5e6491b879cdc35e24039ada3411b4b46a28ed1fe284": "training/networks.py at b2a26c9",
    "b26f0937bc72b18cc5f9869c86035ca9b872138cdfae7994237e9733951e4415": "training/loss.py at 0a2ff34",
    "fd411af7c2d74489ce11a245293047369fc044d00a9aeed1c0bd46b322c8a8b5": "training/augment.py at 0a2ff34",
}

NODES_PER_BYTE = 4  # data-tree nodes (counted as if unshared) per byte of the file
MAX_DEPTH = 100  # nesting of the data tree
_MAX_NAME = 256  # characters of an EDM class name


@dataclasses.dataclass(frozen=True)
class ModuleRecord:
    """A torch module (or EDM persistent object) read as data.

    Attributes:
        class_name: ``meta['class_name']`` for EDM persistent classes (e.g. ``'EDMPrecond'``); the qualified
            global for plain torch modules (e.g. ``'torch.nn.modules.container.ModuleDict'``).
        init_args: positional constructor arguments EDM recorded (``()`` for plain torch modules).
        init_kwargs: keyword constructor arguments EDM recorded (``{}`` for plain torch modules).
        parameters: name -> array or None, in registration order.
        buffers: name -> array or None, in registration order.
        modules: name -> child record or None, in registration order.
        non_persistent_buffers: buffer names left out of :meth:`state_dict`.
        attributes: the remaining public instance attributes (e.g. ``sigma_data``, ``training``).
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    parameters: dict
    buffers: dict
    modules: dict
    non_persistent_buffers: frozenset = frozenset()
    attributes: dict = dataclasses.field(default_factory=dict)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays under torch's ``Module.state_dict()`` names: parameters, persistent buffers, then children."""
        out = {name: value for name, value in self.parameters.items() if value is not None}
        out.update((name, value) for name, value in self.buffers.items()
                   if value is not None and name not in self.non_persistent_buffers)
        for child_name, child in self.modules.items():
            if child is not None:
                out.update((f"{child_name}.{name}", value) for name, value in child.state_dict().items())
        return out


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins of modules.


class _PlainModule(Buildable):
    """A plain torch module; subclasses carry the qualified global in ``qualified_name``; BUILD sets ``state``."""

    qualified_name = ""
    state = None

    def __setstate__(self, state):
        if type(state) is not dict:
            raise UnsafePickleError(f"refusing non-dict state of {self.qualified_name!r}")
        self.state = state


@dataclasses.dataclass(eq=False)
class _Persistent:
    """An EDM persistent object before conversion: its class name, instance state and module source."""

    class_name: str
    state: dict
    module_src: Any


def _reconstruct_persistent(meta) -> _Persistent:
    if not isinstance(meta, dict):
        raise UnsafePickleError(f"refusing persistent object whose meta is a {type(meta).__name__}")
    kind, class_name, state = meta.get("type"), meta.get("class_name"), meta.get("state")
    if not (type(kind) is str and kind == "class"):
        raise UnsafePickleError(f"refusing persistent object of type {describe(kind)} (only 'class')")
    if not (type(class_name) is str and len(class_name) <= _MAX_NAME and class_name.isidentifier()):
        raise UnsafePickleError(f"refusing persistent class name {describe(class_name)}")
    if type(state) is not dict:
        raise UnsafePickleError(f"refusing persistent object {class_name!r} whose state is not a dict")
    return _Persistent(class_name, state, meta.get("module_src"))  # module_src is only hashed, never run


_PLAIN_MODULES = {
    "torch.nn.modules.container": ("ModuleDict", "ModuleList", "Sequential", "ParameterDict", "ParameterList"),
    "torch.nn.modules.linear": ("Linear", "Identity"),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.normalization": ("GroupNorm",),
    "torch.nn.modules.activation": ("SiLU",),
    "torch.nn.modules.dropout": ("Dropout",),
}
MODULES = (
    function("torch_utils.persistence", "_reconstruct_persistent_obj", _reconstruct_persistent,
             "an EDM persistent object (network, loss, `AugmentPipe`) as a `ModuleRecord` of its class name and "
             "state; `meta['module_src']` is only hashed"),
    *(Allowed(module, name, type(name, (_PlainModule,), {"qualified_name": f"{module}.{name}"}),
              "a plain torch module, as a `ModuleRecord` named by its qualified global")
      for module, names in _PLAIN_MODULES.items() for name in names),
)


# ---------------------------------------------------------------------------------------------------------------
# Conversion of the unpickled tree into plain data and ModuleRecords.

_LEAVES = (type(None), bool, int, float, complex, str, bytes, np.generic)
_BUSY = object()  # memo mark of an object being converted (reached again: a cycle)


class _Converted(NamedTuple):
    """An object's conversion, the size of the tree it stands for and whether that tree holds a module."""

    value: Any
    nodes: int
    has_module: bool


class Converter:
    """Converts unpickled objects into plain data and :class:`ModuleRecord` trees, each object once.

    Plain data are None, bool, int, float, complex, str, bytes, NumPy scalars, tuples, lists, sets, frozensets
    and dicts; instances of ``resolved`` (stand-ins with a ``resolve()`` method: tensors, storages, dtypes)
    become what they resolve to; EDM persistent objects and plain torch modules become records. Anything else
    is refused.

    Plain data shared through the pickle's memo stays shared, but the tree it stands for (counted as if
    unshared) may hold at most ``NODES_PER_BYTE * size`` nodes and nest ``MAX_DEPTH`` levels, so any later
    walk of the result is bounded by the file's size; a module, or a container holding one, reached twice is
    refused, so modules form a tree. ``unknown_sources`` collects (as dict keys, in order) the persistent class
    names whose ``module_src`` is none of :data:`EDM_MODULE_SOURCES`.
    """

    def __init__(self, size: int, resolved: tuple[type[Any], ...] = ()):
        self.max_nodes, self.resolved = NODES_PER_BYTE * size, resolved
        self.memo: dict[int, Any] = {}  # id(object) -> _Converted (or _BUSY)
        self.known_sources: dict[int, bool] = {}  # id(module_src) -> whether it is an EDM release's
        self.unknown_sources: dict[str, None] = {}

    def convert(self, obj) -> Any:
        return self._visit(obj, 0).value

    def _visit(self, obj, depth: int) -> _Converted:
        if isinstance(obj, _LEAVES):
            return _Converted(obj, 1, False)
        if isinstance(obj, self.resolved):
            return _Converted(obj.resolve(), 1, False)
        done = self.memo.get(id(obj))
        if done is _BUSY:
            raise InputValueError("the pickle holds a reference cycle")
        if done is not None:
            if done.has_module:
                what = f"module {obj.class_name!r}" if isinstance(obj, _Persistent) else describe(obj)
                raise InputValueError(f"{what} is reached twice in the pickle; modules must form a tree "
                                      "(holding or sharing submodules)")
            return done
        if depth >= MAX_DEPTH:
            raise InputValueError(f"the pickle's data nest deeper than {MAX_DEPTH} levels")
        self.memo[id(obj)] = _BUSY
        done = self.memo[id(obj)] = self._convert(obj, depth + 1)
        if done.nodes > self.max_nodes:
            raise InputValueError(f"the pickle's data, counted as a tree, hold over {self.max_nodes} nodes "
                                  f"({NODES_PER_BYTE} per byte of the file): objects shared over and over")
        return done

    def _convert(self, obj, depth: int) -> _Converted:
        if isinstance(obj, dict):  # keys were checked by check_key when the dict was filled
            items = [(key, self._visit(value, depth)) for key, value in obj.items()]
            return _Converted({key: done.value for key, done in items}, 1 + sum(1 + d.nodes for _, d in items),
                              any(done.has_module for _, done in items))
        if type(obj) in (list, tuple, set, frozenset):
            items = [self._visit(value, depth) for value in obj]
            return _Converted(type(obj)(done.value for done in items), 1 + sum(done.nodes for done in items),
                              any(done.has_module for done in items))
        if type(obj) is _Persistent:
            self._check_source(obj)
            state = self._visit(obj.state, depth)
            return _Converted(_record(obj.class_name, state.value), 1 + state.nodes, True)
        if isinstance(obj, _PlainModule):
            state = self._visit(obj.state, depth) if obj.state is not None else _Converted({}, 1, False)
            return _Converted(_record(obj.qualified_name, state.value), 1 + state.nodes, True)
        raise UnsafePickleError(f"refusing {type(obj).__qualname__} in the pickle's data: only plain data is allowed")

    def _check_source(self, obj: _Persistent) -> None:
        source = obj.module_src
        known = self.known_sources.get(id(source))
        if known is None:
            digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest() if type(source) is str else ""
            known = self.known_sources[id(source)] = digest in EDM_MODULE_SOURCES
        if not known:
            self.unknown_sources[obj.class_name] = None


def _record(class_name: str, state: dict) -> ModuleRecord:
    """A :class:`ModuleRecord` from a module's converted ``__dict__``."""
    if not all(type(name) is str for name in state):
        raise InputTypeError(f"{class_name} has an attribute name that is not a str")
    return ModuleRecord(
        class_name=class_name,
        init_args=tuple(_field(state, "_init_args", (tuple, list), (), class_name)),
        init_kwargs=dict(_field(state, "_init_kwargs", (dict,), {}, class_name)),
        parameters=_entries(state, "_parameters", np.ndarray, class_name),
        buffers=_entries(state, "_buffers", np.ndarray, class_name),
        modules=_entries(state, "_modules", ModuleRecord, class_name),
        non_persistent_buffers=frozenset(_field(state, "_non_persistent_buffers_set", (set, frozenset, list, tuple),
                                                (), class_name)),
        attributes={k: v for k, v in state.items() if not k.startswith("_")},
    )


def _field(state: dict, field: str, kinds: tuple[type, ...], default, class_name: str):
    """``state[field]`` checked to be one of ``kinds``; ``default`` if it is missing or None."""
    value = state.get(field)
    if value is None:
        return default
    if not isinstance(value, kinds):
        raise InputTypeError(f"{class_name}.{field} is a {type(value).__name__}, expected "
                             f"{' or '.join(kind.__name__ for kind in kinds)}")
    return value


def _entries(state: dict, field: str, kind: type, class_name: str) -> dict:
    """``state[field]`` (parameters, buffers or children), checked to map str names to ``kind`` or None."""
    entries = _field(state, field, (dict,), {}, class_name)
    for name, value in entries.items():
        if type(name) is not str or (value is not None and not isinstance(value, kind)):
            raise InputTypeError(f"{class_name}.{field}[{describe(name)}] is a {type(value).__name__}, expected "
                                 f"{kind.__name__} under a str name")
    return dict(entries)
