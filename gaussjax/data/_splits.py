"""Deterministic train/test splits for sources that ship without one."""

from __future__ import annotations

import numpy as np

from gaussjax._checks import check_choice

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
_SPLIT_SEED = 20240521  # fixed forever: changing it would silently change every split


def split_indices(num: int, split: str, *, labels: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of `split` in a deterministic, disjoint train/test partition of `num` items.

    A fixed-seed permutation puts `floor(TEST_FRACTION * n)` items in the test split;
    with `labels` the partition is stratified (done per class), so both splits keep
    the class proportions. `"all"` returns every index.
    """
    check_choice("split", split, SPLITS)
    if split == "all":
        return np.arange(num)
    rng = np.random.default_rng(_SPLIT_SEED)
    groups = [np.arange(num)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = []
    for members in groups:
        shuffled = rng.permutation(members)
        test.append(shuffled[: int(TEST_FRACTION * len(members))])
    is_test = np.zeros(num, dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)
