"""`fit_references`: the named reference models, each equal to its own fit, one recipe for every caller."""

import jax
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.data import load_dataset
from gaussjax.fit import check_reference_name, fit_references


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return np.asarray(data.flat[:400], np.float64), np.asarray(data.labels[:400]), data.images.shape[1:]


def _same(a, b, fields):
    for field in fields:
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))


def test_each_name_is_its_own_fit_in_the_order_asked(digits):
    flat, labels, shape = digits
    key = jax.random.key(3)
    names = ["delta", "gmm4", "gaussian", "isotropic", "gmm-class", "gmm4"]
    models = fit_references(flat, names, key=key, labels=labels, rank=5)
    assert list(models) == ["delta", "gmm4", "gaussian", "isotropic", "gmm-class"]  # repeats fitted once
    np.testing.assert_allclose(models["isotropic"].mean, flat.mean(axis=0), rtol=1e-6)  # stored in float32
    _same(models["gaussian"], gj.fit_gaussian(flat), ("mean", "eigvals", "eigvecs"))
    mixture_fields = ("weights", "means", "eigvals", "eigvecs")
    _same(models["gmm4"], gj.fit_gmm(flat, 4, rank=5, key=jax.random.fold_in(key, 4)), mixture_fields)
    _same(models["gmm-class"], gj.fit_gmm(flat, 10, rank=5, labels=labels), mixture_fields)
    np.testing.assert_array_equal(np.asarray(models["delta"].points), flat)


def test_local_models_are_built_on_the_gaussian_given_or_fitted(digits):
    flat, _, shape = digits
    gaussian = gj.fit_gaussian(flat)
    models = fit_references(flat, ["ls3", "locality"], key=jax.random.key(0), image_shape=shape, gaussian=gaussian)
    assert isinstance(models["ls3"], gj.PatchMixture) and isinstance(models["locality"], gj.LocalDeltaMixture)
    x = flat[:2].reshape(2, *shape) + 0.1
    expected = gj.LocalDeltaMixture(flat.reshape(len(flat), *shape), gaussian).denoise(x, 0.5)
    np.testing.assert_allclose(models["locality"].denoise(x, 0.5), expected, rtol=1e-6)


@pytest.mark.parametrize("names, kwargs, message", [
    (["gmm0"], {}, "unknown reference model 'gmm0'"),
    (["Gaussian"], {}, "unknown reference model 'Gaussian'; reference models are isotropic, gaussian"),
    (["gmm-class"], {}, "'gmm-class', which needs `labels`"),
    (["ls3"], {}, r"local models \(ls3\), which need `image_shape`"),
    (["gmm401"], {}, "n_components"),
])
def test_bad_names_are_refused_by_name(digits, names, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_references(digits[0], names, key=jax.random.key(0), **kwargs)


def test_check_reference_name():
    assert [check_reference_name(n) for n in ("gmm12", "els5", "pspc4", "delta")] == ["gmm12", "els5", "pspc4", "delta"]
    with pytest.raises(gj.InputError, match="unknown reference model 'gmm'"):
        check_reference_name("gmm")
