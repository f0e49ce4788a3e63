"""Torch files read as data, without torch and without running anything from them, and mapped onto Flax.

- ``_unpickler``: one restricted unpickler, parametrised by an :class:`AllowList` of ``(module, name,
  stand-in, why)`` entries; its cost is linear in the size of the serialization.
- ``_storage``: torch storages, bounds-checked strided views, and torch's legacy and zip serializations.
- ``_rebuild``: torch's tensor rebuild functions, as tensors resolved once their storage's bytes are read.
- ``_data``, ``_records``: stand-ins for plain data and modules, and their conversion into plain data and
  :class:`ModuleRecord` trees.
- ``_snapshot``, ``_state_dict``: the two readers, :func:`read_edm_pickle` and :func:`read_torch_state_dict`,
  each with its allow-list (:data:`SNAPSHOT`, :data:`STATE_DICT`; storages inside a snapshot: :data:`STORAGE`),
  rendered by :meth:`AllowList.table` in ``docs/pretrained.md``.
- ``_to_flax``: one torch -> Flax mapping, with the module names of EDM's networks and of FID's Inception.
"""

from gaussjax._torch._errors import UnsafePickleError, describe
from gaussjax._torch._records import EDM_MODULE_SOURCES, ModuleRecord
from gaussjax._torch._snapshot import SNAPSHOT, read_edm_pickle
from gaussjax._torch._state_dict import STATE_DICT, read_torch_state_dict
from gaussjax._torch._storage import STORAGE
from gaussjax._torch._to_flax import (
    EDM,
    INCEPTION,
    Naming,
    inception_shapes,
    inception_variables,
    torch_shapes,
    variables_from_state_dict,
    variables_from_torch,
)
from gaussjax._torch._unpickler import AllowList

__all__ = [
    "EDM",
    "EDM_MODULE_SOURCES",
    "INCEPTION",
    "SNAPSHOT",
    "STATE_DICT",
    "STORAGE",
    "AllowList",
    "ModuleRecord",
    "Naming",
    "UnsafePickleError",
    "describe",
    "inception_shapes",
    "inception_variables",
    "read_edm_pickle",
    "read_torch_state_dict",
    "torch_shapes",
    "variables_from_state_dict",
    "variables_from_torch",
]
