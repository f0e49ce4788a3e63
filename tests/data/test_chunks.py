import numpy as np
import pytest

from gaussjax.data import iter_chunks, load_dataset


def test_npy_memmap_chunks_equal_full_conversion(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (1000, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "big.npy", images)
    chunks = list(iter_chunks(tmp_path / "big.npy", chunk_size=300))
    assert [c.shape for c in chunks] == [(300, 108)] * 3 + [(100, 108)]
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_allclose(np.concatenate(chunks), images.reshape(1000, -1) / 127.5 - 1.0, atol=1e-6)


def test_dataset_and_array_sources():
    dataset = load_dataset("digits")
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(dataset, 100))), dataset.flat)
    floats = np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4)
    (chunk,) = iter_chunks(floats, 10, value_range=(0, 1))
    np.testing.assert_allclose(chunk, 2 * floats.reshape(2, 16) - 1, atol=1e-6)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer, got 0"):
        next(iter_chunks(np.zeros((2, 4, 4), np.uint8), 0))
    with pytest.raises(ValueError, match=".npy file"):
        next(iter_chunks(tmp_path / "x.npz"))
    with pytest.raises(TypeError, match="`source`"):
        next(iter_chunks([1, 2, 3]))
    with pytest.raises(ValueError, match="outside value_range"):
        next(iter_chunks(np.full((2, 4, 4), 3.0)))


def test_bad_value_range_and_bad_npy_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="`value_range` must have finite bounds"):
        next(iter_chunks(np.zeros((2, 4, 4)), value_range=(0, np.inf)))
    (tmp_path / "x.npy").write_bytes(b"\x80\x04junk, not an array")
    with pytest.raises(ValueError, match=r"x\.npy is not a valid \.npy file \(bad magic"):
        next(iter_chunks(tmp_path / "x.npy"))
