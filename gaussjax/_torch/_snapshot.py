"""EDM snapshot pickles read as data: :func:`read_edm_pickle`.

EDM's ``training_loop.py`` pickles ``dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)`` with
the standard library. Loading that with ``pickle.load`` imports torch and *executes* the Python source that
``torch_utils.persistence`` embeds in every network (``meta['module_src']``). Here the same bytes are read by
the restricted unpickler with the allow-list :data:`SNAPSHOT`, storages by :data:`~._storage.STORAGE`, and the
result is converted into plain data and :class:`~._records.ModuleRecord` trees (see ``docs/pretrained.md``).
"""

from __future__ import annotations

import io
import os
import warnings

from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._torch._data import PLAIN_DATA, DtypeSpec
from gaussjax._torch._errors import SHOWN_ITEMS, describe, read_file
from gaussjax._torch._rebuild import TENSORS, TensorRef
from gaussjax._torch._records import MODULES, Converter
from gaussjax._torch._storage import LEGACY_MAGIC, LOAD_FROM_BYTES, STORAGES_OR_VIEWS, ZIP_MAGIC
from gaussjax._torch._unpickler import AllowList, RestrictedUnpickler

SNAPSHOT = AllowList("An EDM snapshot's pickle", (*MODULES, *TENSORS, LOAD_FROM_BYTES, *PLAIN_DATA))
_RESOLVED = (TensorRef, *STORAGES_OR_VIEWS, DtypeSpec)  # stand-ins converted to what they resolve to


def read_edm_pickle(path: str | os.PathLike) -> dict:
    """Read an EDM snapshot pickle (``network-snapshot-*.pkl``, ``edm-*.pkl``) without torch or code execution.

    Args:
        path: the pickle file.

    Returns:
        The snapshot's top-level dict, e.g. ``{'ema': ModuleRecord, 'loss_fn': ModuleRecord, 'augment_pipe':
        ModuleRecord or None, 'dataset_kwargs': dict}``, with every tensor as a read-only NumPy array (float16
        stays float16). Modules form a tree, and the whole result, counted as if unshared, holds at most 4 nodes
        per byte of the file.

    Warns:
        UserWarning: once, naming the classes, when a persistent class's pickled source is none of
            :data:`~._records.EDM_MODULE_SOURCES` (the class is rebuilt from its name all the same).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file references anything outside :data:`SNAPSHOT` or holds anything but plain
            data and modules.
        ValueError: the file is truncated, too costly for its size, or not a pickle of this kind (a
            ``torch.save`` file, say); the message names ``path``.
    """
    snapshot, unknown_sources = read_file(path, "EDM snapshot pickle", _snapshot)
    if unknown_sources:
        shown = ", ".join(map(describe, unknown_sources[:SHOWN_ITEMS])) + (
            f" and {len(unknown_sources) - SHOWN_ITEMS} more" if len(unknown_sources) > SHOWN_ITEMS else "")
        warnings.warn(f"path {os.fspath(path)!r}: the class(es) {shown} were rebuilt from their names, but their "
                      "pickled source is no NVlabs/edm release's (a fork's changed network?)", UserWarning,
                      stacklevel=2)
    return snapshot


def _snapshot(data: bytes) -> tuple[dict, list[str]]:
    """The converted snapshot of ``data`` and the class names whose source is no EDM release's."""
    not_a_snapshot = ("a torch.save file ({} format), not an EDM snapshot pickle: read state dicts with "
                      "read_torch_state_dict")
    if data[:4] == ZIP_MAGIC:
        raise InputValueError(not_a_snapshot.format("zip"))
    root = RestrictedUnpickler(io.BytesIO(data), len(data), SNAPSHOT).load()
    if type(root) is int and root == LEGACY_MAGIC:
        raise InputValueError(not_a_snapshot.format("legacy"))
    converter = Converter(len(data), _RESOLVED)
    snapshot = converter.convert(root)
    if not isinstance(snapshot, dict):
        raise InputTypeError(f"expected a snapshot dict at the top level, got {type(snapshot).__name__}")
    return snapshot, list(converter.unknown_sources)
