"""`load_dataset("edm-zip")`: zips and folders laid out as NVlabs/edm's dataset_tool.py writes them."""

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
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
    members = {name: png(image) for name, image in zip(names, pixels)}
    listed = None if labels is None else [[name, int(label)] for name, label in zip(names, labels)]
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
    with pytest.raises(ValueError, match=r"differ in shape.*img00000000.png is \(4, 4, 1\).*img00000002.png is \(4, 4, 3\)"):
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
