import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.data import Dataset, flat_to_images, images_to_flat, load_dataset


def test_flat_view_and_round_trip():
    dataset = load_dataset("digits")
    assert dataset.flat.shape == (len(dataset), 64) and dataset.dim == 64
    np.testing.assert_array_equal(dataset.flat[3], dataset.images[3].ravel())
    np.testing.assert_array_equal(dataset.unflatten(dataset.flat), dataset.images)
    batch = jnp.ones((2, 5, 64))
    assert dataset.unflatten(batch).shape == (2, 5, 8, 8, 1)
    assert images_to_flat(jnp.ones((2, 8, 8, 1))).shape == (2, 64)


def test_dataset_is_immutable():
    dataset = load_dataset("digits")
    with pytest.raises(ValueError, match="read-only"):
        dataset.images[0, 0, 0, 0] = 0.5
    with pytest.raises(AttributeError):
        dataset.name = "other"


def test_chunks_cover_the_data_in_order():
    dataset = load_dataset("digits")
    chunks = list(dataset.chunks(500))
    assert [len(c) for c in chunks] == [500, 500, 442]
    np.testing.assert_array_equal(np.concatenate(chunks), dataset.flat)


def test_layout_errors():
    with pytest.raises(ValueError, match="last dimension H \\* W \\* C = 64"):
        flat_to_images(np.zeros((3, 63)), (8, 8, 1))
    with pytest.raises(ValueError, match="image_shape"):
        flat_to_images(np.zeros((3, 64)), (8, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, C\)"):
        images_to_flat(np.zeros((3, 64)))


def test_constructor_validation():
    with pytest.raises(ValueError, match="labels"):
        Dataset("x", np.zeros((3, 2, 2, 1), np.float32), np.zeros(2, int))
    with pytest.raises(TypeError, match="float32"):
        Dataset("x", np.zeros((3, 2, 2, 1)), None)
    with pytest.raises(TypeError, match="integers"):
        Dataset("x", np.zeros((3, 2, 2, 1), np.float32), np.zeros(3))
