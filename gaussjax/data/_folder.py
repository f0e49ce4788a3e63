"""A directory of PNG/JPEG images of one size.

Only Pillow's PNG and JPEG readers are tried, whatever a file's extension (PostScript bytes
named `.png` are refused, not handed to Ghostscript), and every image's header is checked
(`gaussjax.data._image_files`) before its pixels are decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaussjax._checks import check_choice, check_positive_int
from gaussjax._errors import InputFileNotFoundError, InputValueError
from gaussjax.data._dataset import Dataset
from gaussjax.data._files import resolve_root
from gaussjax.data._image_files import image_errors, open_image
from gaussjax.data._pixels import to_signed_unit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
MAX_RESOLUTION = 4096  # one 4096 x 4096 x 3 image is 192 MiB as float32


def center_crop_resize(image, resolution: int):
    """Center-crop a PIL image to a square, then resize it to `resolution` pixels (Lanczos)."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == resolution else image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def _declared_size(path: Path) -> tuple[int, int]:
    """`(H, W)` of the image at `path`, from its header (nothing decoded)."""
    with open_image(path, str(path), IMAGE_FORMATS, path.stat().st_size) as image:
        return image.height, image.width


def _read_image(path: Path, mode: str, resolution: int | None) -> np.ndarray:
    """One image as uint8 `(H, W[, C])`; any error Pillow raises becomes a `ValueError` naming `path`."""
    with open_image(path, str(path), IMAGE_FORMATS, path.stat().st_size) as image, image_errors(str(path)):
        image = image.convert(mode)
        if resolution is not None:
            image = center_crop_resize(image, resolution)
        return np.asarray(image, dtype=np.uint8)


def load_folder(root=None, *, resolution: int | None = None, mode: str = "RGB") -> Dataset:
    """Every `.png`/`.jpg`/`.jpeg` file directly in `root`, sorted by name, as `(N, H, W, C)`.

    Args:
        root: the directory.
        resolution: if given, center-crop each image to a square and resize it to
            `resolution x resolution` (at most `MAX_RESOLUTION` = 4096); otherwise all
            images must have the same size.
        mode: `"RGB"` (C = 3) or `"L"` (grayscale, C = 1).

    No labels; the whole folder is one split (`"all"`). A file that is not a PNG or a
    JPEG, is unreadable, or declares more pixels than `_image_files` allows raises
    `ValueError` naming it; sizes are compared from the headers, before any decoding.
    """
    check_choice("mode", mode, ("RGB", "L"))
    if resolution is not None:
        resolution = check_positive_int("resolution", resolution)
        if resolution > MAX_RESOLUTION:
            raise InputValueError(
                f"`resolution` must be <= {MAX_RESOLUTION} (one {MAX_RESOLUTION}x{MAX_RESOLUTION}x3 image is "
                f"already 192 MiB as float32), got {resolution}"
            )
    root = resolve_root("folder", root)
    if not root.is_dir():
        raise InputValueError(f"`root` must be a directory of images, got the file {root}")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputFileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} files found in {root}")
    sizes = [_declared_size(path) for path in paths]
    if resolution is None and len(set(sizes)) > 1:
        other = next(i for i, size in enumerate(sizes) if size != sizes[0])
        raise InputValueError(
            f"images in {root} differ in size: {paths[0].name} is {sizes[0]}, {paths[other].name} is "
            f"{sizes[other]}; pass resolution=... to center-crop and resize them"
        )
    arrays = [_read_image(path, mode, resolution) for path in paths]
    images = np.stack(arrays)
    if mode == "L":
        images = images[..., None]
    return Dataset("folder", to_signed_unit(images, (0.0, 255.0), name=f"images in {root}"), None, "all")
