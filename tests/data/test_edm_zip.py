"""`load_dataset("edm-zip")`: zips and folders laid out as NVlabs/edm's dataset_tool.py writes them."""

import io
import json
import os
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from bounded import bounded
from PIL import Image

from gaussjax.data import load_dataset

EDM_SOURCE = Path(os.environ.get("EDM_SOURCE", "/work/torchref/edm"))
EDM_PYTHON = Path(os.environ.get("EDM_PYTHON", "/work/torchref/.venv/bin/python"))


def png(pixels: np.ndarray) -> bytes:
    """`pixels` (uint8 `(H, W)` grayscale or `(H, W, 3)` RGB) encoded as a PNG by Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png", compress_level=0)
    return buffer.getvalue()


def write_dataset(root: Path, members: dict, *, as_zip: bool) -> Path:
    """Write `{relative_path: bytes | str}` as a zip (`root.zip`) or as files under the folder `root`."""
    if as_zip:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return path
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def tool_layout(pixels: np.ndarray, labels=None) -> dict:
    """dataset_tool.py's layout: `00000/img00000000.png`, ... and `dataset.json` (labels or null)."""
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(pixels))]
    members = {name: png(image) for name, image in zip(names, pixels, strict=True)}
    listed = None if labels is None else [[name, int(label)] for name, label in zip(names, labels, strict=True)]
    members["dataset.json"] = json.dumps({"labels": listed})
    return members


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
@pytest.mark.parametrize("channels", [1, 3])
def test_pixels_and_labels_match_the_written_images(tmp_path, as_zip, channels):
    rng = np.random.default_rng(channels)
    shape = (5, 4, 4) if channels == 1 else (5, 4, 4, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 1])
    root = write_dataset(tmp_path / "ds", tool_layout(pixels, labels), as_zip=as_zip)
    dataset = load_dataset("edm-zip", root=root)
    assert dataset.name == "edm-zip" and dataset.split == "all"
    assert dataset.images.shape == (5, 4, 4, channels) and dataset.images.dtype == np.float32
    np.testing.assert_allclose(dataset.images, pixels.reshape(5, 4, 4, channels) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_order_is_sorted_relative_path_strings_and_non_images_are_ignored(tmp_path, as_zip):
    # '-' (0x2d) sorts before '/' (0x2f): EDM sorts the path strings, so "a-b.png" precedes "a/b.png"
    names = ["b.png", "a/b.png", "a-b.png", "a/a.PNG", "z/y/x.png"]
    values = {name: np.full((2, 2), 10 * i, dtype=np.uint8) for i, name in enumerate(names)}
    members = {name: png(image) for name, image in values.items()}
    members.update({"notes.txt": "not an image", "a/readme.md": "# no", "dataset.json": json.dumps(
        {"labels": [[name, i] for i, name in enumerate(names)]})})
    dataset = load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))
    expected_order = ["a-b.png", "a/a.PNG", "a/b.png", "b.png", "z/y/x.png"]
    np.testing.assert_array_equal(dataset.labels, [names.index(name) for name in expected_order])
    expected = np.stack([values[name] for name in expected_order])[..., None] / 127.5 - 1.0
    np.testing.assert_allclose(dataset.images, expected, atol=1e-6)


@pytest.mark.parametrize("labels_file", [None, {"labels": None}], ids=["absent", "null"])
def test_no_labels(tmp_path, labels_file):
    members = tool_layout(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    del members["dataset.json"]
    if labels_file is not None:
        members["dataset.json"] = json.dumps(labels_file)
    assert load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=True)).labels is None


def test_max_size_keeps_the_first_images_and_their_labels(tmp_path):
    pixels = np.arange(6, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2) * 40
    root = write_dataset(tmp_path / "ds", tool_layout(pixels, [5, 4, 3, 2, 1, 0]), as_zip=True)
    dataset = load_dataset("edm-zip", root=root, max_size=4)
    np.testing.assert_allclose(dataset.images[..., 0], pixels[:4] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, [5, 4, 3, 2])
    assert len(load_dataset("edm-zip", root=root, max_size=100)) == 6
    with pytest.raises(ValueError, match="`max_size`"):
        load_dataset("edm-zip", root=root, max_size=0)


