import numpy as np
import pytest

from gaussjax.data import load_dataset


def test_uint8_npy(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    dataset = load_dataset("array", root=tmp_path / "x.npy")
    np.testing.assert_allclose(dataset.images, images / 127.5 - 1.0, atol=1e-6)
    assert dataset.labels is None


def test_float_npz_with_labels_and_value_range(tmp_path):
    rng = np.random.default_rng(1)
    images, labels = rng.random((6, 4, 4)).astype(np.float64), np.arange(6)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    dataset = load_dataset("array", root=tmp_path / "d.npz", value_range=(0, 1))
    assert dataset.images.shape == (6, 4, 4, 1) and dataset.images.dtype == np.float32
    np.testing.assert_allclose(dataset.images[..., 0], 2 * images - 1, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_channels_first_and_custom_keys(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)  # (N, C, H, W)
    np.savez(tmp_path / "d.npz", pics=images, classes=np.array([7, 8]))
    dataset = load_dataset("array", root=tmp_path / "d.npz", key="pics", labels_key="classes", channels_first=True)
    assert dataset.images.shape == (2, 5, 4, 3)
    assert dataset.images[1, 4, 2, 1] == pytest.approx(images[1, 1, 4, 2] / 127.5 - 1, abs=1e-6)
    np.testing.assert_array_equal(dataset.labels, [7, 8])


def test_float_out_of_default_range_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 4, 4, 3), 200.0))
    with pytest.raises(ValueError, match=r"outside value_range=\(-1, 1\).*value_range=\(0, 1\) or \(0, 255\)"):
        load_dataset("array", root=tmp_path / "x.npy")


def test_nan_is_refused(tmp_path):
    images = np.zeros((2, 4, 4, 3))
    images[1, 2, 2, 0] = np.nan
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(ValueError, match="NaN"):
        load_dataset("array", root=tmp_path / "x.npy")


def test_error_paths(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, C\)"):
        load_dataset("array", root=tmp_path / "flat.npy")
    np.save(tmp_path / "nchw.npy", np.zeros((4, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="channels_first=True"):
        load_dataset("array", root=tmp_path / "nchw.npy")
    np.save(tmp_path / "int16.npy", np.zeros((4, 8, 8), dtype=np.int16))
    with pytest.raises(TypeError, match="value_range"):
        load_dataset("array", root=tmp_path / "int16.npy")
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 4, 4), dtype=np.uint8), b=np.zeros(3))
    with pytest.raises(KeyError, match="pass key="):
        load_dataset("array", root=tmp_path / "d.npz")
    with pytest.raises(KeyError, match="no array 'c'"):
        load_dataset("array", root=tmp_path / "d.npz", key="c")
    np.savez(tmp_path / "m.npz", images=np.zeros((2, 4, 4), dtype=np.uint8), labels=np.zeros(3))
    with pytest.raises(ValueError, match="2 images but labels"):
        load_dataset("array", root=tmp_path / "m.npz")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        load_dataset("array", root=tmp_path / "empty.npy")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match=".npy or .npz"):
        load_dataset("array", root=tmp_path / "x.txt")
    np.save(tmp_path / "good.npy", np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="low < high"):
        load_dataset("array", root=tmp_path / "good.npy", value_range=(1, 0))


@pytest.mark.parametrize("value_range", [(0, np.inf), (-np.inf, 1), (0, 1e39)])
def test_infinite_value_range_is_refused(tmp_path, value_range):
    np.save(tmp_path / "x.npy", np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4))
    with pytest.raises(ValueError, match="`value_range` must have finite bounds"):  # not an all-black dataset
        load_dataset("array", root=tmp_path / "x.npy", value_range=value_range)


def test_random_bytes_are_refused_naming_the_file_and_never_unpickled(tmp_path):
    junk = b"\x80\x04" + np.random.default_rng(3).bytes(200)  # starts like a pickle, as NumPy would guess
    (tmp_path / "x.npy").write_bytes(junk)
    with pytest.raises(ValueError, match=r"x\.npy is not a valid \.npy file \(bad magic 0x8004.*numpy\.save"):
        load_dataset("array", root=tmp_path / "x.npy")
    (tmp_path / "d.npz").write_bytes(junk)
    with pytest.raises(ValueError, match=r"d\.npz is not a valid \.npz file \(bad magic 0x8004.*numpy\.savez"):
        load_dataset("array", root=tmp_path / "d.npz")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy is not a valid \.npy file \(bad magic none"):
        load_dataset("array", root=tmp_path / "empty.npy")


def test_object_arrays_are_refused_naming_the_file(tmp_path):
    objects = np.empty((2, 4, 4), dtype=object)
    np.save(tmp_path / "o.npy", objects, allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy is not a valid \.npy file: Object arrays"):
        load_dataset("array", root=tmp_path / "o.npy")
    np.savez(tmp_path / "o.npz", images=objects)
    with pytest.raises(ValueError, match=r"o\.npz: array 'images' cannot be read: Object arrays"):
        load_dataset("array", root=tmp_path / "o.npz")
