"""The `Dataset` container and the image <-> flat-vector layout helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
from jaxtyping import Array, Float, Int

from gaussjax._checks import check_positive_int
from gaussjax._errors import InputTypeError, InputValueError


def images_to_flat(images):
    """Flatten images `(..., H, W, C)` to vectors `(..., H * W * C)` (NumPy or JAX arrays)."""
    if images.ndim < 3:
        raise InputValueError(f"`images` must have shape (..., H, W, C), got {images.shape}")
    return images.reshape(*images.shape[:-3], -1)


def flat_to_images(flat, image_shape: tuple[int, int, int]):
    """Reshape vectors `(..., D)` to images `(..., H, W, C)` with `D = H * W * C`."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
        raise InputValueError(f"`image_shape` must be (H, W, C), got {image_shape}")
    size = int(np.prod(image_shape))
    if flat.ndim < 1 or flat.shape[-1] != size:
        raise InputValueError(
            f"`flat` must have last dimension H * W * C = {size} for image_shape {image_shape}, "
            f"got shape {flat.shape}"
        )
    return flat.reshape(*flat.shape[:-1], *image_shape)


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An immutable image dataset in the library's convention.

    Attributes:
        name: the dataset's name (`"digits"`, `"mnist"`, ...).
        images: float32 `(N, H, W, C)` in [-1, 1], read-only.
        labels: int64 `(N,)` class labels, or `None` if the source has none.
        split: which split this is (`"train"`, `"test"` or `"all"`).
    """

    name: str
    images: Float[np.ndarray, "N H W C"]
    labels: Int[np.ndarray, " N"] | None
    split: str = "train"

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim != 4:
            raise InputValueError(f"`images` must have shape (N, H, W, C), got {images.shape}")
        if images.shape[0] == 0:
            raise InputValueError(f"dataset {self.name!r} ({self.split}) is empty")
        if images.dtype != np.float32:
            raise InputTypeError(f"`images` must be float32 in [-1, 1], got {images.dtype}")
        object.__setattr__(self, "images", _read_only(images))
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (images.shape[0],):
                raise InputValueError(
                    f"`labels` must have shape ({images.shape[0]},) to match the images, got {labels.shape}"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise InputTypeError(f"`labels` must be integers, got {labels.dtype}")
            object.__setattr__(self, "labels", _read_only(labels.astype(np.int64)))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        n_classes = "no labels" if self.labels is None else f"{len(np.unique(self.labels))} classes"
        return f"Dataset(name={self.name!r}, split={self.split!r}, images={self.images.shape}, {n_classes})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`(H, W, C)` of one image."""
        return tuple(self.images.shape[1:])

    @property
    def dim(self) -> int:
        """`D = H * W * C`, the dimension of one flat vector."""
        return int(np.prod(self.image_shape))

    @property
    def flat(self) -> Float[np.ndarray, "N D"]:
        """The images as flat vectors, float32 `(N, D)` (a read-only view, no copy)."""
        return images_to_flat(self.images)

    def unflatten(
        self, flat: Float[np.ndarray | Array, "*batch D"]
    ) -> Float[np.ndarray | Array, "*batch H W C"]:
        """Reshape flat vectors `(..., D)` back to images `(..., H, W, C)` of this dataset."""
        return flat_to_images(flat, self.image_shape)

    def chunks(self, chunk_size: int) -> Iterator[Float[np.ndarray, "n D"]]:
        """Iterate over the flat vectors in order, `chunk_size` rows at a time (the last may be shorter)."""
        chunk_size = check_positive_int("chunk_size", chunk_size)
        flat = self.flat
        for start in range(0, len(flat), chunk_size):
            yield flat[start : start + chunk_size]
