"""CIFAR-10 from the official `cifar-10-batches-py` directory, read without running pickled code.

The batches are Python-2-era protocol-2 pickles of a dict `{b"data": uint8 (10000, 3072),
b"labels": [int], ...}`. They are read with an unpickler that resolves only the few
globals such files contain (NumPy's array reconstructor, `ndarray`, `dtype`, and the
latin-1 `_codecs.encode` Python 3 uses for bytes in protocol 2). A pickle naming any
other callable is refused before anything in it runs.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from gaussjax._checks import check_choice
from gaussjax._errors import InputFileNotFoundError, InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._pixels import to_signed_unit

_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_DIRNAME = "cifar-10-batches-py"
_SIDE, _CHANNELS = 32, 3


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding, errors)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle names {module}.{name}, which CIFAR-10 batches never contain; refused"
            ) from None


def _field(batch: dict, key: str):
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise InputValueError(f"has no {key!r} entry (keys: {sorted(map(str, batch))})")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file into images uint8 `(n, 32, 32, 3)` and labels int64 `(n,)`.

    The stored rows are channel-planar (1024 red, then 1024 green, then 1024 blue
    values, each plane row-major); they are transposed to NHWC here.
    """
    try:
        with open(path, "rb") as file:
            batch = _CifarUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise InputValueError(f"{path} is not a valid CIFAR-10 batch: {error}") from None
    if not isinstance(batch, dict):
        raise InputValueError(f"{path} is not a valid CIFAR-10 batch: expected a dict, got {type(batch).__name__}")
    try:
        data, labels = np.asarray(_field(batch, "data")), np.asarray(_field(batch, "labels"))
    except ValueError as error:
        raise InputValueError(f"{path} {error}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CHANNELS * _SIDE * _SIDE:
        raise InputValueError(f"{path}: 'data' must be uint8 (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise InputValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape} ({labels.dtype})")
    images = data.reshape(-1, _CHANNELS, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def load_cifar10(root=None, split: str = "train") -> Dataset:
    """CIFAR-10 as `(N, 32, 32, 3)` in [-1, 1] with labels 0-9 (50,000 train / 10,000 test).

    Args:
        root: the `cifar-10-batches-py` directory of the official python release, or
            its parent directory.
        split: `"train"` (`data_batch_1` .. `data_batch_5`) or `"test"` (`test_batch`).
    """
    check_choice("split", split, tuple(_BATCHES))
    root = resolve_root("cifar10", root)
    directory = root / _DIRNAME if (root / _DIRNAME).is_dir() else root
    paths = [directory / name for name in _BATCHES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputFileNotFoundError(
            f"CIFAR-10 files {missing} not found in {directory}: extract the official "
            f"cifar-10-python.tar.gz so that {directory / _BATCHES[split][0]} exists"
        )
    images, labels = zip(*(read_cifar_batch(p) for p in paths), strict=True)
    images = to_signed_unit(np.concatenate(images), (0.0, 255.0), name="CIFAR-10 images")
    return Dataset("cifar10", images, np.concatenate(labels), split)
