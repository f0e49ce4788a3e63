import struct
import zlib

import numpy as np
import pytest
from bounded import bounded
from PIL import Image

from gaussjax.data import load_dataset


def png_bytes(width: int, height: int, color_type: int, idat: bytes) -> bytes:
    """A PNG from the spec (8-bit, filter 0) with the given header and compressed data, independent of Pillow."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_png(path, pixels: np.ndarray):
    """A PNG of `pixels` (8-bit RGB `(H, W, 3)` or grayscale `(H, W)`)."""
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))
    path.write_bytes(png_bytes(pixels.shape[1], pixels.shape[0], 2 if pixels.ndim == 3 else 0, zlib.compress(raw)))


def test_png_folder_pixel_by_pixel(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        write_png(tmp_path / f"img_{i}.png", image)
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_dataset("folder", root=tmp_path)
    assert dataset.images.shape == (3, 6, 5, 3)
    assert dataset.labels is None and dataset.split == "all"
    np.testing.assert_allclose(dataset.images, pixels / 127.5 - 1.0, atol=1e-6)


def test_grayscale_mode(tmp_path):
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    write_png(tmp_path / "a.png", pixels)
    dataset = load_dataset("folder", root=tmp_path, mode="L")
    assert dataset.images.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(dataset.images[0, :, :, 0], pixels / 127.5 - 1.0, atol=1e-6)


def test_jpeg_folder_loads_close_to_source(tmp_path):
    pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
    pixels[:, 4:] = 40
    Image.fromarray(pixels).save(tmp_path / "a.JPG", quality=95)
    dataset = load_dataset("folder", root=tmp_path)
    np.testing.assert_allclose(dataset.images[0], pixels / 127.5 - 1.0, atol=0.1)


def test_center_crop_and_resize(tmp_path):
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[:, 2:6] = 255  # the central 4x4 square is white, the sides black
    write_png(tmp_path / "wide.png", pixels)
    write_png(tmp_path / "small.png", np.full((2, 2, 3), 255, dtype=np.uint8))
    dataset = load_dataset("folder", root=tmp_path, resolution=4)
    assert dataset.images.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(dataset.images, 1.0, atol=1e-6)  # both become all-white 4x4


def test_mixed_sizes_without_resolution(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4, 3)))
    write_png(tmp_path / "b.png", np.zeros((5, 4, 3)))
    with pytest.raises(ValueError, match="differ in size.*resolution="):
        load_dataset("folder", root=tmp_path)


def test_empty_folder_and_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .png"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_dataset("folder", root=tmp_path)


def test_bad_arguments(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="`mode`"):
        load_dataset("folder", root=tmp_path, mode="CMYK")
    with pytest.raises(ValueError, match="`resolution`"):
        load_dataset("folder", root=tmp_path, resolution=0)
    with pytest.raises(ValueError, match="no test split"):
        load_dataset("folder", root=tmp_path, split="test")
    with pytest.raises(ValueError, match="root"):
        load_dataset("folder", root=tmp_path / "a.png")


def test_resolution_has_an_upper_bound(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="`resolution` must be <= 4096.*got 4097"):
        load_dataset("folder", root=tmp_path, resolution=4097, mode="L")


def test_decompression_bomb_and_decoder_errors_name_the_file(tmp_path):
    # a 2 KB PNG declaring 20000 x 20000 pixels (400 MP, over Pillow's bomb limit)
    (tmp_path / "bomb.png").write_bytes(png_bytes(20000, 20000, 0, zlib.compress(bytes(20001 * 2))))
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png: Pillow refuses it as a decompression bomb"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "bomb.png").unlink()
    # a valid header, but compressed data that is not a zlib stream: fails while decoding
    (tmp_path / "garbled.png").write_bytes(png_bytes(4, 4, 0, b"\x78\x9c" + bytes(range(40, 80))))
    with pytest.raises(ValueError, match=r"cannot read image .*garbled\.png"):
        load_dataset("folder", root=tmp_path)


# --- hostile files (issue 21): refused with a ValueError naming them, in bounded time and memory ---

POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n0 0 moveto 4 4 lineto stroke\nshowpage\n%%EOF\n"


def black_png(path, side: int):
    """A valid all-black grayscale PNG of `side x side` pixels, deflated row by row (small in memory and on disk)."""
    compressor, row = zlib.compressobj(9), bytes(side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    path.write_bytes(png_bytes(side, side, 0, idat))


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_postscript_under_an_image_name_is_refused_without_running_ghostscript(tmp_path, monkeypatch, name):
    # S1: Image.open tried every format Pillow has, EPS among them, and loading it ran Ghostscript
    from PIL import EpsImagePlugin

    calls = []

    def ghostscript(*args, **kwargs):  # records the call, then fails as if Ghostscript were missing
        calls.append(args)
        raise OSError("Unable to locate Ghostscript on paths")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    (tmp_path / name).write_bytes(POSTSCRIPT)
    with pytest.raises(ValueError, match=f"cannot read image .*{name}: cannot identify image file"):
        load_dataset("folder", root=tmp_path)
    assert calls == []


def test_sizes_are_compared_from_the_headers_before_decoding(tmp_path):
    black_png(tmp_path / "a.png", 4000)  # decoded as RGB: 48 MB
    write_png(tmp_path / "b.png", np.zeros((8, 8, 3)))
    with bounded(seconds=5, megabytes=20):
        with pytest.raises(ValueError, match=r"differ in size: a.png is \(4000, 4000\), b.png is \(8, 8\)"):
            load_dataset("folder", root=tmp_path)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    black_png(tmp_path / "a.png", 9000)  # 81 Mpixel: under Pillow's own bomb limit, over the loader's
    with bounded(seconds=5, megabytes=50):
        with pytest.raises(ValueError, match=r"a.png declares 9000 x 9000 pixels, more than the 8192 x 8192"):
            load_dataset("folder", root=tmp_path, resolution=8, mode="L")


def test_a_header_declaring_more_pixels_than_its_bytes_can_hold_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(3000, 3000, 0, zlib.compress(b"\x00")))
    with bounded(seconds=5, megabytes=20):
        with pytest.raises(ValueError, match=r"a.png declares 3000 x 3000 pixels, more than its \d+ bytes can encode"):
            load_dataset("folder", root=tmp_path, resolution=8)
