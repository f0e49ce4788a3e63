"""Datasets: embedded (`digits`, `patches`) and read from the files users already have.

Every dataset is a `Dataset` of float32 images `(N, H, W, C)` in [-1, 1]; analytic
models work on its flat vectors `.flat` `(N, D)`. Nothing is ever downloaded.
"""

from gaussjax.data._chunks import iter_chunks
from gaussjax.data._dataset import Dataset, flat_to_images, images_to_flat
from gaussjax.data._load import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "flat_to_images", "images_to_flat", "iter_chunks", "load_dataset"]
