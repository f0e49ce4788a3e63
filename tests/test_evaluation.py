import jax
import numpy as np
import pytest

from gaussjax.data import load_dataset
from gaussjax.evaluation import compare_scores, format_table, noised_data, pure_noise
from gaussjax.scores import DeltaMixture, Gaussian, Isotropic


@pytest.fixture(scope="module")
def digits_models():
    points = load_dataset("digits").flat
    mean = points.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(np.cov(points.astype(np.float64), rowvar=False, bias=True))
    candidates = {"isotropic": Isotropic(mean), "gaussian": Gaussian(mean, eigvals.clip(0), eigvecs)}
    return points, DeltaMixture(points), candidates


def test_rows_match_a_direct_computation(digits_models, key):
    points, delta, candidates = digits_models
    sigmas = [0.1, 1.0, 10.0]
    rows = compare_scores(delta, candidates, noised_data(points), sigmas, key=key, num_queries=64)
    assert [(r["sigma"], r["candidate"]) for r in rows] == [(s, c) for s in sigmas for c in candidates]
    queries = noised_data(points).sample(key, np.array(sigmas), 64)
    for row in rows:
        x = np.asarray(queries[sigmas.index(row["sigma"])], np.float64)
        ref_score = np.asarray(delta.score(x.astype(np.float32), row["sigma"]), np.float64)
        approx_score = np.asarray(candidates[row["candidate"]].score(x.astype(np.float32), row["sigma"]))
        expected = np.sum((ref_score - approx_score) ** 2) / np.sum(ref_score**2)
        assert row["fuv_score"] == pytest.approx(expected, rel=1e-3)
        ref = np.asarray(delta.denoise(x.astype(np.float32), row["sigma"]), np.float64)
        approx = np.asarray(candidates[row["candidate"]].denoise(x.astype(np.float32), row["sigma"]), np.float64)
        squared = np.sum((ref - approx) ** 2)
        assert row["fuv_denoiser"] == pytest.approx(squared / np.sum(ref**2), rel=1e-3)
        assert row["r2_denoiser"] == pytest.approx(1 - squared / np.sum((ref - ref.mean(axis=0)) ** 2),
                                                   rel=1e-3, abs=1e-5)
        assert row["mse_denoiser"] == pytest.approx(squared / ref.size, rel=1e-3)


def test_paper_ordering_gaussian_beats_isotropic_and_far_field(digits_models, key):
    points, delta, candidates = digits_models
    rows = compare_scores(delta, candidates, noised_data(points), [0.5, 5.0, 50.0], key=key, num_queries=128)
    fuv = {(r["sigma"], r["candidate"]): r["fuv_score"] for r in rows}
    for sigma in (0.5, 5.0, 50.0):
        assert fuv[(sigma, "gaussian")] < fuv[(sigma, "isotropic")]
    assert fuv[(50.0, "gaussian")] < 1e-6 < fuv[(0.5, "gaussian")]
    assert "gaussian" in format_table(rows)


def test_pure_noise_queries(key):
    sample = pure_noise(3).sample(key, np.array([1.0, 10.0]), 4000)
    assert sample.shape == (2, 4000, 3)
    np.testing.assert_allclose(np.std(sample, axis=(1, 2)), [1.0, 10.0], rtol=0.05)


def test_errors(digits_models, key):
    points, delta, candidates = digits_models
    with pytest.raises(ValueError, match="`sigmas`"):
        compare_scores(delta, candidates, noised_data(points), [0.0], key=key)
    with pytest.raises(ValueError, match="`candidates` is empty"):
        compare_scores(delta, {}, noised_data(points), [1.0], key=key)
    with pytest.raises(ValueError, match="`dim`"):
        pure_noise(0)


class Reshaped:
    """A model whose denoiser output is passed through `change` (not a pytree: opaque to jit)."""

    def __init__(self, model, change):
        self.model, self.change = model, change

    def denoise(self, x, sigma):
        return self.change(self.model.denoise(x, sigma))


@pytest.mark.parametrize("change, shape", [
    (lambda d: d[..., :-1], r"\(8, 63\)"), (lambda d: d[..., :1, :], r"\(1, 64\)"),
], ids=["short", "one-row"])
def test_a_candidate_returning_another_shape_is_named(digits_models, key, change, shape):
    points, delta, candidates = digits_models
    bad = {"gaussian": candidates["gaussian"], "broken": Reshaped(candidates["gaussian"], change)}
    with pytest.raises(ValueError, match=rf"`candidates\['broken'\].denoise` returned shape {shape} for states "
                                         r"of shape \(8, 64\)"):
        compare_scores(delta, bad, noised_data(points), [1.0], key=key, num_queries=8)


@pytest.mark.parametrize("change, shape", [
    (lambda d: d[..., :-1], r"\(8, 63\)"), (lambda d: d[..., :1, :], r"\(1, 64\)"),
], ids=["short", "one-row"])
def test_a_reference_returning_another_shape_is_named(digits_models, key, change, shape):
    # a (1, D) output broadcast against the (Q, D) queries of a noise level and gave numbers
    points, delta, candidates = digits_models
    with pytest.raises(ValueError, match=rf"`reference.denoise` returned shape {shape} for states of shape \(8, 64\)"):
        compare_scores(Reshaped(delta, change), candidates, noised_data(points), [0.5, 1.0], key=key, num_queries=8)


class Recording:
    """A model (opaque to jit) that records the shapes of the queries its denoiser is traced with."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def denoise(self, x, sigma):
        self.shapes.append((tuple(x.shape), tuple(np.shape(sigma))))
        return self.model.denoise(x, sigma)


def test_the_reference_denoises_one_noise_level_at_a_time(digits_models, key):
    # its working memory (a network's activations) is that of Q queries, not of S Q
    points, delta, candidates = digits_models
    sigmas = [0.2, 1.0, 5.0]
    reference = Recording(candidates["gaussian"])
    rows = compare_scores(reference, {"isotropic": candidates["isotropic"]}, noised_data(points), sigmas, key=key,
                          num_queries=16)
    assert set(reference.shapes) == {((16, 64), ())}
    queries = np.asarray(noised_data(points).sample(key, np.array(sigmas), 16), np.float64)
    for row, sigma, x in zip(rows, sigmas, queries, strict=True):  # Eq. 28 of the two denoisers, in float64
        ref = np.asarray(candidates["gaussian"].denoise(x.astype(np.float32), sigma), np.float64)
        approx = np.asarray(candidates["isotropic"].denoise(x.astype(np.float32), sigma), np.float64)
        assert row["fuv_denoiser"] == pytest.approx(np.sum((ref - approx) ** 2) / np.sum(ref**2), rel=1e-4)


def test_noised_data_uses_a_datasets_points_in_place():
    flat = load_dataset("digits").flat  # read-only, 64-byte aligned
    queries = noised_data(flat)
    np.testing.assert_array_equal(np.asarray(queries.points), flat)
    if jax.default_backend() == "cpu":
        assert queries.points.unsafe_buffer_pointer() == flat.ctypes.data
    writable = np.array(flat)
    assert noised_data(writable).points.unsafe_buffer_pointer() != writable.ctypes.data  # copied, as before
