import pickle
import struct

import numpy as np
import pytest

from gaussjax.data import load_dataset


def _py2_bytes(value: bytes) -> bytes:
    """A Python 2 `str`, as cPickle protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<I", len(value)) + value


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch exactly as the official Python 2 files encode it, opcode by opcode.

    `{'batch_label': str, 'data': uint8 ndarray (n, 3072), 'labels': [int]}` where the
    array is `numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')` + BUILD state.
    """
    dtype = (b"cnumpy\ndtype\n" + _py2_bytes(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_bytes(b"|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff"
             + _py2_int(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2_int(0) + b"\x85"
             + _py2_bytes(b"b") + b"\x87R"
             + b"(" + _py2_int(1) + _py2_int(data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
             + dtype + b"\x89" + _py2_bytes(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + _py2_bytes(b"batch_label") + _py2_bytes(b"training batch 1 of 5")
            + _py2_bytes(b"data") + array + _py2_bytes(b"labels") + label_list + b"u.")


def planar_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """CIFAR's row layout written independently: per image, all R, then all G, then all B."""
    rows = []
    for image in images_nhwc:
        rows.append(np.concatenate([image[:, :, c].ravel() for c in range(3)]))
    return np.stack(rows)


def write_cifar(directory, rng, *, sizes=(4, 3, 2, 3, 2), test_size=5, writer="py2"):
    directory.mkdir(parents=True, exist_ok=True)
    truth = {"train": ([], []), "test": ([], [])}
    names = [(f"data_batch_{i + 1}", "train", n) for i, n in enumerate(sizes)] + [("test_batch", "test", test_size)]
    for name, split, n in names:
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        rows = planar_rows(images)
        if writer == "py2":
            payload = py2_cifar_pickle(rows, labels)
        else:
            payload = pickle.dumps({"batch_label": "x", "data": rows, "labels": labels}, protocol=2)
        (directory / name).write_bytes(payload)
        truth[split][0].append(images)
        truth[split][1].extend(labels)
    return {k: (np.concatenate(v[0]), np.array(v[1])) for k, v in truth.items()}


@pytest.mark.parametrize("writer", ["py2", "py3"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_batches_load_pixel_by_pixel(tmp_path, writer, split):
    truth = write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(1), writer=writer)
    dataset = load_dataset("cifar10", root=tmp_path, split=split)
    images, labels = truth[split]
    assert dataset.images.shape == images.shape
    np.testing.assert_allclose(dataset.images, images / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_channel_planar_layout_single_pixel(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    row = np.zeros(3072, dtype=np.uint8)
    row[0 * 1024 + 5 * 32 + 7] = 255  # red plane, pixel (5, 7)
    row[1 * 1024 + 0] = 255  # green plane, pixel (0, 0)
    row[2 * 1024 + 31 * 32 + 31] = 255  # blue plane, pixel (31, 31)
    for name in ["test_batch"]:
        (directory / name).write_bytes(py2_cifar_pickle(row[None], [3]))
    image = load_dataset("cifar10", root=directory, split="test").images[0]
    assert image[5, 7, 0] == 1.0 and image[0, 0, 1] == 1.0 and image[31, 31, 2] == 1.0
    assert (image == 1.0).sum() == 3


class _Exploit:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"open({str(self.sentinel)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    truth_dir = tmp_path / "cifar-10-batches-py"
    write_cifar(truth_dir, np.random.default_rng(2))
    sentinel = tmp_path / "pwned.txt"
    (truth_dir / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(sentinel)}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_3.*(__builtin__|builtins)\.exec.*refused"):
        load_dataset("cifar10", root=tmp_path)
    assert not sentinel.exists()


def test_os_system_pickle_is_refused(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory, np.random.default_rng(3))
    sentinel = tmp_path / "ran"
    (directory / "test_batch").write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(f"touch {sentinel}"))
                                           + f"touch {sentinel}".encode() + b"\x85R.")
    with pytest.raises(ValueError, match=r"(os|posix)\.system"):
        load_dataset("cifar10", root=directory, split="test")
    assert not sentinel.exists()


def test_missing_batch_names_the_file(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory, np.random.default_rng(4))
    (directory / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_dataset("cifar10", root=tmp_path)


def test_empty_root_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", root=tmp_path)


def test_truncated_batch(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory, np.random.default_rng(5))
    path = directory / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="test_batch is not a valid CIFAR-10 batch"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_label_count_mismatch(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory, np.random.default_rng(6))
    rows = np.zeros((4, 3072), dtype=np.uint8)
    (directory / "test_batch").write_bytes(py2_cifar_pickle(rows, [1, 2, 3]))
    with pytest.raises(ValueError, match="4 images but labels"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_wrong_row_length(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory, np.random.default_rng(7))
    (directory / "test_batch").write_bytes(py2_cifar_pickle(np.zeros((2, 1024), dtype=np.uint8), [1, 2]))
    with pytest.raises(ValueError, match=r"uint8 \(n, 3072\)"):
        load_dataset("cifar10", root=tmp_path, split="test")
