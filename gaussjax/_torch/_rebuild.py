"""torch's tensor and parameter rebuild functions, read as :class:`TensorRef`: a storage, an offset, a size, a
stride and a dtype, viewed as a NumPy array by :meth:`TensorRef.resolve` once the storage's bytes are read.

A state dict's storages follow its pickle, so its tensors are resolved after the whole file is read; an EDM
snapshot's storages are read where the pickle names them, and its tensors are resolved as the snapshot is
converted. The functions, their checks and their stand-ins are the same.
"""

from __future__ import annotations

import numpy as np

from gaussjax._torch._errors import UnsafePickleError, describe
from gaussjax._torch._storage import STORAGES_OR_VIEWS, TORCH_DTYPE_NAMES, TorchDtype, shape, strided
from gaussjax._torch._unpickler import function


class TensorRef:
    """A tensor: ``size`` and ``stride`` (in elements) from ``offset`` into ``storage``, elements of ``dtype``
    (None: the storage's own)."""

    __slots__ = ("dtype", "offset", "size", "storage", "stride")

    def __init__(self, storage, offset, size, stride, dtype: np.dtype | None = None):
        if not isinstance(storage, STORAGES_OR_VIEWS):
            raise UnsafePickleError(f"refusing tensor rebuilt from a {type(storage).__name__}, not a storage")
        self.storage, self.offset, self.dtype = storage, offset, dtype
        self.size, self.stride = shape(size), shape(stride)

    def resolve(self) -> np.ndarray:
        """The read-only array (bounds checked against the storage)."""
        return strided(self.storage.resolve(), self.offset, self.size, self.stride, self.dtype)


def rebuild_tensor(storage, offset, size, stride) -> TensorRef:
    """``torch._utils._rebuild_tensor`` (torch < 0.4)."""
    return TensorRef(storage, offset, size, stride)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None) -> TensorRef:
    del requires_grad, hooks, metadata
    return TensorRef(storage, offset, size, stride)


def rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None) -> TensorRef:
    del requires_grad, hooks, metadata
    if not isinstance(dtype, TorchDtype):
        raise UnsafePickleError(f"refusing tensor dtype {describe(dtype)}")
    return TensorRef(storage, offset, size, stride, dtype.dtype)


def rebuild_parameter(data, requires_grad, hooks, state=None) -> TensorRef:
    del requires_grad, hooks, state
    if not isinstance(data, TensorRef):
        raise UnsafePickleError(f"refusing parameter wrapping a {type(data).__name__}")
    return data


REBUILD_TENSOR = function("torch._utils", "_rebuild_tensor", rebuild_tensor, "a tensor (torch < 0.4)")
TENSORS = (  # the allow-list entries of the tensors of both readers
    function("torch._utils", "_rebuild_tensor_v2", rebuild_tensor_v2, "a tensor: a strided view of its storage "
             "(`requires_grad` and hooks dropped)"),
    function("torch._utils", "_rebuild_tensor_v3", rebuild_tensor_v3, "a tensor with a dtype of its own (an "
             "untyped storage's)"),
    function("torch._utils", "_rebuild_parameter", rebuild_parameter, "a parameter, read as its tensor"),
    function("torch._utils", "_rebuild_parameter_with_state", rebuild_parameter, "a parameter, read as its tensor "
             "(its state dropped)"),
    function("torch", "Size", shape, "a tuple of at most 64 sizes"),
    *TORCH_DTYPE_NAMES,
)
