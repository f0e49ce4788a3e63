import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from gaussjax.data import load_dataset
from gaussjax.data._mnist import read_idx


def write_idx(path, array, *, type_code=0x08, gz=False):
    """An IDX file written from the format's spec: magic 0 0 type ndim, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.fixture
def mnist_arrays():
    rng = np.random.default_rng(0)
    return {
        "train": (rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3, dtype=np.uint8)),
    }


def write_mnist_idx(root, arrays, *, gz):
    suffix = ".gz" if gz else ""
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[split]
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_files_load_pixel_by_pixel(tmp_path, mnist_arrays, gz, split):
    write_mnist_idx(tmp_path, mnist_arrays, gz=gz)
    dataset = load_dataset("mnist", root=tmp_path, split=split)
    images, labels = mnist_arrays[split]
    assert dataset.images.shape == (len(images), 28, 28, 1)
    assert dataset.images.dtype == np.float32
    for n, i, j in [(0, 0, 0), (len(images) - 1, 27, 27), (1, 13, 5)]:
        assert dataset.images[n, i, j, 0] == pytest.approx(images[n, i, j] / 127.5 - 1.0, abs=1e-6)
    np.testing.assert_allclose(dataset.images[..., 0], images / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.name == "mnist" and dataset.split == split


def test_torchvision_layout_is_found(tmp_path, mnist_arrays):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_mnist_idx(raw, mnist_arrays, gz=True)
    assert len(load_dataset("mnist", root=tmp_path)) == 7


def test_keras_npz(tmp_path, mnist_arrays):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=mnist_arrays["train"][0], y_train=mnist_arrays["train"][1],
             x_test=mnist_arrays["test"][0], y_test=mnist_arrays["test"][1])
    for root in (tmp_path, path):
        dataset = load_dataset("mnist", root=root, split="test")
        np.testing.assert_allclose(dataset.images[..., 0], mnist_arrays["test"][0] / 127.5 - 1.0, atol=1e-6)
        np.testing.assert_array_equal(dataset.labels, mnist_arrays["test"][1])


def test_pad_to_32_pads_with_black(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    dataset = load_dataset("mnist", root=tmp_path, pad_to=32)
    assert dataset.images.shape == (7, 32, 32, 1)
    np.testing.assert_array_equal(dataset.images[:, :2], -1.0)
    np.testing.assert_array_equal(dataset.images[:, :, 30:], -1.0)
    np.testing.assert_allclose(dataset.images[:, 2:30, 2:30, 0], mnist_arrays["train"][0] / 127.5 - 1.0, atol=1e-6)


def test_read_idx_other_types(tmp_path):
    array = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "a.idx", array, type_code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_missing_files_name_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\].*mnist\.npz"):
        load_dataset("mnist", root=tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")


def test_no_root_says_to_pass_one(monkeypatch):
    monkeypatch.delenv("GAUSSJAX_DATA", raising=False)
    with pytest.raises(ValueError, match="pass root="):
        load_dataset("mnist")


def test_data_dir_environment_variable(tmp_path, mnist_arrays, monkeypatch):
    (tmp_path / "mnist").mkdir()
    write_mnist_idx(tmp_path / "mnist", mnist_arrays, gz=False)
    monkeypatch.setenv("GAUSSJAX_DATA", str(tmp_path))
    assert len(load_dataset("mnist", split="test")) == 3


def test_wrong_magic(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match="bad magic number"):
        load_dataset("mnist", root=tmp_path)


def test_truncated_file(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("mnist", root=tmp_path)


def test_truncated_gzip(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated or corrupt gzip"):
        load_dataset("mnist", root=tmp_path)


def test_image_label_count_mismatch(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", mnist_arrays["train"][1][:5])
    with pytest.raises(ValueError, match="7 images but labels of shape"):
        load_dataset("mnist", root=tmp_path)


def test_bad_options(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    with pytest.raises(ValueError, match="pad_to"):
        load_dataset("mnist", root=tmp_path, pad_to=20)
    with pytest.raises(ValueError, match="official splits"):
        load_dataset("mnist", root=tmp_path, split="all")


def idx_header(shape, type_code=0x08):
    return struct.pack(">BBBB", 0, 0, type_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def peak_memory_of(function):
    """Peak traced memory (NumPy arrays and Python objects) while `function` runs, in bytes."""
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    # the header declares 2 images of 28x28 (1,568 bytes); the payload inflates to 50 MB of zeros
    path.write_bytes(gzip.compress(idx_header((2, 28, 28)) + bytes(50 << 20)))
    assert path.stat().st_size < 100_000

    def load():
        with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz has trailing data.*1568 bytes"):
            load_dataset("mnist", root=tmp_path)

    assert peak_memory_of(load) < 8 << 20  # bounded chunks, never the 50 MB


def test_header_declaring_more_than_the_file_can_hold_allocates_nothing(tmp_path, mnist_arrays):
    write_mnist_idx(tmp_path, mnist_arrays, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((100_000, 28, 28)) + bytes(1000)))  # declares 78 MB

    def load():
        with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is truncated.*can hold"):
            load_dataset("mnist", root=tmp_path)

    assert peak_memory_of(load) < 8 << 20


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_data(tmp_path, mnist_arrays, gz):
    images = mnist_arrays["train"][0]
    payload = idx_header(images.shape) + images.tobytes() + b"extra"
    write_mnist_idx(tmp_path, mnist_arrays, gz=gz)
    path = tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(ValueError, match=rf"{path.name} has trailing data"):
        load_dataset("mnist", root=tmp_path)


def test_random_bytes_are_not_an_idx_file_nor_a_pickle(tmp_path, mnist_arrays):
    junk = b"\x80\x04" + np.random.default_rng(4).bytes(300)
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(junk)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is not an IDX file: bad magic number 0x8004"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(ValueError, match=r"not an IDX file: bad magic number none \(the file is empty\)"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "mnist.npz").write_bytes(junk)
    with pytest.raises(ValueError, match=r"mnist\.npz is not a valid \.npz file \(bad magic 0x8004"):
        load_dataset("mnist", root=tmp_path / "mnist.npz")


def test_pad_to_says_what_it_needs(tmp_path, mnist_arrays):
    rng = np.random.default_rng(5)
    write_mnist_idx(tmp_path, mnist_arrays, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (7, 28, 20), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"`pad_to` = 32 needs square images no larger than 32 x 32, got 28 x 20"):
        load_dataset("mnist", root=tmp_path, pad_to=32)
    with pytest.raises(ValueError, match=r"`pad_to` = 20 needs square images no larger than 20 x 20, got 28 x 28"):
        load_dataset("mnist", root=tmp_path, split="test", pad_to=20)
