"""Opening image files that may be hostile: only the expected formats, the declared size checked before decoding.

Pillow opens lazily: `Image.open` reads the header (size and mode) and decodes nothing.
`open_image` uses that to refuse an image before its pixels are allocated:

- only the given Pillow formats are tried (`Image.open(..., formats=...)`), so bytes of
  another format (PostScript, which Pillow would hand to Ghostscript) are never parsed;
- at most `MAX_IMAGE_PIXELS` pixels, whatever Pillow's own (global, settable) bomb limit;
- at most `MAX_PIXELS_PER_BYTE` pixels per byte of the file. PNG stores its pixels as
  deflate data, which inflates at most 1032:1, at no less than 1 bit a pixel (8 pixels a
  byte); Huffman-coded JPEG spends at least a bit on each 8 x 8 block (512 pixels a byte).
  So a real image never declares more, and a small file declaring a huge size (to make the
  reader allocate it) is refused: a reader's memory stays linear in the bytes it is given.
"""

from __future__ import annotations

import contextlib
import lzma
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from gaussjax._errors import InputValueError

MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE**2  # 64 Mpixel: one RGB image is 192 MiB as uint8
MAX_PIXELS_PER_BYTE = 8 * 1032  # PNG at 1 bit a pixel, deflated at its largest ratio

# what Pillow's decoders raise on bad data, and what the stream under them (a zip member) raises
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


@contextlib.contextmanager
def image_errors(name: str) -> Iterator[None]:
    """Turn any error of reading or decoding image `name` into a `ValueError` naming it."""
    from PIL import Image

    try:
        yield
    except Image.DecompressionBombError as error:
        raise InputValueError(f"cannot read image {name}: Pillow refuses it as a decompression bomb: {error}") from None
    except READ_ERRORS as error:
        raise InputValueError(f"cannot read image {name}: {error}") from None


def check_declared_size(width: int, height: int, nbytes: int, name: str) -> None:
    """Raise `ValueError` naming `name` if `width x height` pixels exceed either bound of the module docstring."""
    pixels = width * height
    if pixels > MAX_IMAGE_PIXELS:
        raise InputValueError(
            f"image {name} declares {width} x {height} pixels, more than the {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} "
            "read at most (refused as a possible decompression bomb)"
        )
    if pixels > MAX_PIXELS_PER_BYTE * nbytes:
        raise InputValueError(
            f"image {name} declares {width} x {height} pixels, more than its {nbytes} bytes can encode "
            f"({MAX_PIXELS_PER_BYTE} pixels a byte at most): the file is truncated or crafted"
        )


@contextlib.contextmanager
def open_image(file: IO[bytes] | Path, name: str, formats: Sequence[str], nbytes: int) -> Iterator:
    """`file` opened by Pillow as one of `formats` (e.g. `("PNG",)`), its header read and its size checked.

    Args:
        file: a binary stream or a path.
        name: how errors name the file.
        formats: the Pillow format ids to try; any other content is refused.
        nbytes: the file's size in bytes (bounds the pixels it may declare).

    Yields:
        The lazily opened `PIL.Image.Image`; decode it (`np.asarray`, `.convert`) within
        `image_errors(name)`.

    Raises:
        ValueError: naming `name`, if the content is not one of `formats`, the declared size
            exceeds `MAX_IMAGE_PIXELS` or `MAX_PIXELS_PER_BYTE * nbytes`, or reading the header fails.
    """
    from PIL import Image

    with image_errors(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the sizes it warns of are checked below
        image = Image.open(file, formats=list(formats))
    with image:
        check_declared_size(image.width, image.height, nbytes, name)
        yield image