def test_splits(tmp_path):
    root = write_dataset(tmp_path / "ds", tool_layout(np.zeros((2, 4, 4), dtype=np.uint8)), as_zip=True)
    assert len(load_dataset("edm-zip", root=root, split="train")) == 2
    with pytest.raises(ValueError, match="no test split"):
        load_dataset("edm-zip", root=root, split="test")


def test_missing_and_unreadable_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("edm-zip", root=tmp_path / "missing.zip")
    (tmp_path / "images.tar").write_bytes(b"x")
    with pytest.raises(ValueError, match="`root` must be a directory or a .zip"):
        load_dataset("edm-zip", root=tmp_path / "images.tar")
    (tmp_path / "bad.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        load_dataset("edm-zip", root=tmp_path / "bad.zip")
    root = write_dataset(tmp_path / "empty", {"dataset.json": '{"labels": null}'}, as_zip=True)
    with pytest.raises(FileNotFoundError, match="no image files"):
        load_dataset("edm-zip", root=root)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_mixed_shapes_name_both_images(tmp_path, as_zip):
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8))
    members["00000/img00000002.png"] = png(np.zeros((4, 4, 3), dtype=np.uint8))  # RGB among grayscale
    del members["dataset.json"]
    shapes = r"differ in shape.*img00000000.png is \(4, 4, 1\).*img00000002.png is \(4, 4, 3\)"
    with pytest.raises(ValueError, match=shapes):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))
    members["00000/img00000002.png"] = png(np.zeros((8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds2", members, as_zip=as_zip))


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_corrupt_and_unsupported_images_are_named(tmp_path, as_zip):
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8))
    members["00000/img00000001.png"] = members["00000/img00000001.png"][:40]  # truncated PNG
    with pytest.raises(ValueError, match="cannot read image 00000/img00000001.png"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))
    members["00000/img00000001.png"] = png(np.zeros((4, 4), dtype=np.uint16) + 1000)  # 16-bit grayscale
    with pytest.raises(ValueError, match="img00000001.png.*not one of the 8-bit modes"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds2", members, as_zip=as_zip))


def test_labels_must_cover_exactly_the_images(tmp_path):
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1])
    labels = json.loads(members["dataset.json"])["labels"]
    members["dataset.json"] = json.dumps({"labels": labels + [["00000/img00000009.png", 2]]})
    with pytest.raises(ValueError, match="dataset.json.*labels 00000/img00000009.png, which is not an image"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "extra", members, as_zip=True))
    members["dataset.json"] = json.dumps({"labels": labels[:1]})
    with pytest.raises(ValueError, match="dataset.json.*no label for image 00000/img00000001.png"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "missing", members, as_zip=False))


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"classes": []}', "must hold"),
    ('{"labels": [["00000/img00000000.png", [0.0, 1.0]], ["00000/img00000001.png", [1.0, 0.0]]]}', "integer class"),
    ('{"labels": [["00000/img00000000.png", 1.5], ["00000/img00000001.png", 0]]}', "integer class"),
])
def test_malformed_labels_file(tmp_path, text, match):
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8))
    members["dataset.json"] = text
    with pytest.raises(ValueError, match=f"dataset.json.*{match}"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=True))


