"""Loading with bounded memory: aligned float32 images, block-wise conversion, data that enters JAX uncopied."""

import jax
import numpy as np
import pytest
from test_edm_zip import tool_layout, write_dataset

import gaussjax.data._edm_zip as edm_zip
import gaussjax.data._pixels as pixels_module
from gaussjax.data import load_dataset
from gaussjax.data._memory import ALIGNMENT, device_view, empty_aligned
from gaussjax.data._pixels import to_signed_unit

ON_CPU = jax.default_backend() == "cpu"


@pytest.mark.parametrize("shape, dtype", [((3, 5, 7), np.float32), ((0, 4), np.float64), ((), np.uint8)])
def test_empty_aligned(shape, dtype):
    array = empty_aligned(shape, dtype)
    assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable
    assert array.size == 0 or array.ctypes.data % ALIGNMENT == 0


@pytest.mark.parametrize("block_elements", [10, 64, 2**22], ids=["row-blocks", "several-rows", "one-block"])
@pytest.mark.parametrize("dtype, value_range", [(np.uint8, (0, 255)), (np.float64, (-3.0, 5.0))])
def test_to_signed_unit_in_blocks_matches_float64(monkeypatch, block_elements, dtype, value_range):
    monkeypatch.setattr(pixels_module, "BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(0)
    low, high = value_range
    stored = rng.uniform(low, high, (13, 4, 4, 3))
    stored[0, 0, 0, 0], stored[-1, -1, -1, -1] = low, high
    stored = np.rint(stored).astype(dtype) if dtype == np.uint8 else stored
    out = to_signed_unit(stored, value_range)
    expected = (stored.astype(np.float64) - low) * (2.0 / (high - low)) - 1.0
    assert out.dtype == np.float32 and out.shape == stored.shape and out.ctypes.data % ALIGNMENT == 0
    np.testing.assert_allclose(out, expected, rtol=0, atol=4e-7 * max(abs(low), abs(high), 1))  # 3 float32 roundings
    assert out.min() >= -1 and out.max() <= 1


def test_to_signed_unit_errors_in_a_later_block(monkeypatch):
    monkeypatch.setattr(pixels_module, "BLOCK_ELEMENTS", 16)
    data = np.zeros((10, 4, 4))
    data[-1, 0, 0] = 2.0
    with pytest.raises(ValueError, match=r"values in \[0, 2\], outside value_range=\(-1, 1\)"):
        to_signed_unit(data, (-1.0, 1.0), name="images")
    data[-2, 1, 1] = np.nan  # NaN is reported first, wherever the range error is
    with pytest.raises(ValueError, match="images contains NaN"):
        to_signed_unit(data, (-1.0, 1.0), name="images")
    with pytest.raises(ValueError, match="`out` must be a C-contiguous float32"):
        to_signed_unit(np.zeros((2, 3), np.uint8), (0, 255), out=np.zeros((2, 3)))


@pytest.mark.parametrize("chunk", [1, 2, 64])
def test_edm_zip_decodes_in_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(edm_zip, "DECODE_CHUNK", chunk)
    pixels = np.random.default_rng(chunk).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    root = write_dataset(tmp_path / "ds", tool_layout(pixels, [0, 1, 2, 3, 4]), as_zip=True)
    dataset = load_dataset("edm-zip", root=root)
    np.testing.assert_allclose(dataset.images, pixels.astype(np.float64) / 127.5 - 1.0, rtol=0, atol=4e-7)
    assert dataset.images.ctypes.data % ALIGNMENT == 0


def test_device_view_uses_a_read_only_dataset_in_place():
    flat = load_dataset("digits").flat
    view = device_view(flat)
    assert isinstance(view, jax.Array)
    np.testing.assert_array_equal(np.asarray(view), flat)
    if ON_CPU:  # XLA's CPU client aliases 64-byte aligned host memory
        assert view.unsafe_buffer_pointer() == flat.ctypes.data


@pytest.mark.parametrize("array", [np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int32), [[1.0]]],
                         ids=["writable", "integer", "list"])
def test_device_view_leaves_other_arrays_alone(array):
    if isinstance(array, np.ndarray) and array.dtype == np.int32:
        array.setflags(write=False)
    assert device_view(array) is array
