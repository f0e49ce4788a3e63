"""A directory of PNG/JPEG images of one size."""

from __future__ import annotations

import numpy as np

from gaussjax._checks import check_choice, check_positive_int
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._pixels import to_signed_unit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def center_crop_resize(image, resolution: int):
    """Center-crop a PIL image to a square, then resize it to `resolution` pixels (Lanczos)."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == resolution else image.resize((resolution, resolution), Image.LANCZOS)


def load_folder(root=None, *, resolution: int | None = None, mode: str = "RGB") -> Dataset:
    """Every `.png`/`.jpg`/`.jpeg` file directly in `root`, sorted by name, as `(N, H, W, C)`.

    Args:
        root: the directory.
        resolution: if given, center-crop each image to a square and resize it to
            `resolution x resolution`; otherwise all images must have the same size.
        mode: `"RGB"` (C = 3) or `"L"` (grayscale, C = 1).

    No labels; the whole folder is one split (`"all"`).
    """
    from PIL import Image, UnidentifiedImageError

    check_choice("mode", mode, ("RGB", "L"))
    if resolution is not None:
        resolution = check_positive_int("resolution", resolution)
    root = resolve_root("folder", root)
    if not root.is_dir():
        raise NotADirectoryError(f"`root` must be a directory of images, got the file {root}")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} files found in {root}")
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if resolution is not None:
                    image = center_crop_resize(image, resolution)
                arrays.append(np.asarray(image, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {path}: {error}") from None
        if arrays[-1].shape != arrays[0].shape:
            raise ValueError(
                f"images in {root} differ in size: {paths[0].name} is {arrays[0].shape[:2]}, "
                f"{path.name} is {arrays[-1].shape[:2]}; pass resolution=... to center-crop and resize them"
            )
    images = np.stack(arrays)
    if mode == "L":
        images = images[..., None]
    return Dataset("folder", to_signed_unit(images, (0.0, 255.0), name=f"images in {root}"), None, "all")