_EDM_READER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from training.dataset import ImageFolderDataset
dataset = ImageFolderDataset(sys.argv[2], use_pyspng=False, use_labels=True)
images = np.stack([dataset[i][0] for i in range(len(dataset))])
np.savez(sys.argv[3], images=images, labels=dataset._get_raw_labels())
"""


@pytest.mark.skipif(not (EDM_PYTHON.exists() and (EDM_SOURCE / "training" / "dataset.py").exists()),
                    reason="needs NVlabs/edm's sources and a Python with torch ($EDM_SOURCE, $EDM_PYTHON)")
def test_agrees_with_edm_image_folder_dataset(tmp_path):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    members = tool_layout(pixels, [2, 0, 1, 2])
    members["00000/extra.png"] = png(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))  # sorts first
    members["dataset.json"] = json.dumps({"labels": json.loads(members["dataset.json"])["labels"]
                                          + [["00000/extra.png", 5]]})
    root = write_dataset(tmp_path / "ds", members, as_zip=True)
    subprocess.run([str(EDM_PYTHON), "-c", _EDM_READER, str(EDM_SOURCE), str(root), str(tmp_path / "edm.npz")],
                   check=True, capture_output=True, timeout=120)
    edm = np.load(tmp_path / "edm.npz")
    dataset = load_dataset("edm-zip", root=root)
    np.testing.assert_allclose(dataset.images, edm["images"].transpose(0, 2, 3, 1) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, edm["labels"])


# --- hostile files (issue 21): refused with a ValueError naming them, in bounded time and memory ---


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG (8-bit grayscale) declaring `width x height`, with `idat` (zlib data) as its pixels, built by hand."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def black_png(side: int) -> bytes:
    """A valid all-black grayscale PNG of `side x side` pixels, deflated row by row (small in memory and on disk)."""
    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the row
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_header_only(side, side, idat)


def test_shapes_are_checked_from_the_headers_before_any_allocation(tmp_path):
    # D14: one 4000 x 4000 image first, then 3,000 8 x 8 ones: allocating (N, 4000, 4000, 1) took 48 GB
    members = {"00000/img00000000.png": black_png(4000)}
    small = png(np.zeros((8, 8), dtype=np.uint8))
    members.update({f"00000/img{i:08d}.png": small for i in range(1, 3001)})
    root = write_dataset(tmp_path / "ds", members, as_zip=True)
    with bounded(seconds=10, megabytes=50):
        with pytest.raises(ValueError, match=r"differ in shape.*img00000000.png is \(4000, 4000, 1\).*img00000001.png "
                                             r"is \(8, 8, 1\)"):
            load_dataset("edm-zip", root=root)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, as_zip):
    # 9000 x 9000 = 81 Mpixel: under Pillow's own bomb limit, over the loader's (8192 x 8192)
    members = {"00000/img00000000.png": black_png(9000)}
    root = write_dataset(tmp_path / "ds", members, as_zip=as_zip)
    with bounded(seconds=5, megabytes=50):
        with pytest.raises(ValueError, match=r"img00000000.png.*declares 9000 x 9000 pixels, more than the 8192 x"):
            load_dataset("edm-zip", root=root)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_a_header_declaring_more_pixels_than_its_bytes_can_hold_is_refused(tmp_path, as_zip):
    # 3000 x 3000 pixels from 14 bytes of deflate data: the header lies (the decoder would allocate first)
    members = {"a.png": png_header_only(3000, 3000, zlib.compress(b"\x00"))}
    root = write_dataset(tmp_path / "ds", members, as_zip=as_zip)
    with bounded(seconds=5, megabytes=20):
        with pytest.raises(ValueError, match=r"a.png in .*declares 3000 x 3000 pixels, more than its \d+ bytes can"):
            load_dataset("edm-zip", root=root)


def test_two_members_of_one_name_are_refused(tmp_path):
    # D15: zipfile would read the second member twice
    path = tmp_path / "ds.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("00000/img00000000.png", png(np.zeros((4, 4), dtype=np.uint8)))
        archive.writestr("00000/img00000000.png", png(np.full((4, 4), 255, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"ds.zip holds two members named 00000/img00000000.png"):
        load_dataset("edm-zip", root=path)


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
@pytest.mark.parametrize("extra, match", [
    (["00000/img00000001.png", 0], r"`labels\[2\]` labels 00000/img00000001.png again"),  # the same class again
    (["00000/img00000001.png", 7], r"`labels\[2\]` labels 00000/img00000001.png again"),  # a conflicting class
], ids=["duplicate", "conflicting"])
def test_an_image_labelled_twice_is_refused(tmp_path, as_zip, extra, match):
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8), [3, 0])
    members["dataset.json"] = json.dumps({"labels": json.loads(members["dataset.json"])["labels"] + [extra]})
    with pytest.raises(ValueError, match=f"dataset.json.*{match}"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))


@pytest.mark.parametrize("label", [-1, 10**30, -(10**30), 2**63], ids=["negative", "1e30", "-1e30", "2**63"])
def test_classes_outside_int64_or_negative_are_refused(tmp_path, label):
    # D15 (negative) and D10 (10**30 overflowed int64 with an OverflowError)
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1])
    members["dataset.json"] = members["dataset.json"].replace(", 1]", f", {label}]")
    with pytest.raises(ValueError, match=r"dataset.json in .*ds.zip: `labels\[1\]`: the class of "
                                         r"00000/img00000001.png must be an integer in \[0, 2\*\*63\)"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=True))
    members["dataset.json"] = members["dataset.json"].replace(f", {label}]", f", {2**63 - 1}]")
    assert load_dataset("edm-zip", root=write_dataset(tmp_path / "ok", members, as_zip=True)).labels[1] == 2**63 - 1


def test_deeply_nested_labels_file_is_refused(tmp_path):
    # D10: json.loads raised RecursionError
    members = tool_layout(np.zeros((2, 4, 4), dtype=np.uint8))
    members["dataset.json"] = '{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}"
    root = write_dataset(tmp_path / "ds", members, as_zip=True)
    with bounded(seconds=5, megabytes=50):
        with pytest.raises(ValueError, match=r"dataset.json in .*ds.zip is not a labels file: .*nests .* too deeply"):
            load_dataset("edm-zip", root=root)


def patch_central_directory(path: Path, member: str, offset: int, value: int) -> None:
    """Overwrite the 2-byte field at `offset` of `member`'s central-directory header (8: flags, 10: method)."""
    data = bytearray(path.read_bytes())
    position = data.find(b"PK\x01\x02")
    while data[position + 46 : position + 46 + len(member)] != member.encode():
        position = data.find(b"PK\x01\x02", position + 4)
    struct.pack_into("<H", data, position + offset, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["00000/img00000001.png", "dataset.json"])
