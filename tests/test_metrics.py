import numpy as np
import pytest

from gaussjax.metrics import fraction_unexplained_variance, per_sample_unexplained_variance


def test_fuv_against_numpy():
    rng = np.random.default_rng(0)
    ref, approx = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    expected = np.sum((ref - approx) ** 2) / np.sum(ref**2)
    np.testing.assert_allclose(fraction_unexplained_variance(ref, approx), expected, rtol=1e-6)
    np.testing.assert_allclose(
        per_sample_unexplained_variance(ref, approx), np.sum((ref - approx) ** 2, -1) / np.sum(ref**2, -1), rtol=1e-6)
    assert float(fraction_unexplained_variance(ref, ref)) == 0.0
    assert float(fraction_unexplained_variance(ref, np.zeros_like(ref))) == pytest.approx(1.0)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        fraction_unexplained_variance(np.ones((2, 3)), np.ones((3, 2)))
