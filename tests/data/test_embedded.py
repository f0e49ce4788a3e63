import numpy as np
import pytest
from sklearn.datasets import load_digits, load_sample_images

from gaussjax.data import load_dataset


def _rows_of(images):
    return {row.tobytes() for row in images.reshape(len(images), -1)}


def test_digits_values_labels_and_shape():
    dataset = load_dataset("digits", split="all")
    reference = load_digits()
    assert dataset.images.shape == (1797, 8, 8, 1)
    np.testing.assert_allclose(dataset.images[..., 0], reference.images / 8.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, reference.target)
    assert dataset.images.min() == -1.0 and dataset.images.max() == 1.0


def test_digits_splits_are_disjoint_stratified_and_deterministic():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797
    everything = load_dataset("digits", split="all")
    # the 1,797 digit images are pairwise distinct, so content identifies them
    assert len(_rows_of(everything.images)) == 1797
    assert _rows_of(train.images) | _rows_of(test.images) == _rows_of(everything.images)
    assert _rows_of(train.images).isdisjoint(_rows_of(test.images))
    np.testing.assert_array_equal(np.bincount(train.labels) + np.bincount(test.labels), np.bincount(everything.labels))
    fractions = np.bincount(test.labels) / np.bincount(everything.labels)
    assert np.all(np.abs(fractions - 0.2) < 0.01)
    np.testing.assert_array_equal(load_dataset("digits").images, train.images)
    assert set(np.unique(train.labels)) == set(range(10))


def test_patches_match_the_photographs():
    dataset = load_dataset("patches", split="all", patch_size=16)
    photos = load_sample_images().images
    per_photo = (427 // 16) * (640 // 16)
    assert dataset.images.shape == (2 * per_photo, 16, 16, 3)
    assert dataset.labels is None
    for photo_index, row, col in [(0, 0, 0), (0, 3, 17), (1, 25, 39)]:
        index = photo_index * per_photo + row * 40 + col
        expected = photos[photo_index][16 * row:16 * row + 16, 16 * col:16 * col + 16] / 127.5 - 1.0
        np.testing.assert_allclose(dataset.images[index], expected, atol=1e-6)


def test_patches_stride_and_split_sizes():
    dataset = load_dataset("patches", split="all", patch_size=8, stride=4)
    assert len(dataset) == 2 * ((427 - 8) // 4 + 1) * ((640 - 8) // 4 + 1)
    train, test = load_dataset("patches"), load_dataset("patches", split="test")
    assert (len(train), len(test)) == (1664, 416)


def test_embedded_errors():
    with pytest.raises(ValueError, match="takes no `root`"):
        load_dataset("digits", root="/tmp")
    with pytest.raises(ValueError, match="`patch_size`"):
        load_dataset("patches", patch_size=0)
    with pytest.raises(ValueError, match="exceeds the image size"):
        load_dataset("patches", patch_size=500)
    with pytest.raises(TypeError, match="`stride` must be an integer"):
        load_dataset("patches", stride=2.5)