@pytest.mark.parametrize("offset, value, match", [
    (8, 0x1, "encrypted"),  # the encryption flag: zipfile raised RuntimeError
    (10, 99, "compression method"),  # an unknown compression method (AES): zipfile raised NotImplementedError
], ids=["encrypted", "unknown-method"])
def test_unreadable_zip_members_are_named(tmp_path, member, offset, value, match):
    root = write_dataset(tmp_path / "ds", tool_layout(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1]), as_zip=True)
    patch_central_directory(root, member, offset, value)
    with pytest.raises(ValueError, match=f"cannot read member {member} of .*ds.zip: .*{match}"):
        load_dataset("edm-zip", root=root)


@pytest.mark.parametrize("member", ["a.png", "dataset.json"])
def test_corrupt_deflate_data_is_named(tmp_path, member):
    # a deflate block of the reserved type 3: zipfile raised zlib.error from inside Pillow (or json)
    path = tmp_path / "ds.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, png(np.zeros((4, 4), dtype=np.uint8)) if member == "a.png" else '{"labels": null}')
        archive.writestr("b.png", png(np.zeros((4, 4), dtype=np.uint8)))
    data = bytearray(path.read_bytes())
    data[30 + len(member)] = 0xFF  # the first byte of the member's deflate stream, after its local header
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"cannot read .*{member} in .*ds.zip: .*invalid block type"):
        load_dataset("edm-zip", root=path)


POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n0 0 moveto 4 4 lineto stroke\nshowpage\n%%EOF\n"


@pytest.fixture
def ghostscript_calls(monkeypatch):
    """Pillow's Ghostscript runner replaced by a recorder (which then fails as if Ghostscript were missing)."""
    from PIL import EpsImagePlugin

    calls = []

    def ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("Unable to locate Ghostscript on paths")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    return calls


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_postscript_named_png_is_refused_without_running_ghostscript(tmp_path, as_zip, ghostscript_calls):
    # S1: Image.open tried every format Pillow has, EPS among them, and loading it ran Ghostscript
    members = tool_layout(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    members["00000/img00000001.png"] = POSTSCRIPT
    with pytest.raises(ValueError, match=r"cannot read image 00000/img00000001.png in .*cannot identify image file"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))
    assert ghostscript_calls == []


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_other_image_formats_are_refused_by_name(tmp_path, as_zip, ghostscript_calls):
    # an .eps (or .jpg) member would be an image to EDM; dataset_tool.py writes only PNGs: refused, never opened
    members = tool_layout(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    members["00000/cover.eps"] = POSTSCRIPT
    members["00000/thumb.jpg"] = b"\xff\xd8 not opened"
    with pytest.raises(ValueError, match=r"00000/cover.eps in .*ds.* is not a PNG: .*\(2 such files\)"):
        load_dataset("edm-zip", root=write_dataset(tmp_path / "ds", members, as_zip=as_zip))
    assert ghostscript_calls == []
