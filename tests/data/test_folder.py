import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gaussjax.data import load_dataset


def write_png(path, pixels: np.ndarray):
    """A PNG written from the spec (8-bit RGB or grayscale, filter 0), independent of Pillow."""
    height, width = pixels.shape[:2]
    color_type = 2 if pixels.ndim == 3 else 0

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


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
    with pytest.raises(NotADirectoryError):
        load_dataset("folder", root=tmp_path / "a.png")
