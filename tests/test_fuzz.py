"""Every public constructor and function, driven with a table of bad values (issue 15's fuzz test).

Each argument of each target is replaced, one at a time, by NaN, +-inf, zero, a negative value, a
complex value, an empty array, a wrong rank (one axis more, one axis less), a huge value (1e30), a
string and None. The call must either raise a `ValueError` / `TypeError` (a clear error at the Python
boundary) or return only finite numbers: never NaN, never an internal error from deep inside JAX.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.quality import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall

D, N, K, R = 6, 20, 3, 2
rng = np.random.default_rng(0)
POINTS = rng.normal(size=(N, D))
BASIS = np.linalg.qr(rng.normal(size=(D, D)))[0][:, :R]
GAUSSIAN = gj.Gaussian(np.zeros(D), np.array([2.0, 0.5]), BASIS)
MODELS = {
    "isotropic": gj.Isotropic(np.zeros(D)),
    "gaussian": GAUSSIAN,
    "mixture": gj.GaussianMixture(np.full(K, 1 / K), POINTS[:K], np.ones((K, R)), np.stack([BASIS] * K)),
    "delta": gj.DeltaMixture(POINTS),
}
X = rng.normal(size=(4, D))
IMAGES = rng.uniform(-1, 1, size=(5, 4, 4, 1))  # local models' training images (N, H, W, C)
IMAGE_GAUSSIAN = gj.fit_gaussian(IMAGES.reshape(5, -1))
LOCAL_MODELS = {
    "PatchMixture": gj.PatchMixture(IMAGES, 3),
    "PatchMixture.els": gj.PatchMixture(IMAGES, 3, equivariant=True),
    "PatchPosteriorMean": gj.PatchPosteriorMean(IMAGES, 2, 2),
    "LocalDeltaMixture": gj.LocalDeltaMixture(IMAGES, IMAGE_GAUSSIAN),
}
FEATURES = rng.normal(size=(12, D))
FEATURE_STATS = FeatureStats.from_features(FEATURES)
SIGMAS = np.asarray(gj.karras_sigmas(4, sigma_max=10.0))
KEY = jax.random.key(0)


def bad_values(good):
    """The table of bad replacements for an argument whose good value is `good`."""
    good = np.asarray(good, dtype=float)
    with np.errstate(invalid="ignore"):
        values = {
            "nan": np.where(np.arange(good.size).reshape(good.shape) == 0, np.nan, good) if good.ndim else np.nan,
            "inf": np.full_like(good, np.inf),
            "-inf": np.full_like(good, -np.inf),
            "zero": np.zeros_like(good),
            "negative": -np.abs(good) - 1.0,
            "complex": good + 1j,
            "empty": np.zeros((0,) + good.shape[1:]),
            "rank+1": good[None],
            "rank-1": good.reshape(-1)[0] if good.ndim else np.zeros((2, 2)),
            "huge": np.full_like(good, 1e30),
            "string": "abc",
            "none": None,
        }
    return values


def sampler_target(sampler):
    return {
        "x_T": (lambda v: sampler(GAUSSIAN, v, SIGMAS).x, 10.0 * X),
        "sigmas": (lambda v: sampler(GAUSSIAN, 10.0 * X, v).x, SIGMAS),
    }


TARGETS = {
    "Isotropic": {"mean": (lambda v: gj.Isotropic(v).mean, np.zeros(D))},
    "Gaussian": {
        "mean": (lambda v: gj.Gaussian(v, GAUSSIAN.eigvals, BASIS).score(X, 1.0), np.zeros(D)),
        "eigvals": (lambda v: gj.Gaussian(np.zeros(D), v, BASIS).score(X, 1.0), np.array([2.0, 0.5])),
        "eigvecs": (lambda v: gj.Gaussian(np.zeros(D), np.array([2.0, 0.5]), v).score(X, 1.0), BASIS),
    },
    "GaussianMixture": {
        "weights": (lambda v: gj.GaussianMixture(v, POINTS[:K], np.ones((K, R)), np.stack([BASIS] * K)).score(X, 1.0),
                    np.full(K, 1 / K)),
        "means": (lambda v: gj.GaussianMixture(np.full(K, 1 / K), v, np.ones((K, R)),
                                               np.stack([BASIS] * K)).score(X, 1.0),
                  POINTS[:K]),
        "eigvals": (lambda v: gj.GaussianMixture(np.full(K, 1 / K), POINTS[:K], v, np.stack([BASIS] * K)).score(X, 1.0),
                    np.ones((K, R))),
    },
    "DeltaMixture": {"points": (lambda v: gj.DeltaMixture(v).score(X, 1.0), POINTS)},
    **{
        f"{name}.{method}": {
            "x": (lambda v, m=model, f=method: getattr(m, f)(v, 1.0), X),
            "sigma": (lambda v, m=model, f=method: getattr(m, f)(X, v), 1.0),
        }
        for name, model in MODELS.items()
        for method in ("denoise", "score", "log_density")
    },
    "fit_gaussian": {"X": (lambda v: gj.fit_gaussian(v).eigvals, POINTS)},
    "kmeans": {"X": (lambda v: gj.kmeans(v, 2, key=KEY)[0], POINTS)},
    "fit_gmm": {"X": (lambda v: gj.fit_gmm(v, 2, key=KEY).means, POINTS)},
    "karras_sigmas": {
        "sigma_min": (lambda v: gj.karras_sigmas(4, sigma_min=v), 0.002),
        "sigma_max": (lambda v: gj.karras_sigmas(4, sigma_max=v), 80.0),
        "rho": (lambda v: gj.karras_sigmas(4, rho=v), 7.0),
    },
    "VPSchedule": {"alphas_cumprod": (lambda v: gj.VPSchedule(v).edm_sigma, np.array([0.1, 0.5, 0.9]))},
    "heun_sampler": sampler_target(gj.heun_sampler),
    "euler_sampler": sampler_target(gj.euler_sampler),
    "dpmpp_2m_sampler": sampler_target(gj.dpmpp_2m_sampler),
    "ddim_sampler": {
        "x_T": (lambda v: gj.ddim_sampler(GAUSSIAN, v, gj.VPSchedule(np.array([0.1, 0.5, 1.0]))).x, X),
        "alphas_cumprod": (lambda v: gj.ddim_sampler(GAUSSIAN, X, gj.VPSchedule(v)).x, np.array([0.1, 0.5, 1.0])),
    },
    "heun_sampler.churn": {
        name: (lambda v, n=name: gj.heun_sampler(GAUSSIAN, 10.0 * X, SIGMAS, key=KEY, **{"S_churn": 5.0, n: v}).x, good)
        for name, good in (("S_min", 0.1), ("S_max", 5.0), ("S_noise", 1.0))
    },
    "solve_pf_ode": {
        "x_T": (lambda v: gj.solve_pf_ode(GAUSSIAN, v, SIGMAS).states, 10.0 * X),
        "sigmas": (lambda v: gj.solve_pf_ode(GAUSSIAN, 10.0 * X, v).states, SIGMAS),
        "rtol": (lambda v: gj.solve_pf_ode(GAUSSIAN, 10.0 * X, SIGMAS, rtol=v).states, 1e-5),
    },
    "gaussian_trajectory": {
        name: (lambda v, n=name: gj.gaussian_trajectory(
            GAUSSIAN, **{"x_T": 10.0 * X, "sigma_T": 10.0, "sigma": np.array([5.0, 1.0]), "alpha_T": 1.0,
                         "alpha": 1.0, n: v}), good)
        for name, good in (("x_T", 10.0 * X), ("sigma_T", 10.0), ("sigma", np.array([5.0, 1.0])), ("alpha_T", 1.0),
                           ("alpha", 1.0))
    },
    "teleport": {"sigma_skip": (lambda v: gj.teleport(GAUSSIAN, 10.0 * X, 10.0, v), 1.0)},
    "gaussian_warm_start": {"sigma": (lambda v: gj.gaussian_warm_start(GAUSSIAN, KEY, (2,), v), 1.0)},
    "fraction_unexplained_variance": {
        "reference": (lambda v: gj.fraction_unexplained_variance(v, X), X),
        "approx": (lambda v: gj.fraction_unexplained_variance(X, v), X),
    },
    "compare_scores": {
        "sigmas": (lambda v: [r["fuv_score"] for r in gj.compare_scores(
            GAUSSIAN, {"iso": MODELS["isotropic"]}, gj.noised_data(POINTS), v, key=KEY, num_queries=4)],
            np.array([0.5, 2.0])),
    },
    "noised_data": {"points": (lambda v: gj.noised_data(v).points, POINTS)},
    "FeatureStats.from_features": {"features": (lambda v: FeatureStats.from_features(v).cov, FEATURES)},
    "FeatureStats.update": {"batch": (lambda v: FEATURE_STATS.update(v).cov, FEATURES[:3])},
    "frechet_distance": {
        "mean": (lambda v: frechet_distance((v, FEATURE_STATS.cov), FEATURE_STATS), FEATURE_STATS.mean),
        "cov": (lambda v: frechet_distance((FEATURE_STATS.mean, v), FEATURE_STATS), FEATURE_STATS.cov),
    },
    "kernel_inception_distance": {
        "features_a": (lambda v: kernel_inception_distance(v, FEATURES, key=KEY, num_subsets=2), FEATURES),
        "num_subsets": (lambda v: kernel_inception_distance(FEATURES, FEATURES, key=KEY, num_subsets=v), 2),
        "subset_size": (lambda v: kernel_inception_distance(FEATURES, FEATURES, key=KEY, subset_size=v), 5),
    },
    "precision_recall": {
        "real": (lambda v: precision_recall(v, FEATURES, k=3), FEATURES),
        "k": (lambda v: precision_recall(FEATURES, FEATURES, k=v), 3),
    },
    **{
        f"{name}.{method}": {
            "x": (lambda v, m=model, f=method: getattr(m, f)(v, 0.5), IMAGES[:2]),
            "sigma": (lambda v, m=model, f=method: getattr(m, f)(IMAGES[:2], v), 0.5),
        }
        for name, model in LOCAL_MODELS.items()
        for method in ("denoise", "score")
    },
    "PatchMixture": {
        "images": (lambda v: gj.PatchMixture(v, 3).denoise(IMAGES[:2], 0.5), IMAGES),
        "patch_size": (lambda v: gj.PatchMixture(IMAGES, v).denoise(IMAGES[:2], 0.5), 3),
    },
    "PatchPosteriorMean": {
        "images": (lambda v: gj.PatchPosteriorMean(v, 2, 2).denoise(IMAGES[:2], 0.5), IMAGES),
        "stride": (lambda v: gj.PatchPosteriorMean(IMAGES, 2, v).denoise(IMAGES[:2], 0.5), 2),
    },
    "LocalDeltaMixture": {
        "threshold": (lambda v: gj.LocalDeltaMixture(IMAGES, IMAGE_GAUSSIAN, threshold=v).denoise(IMAGES[:2], 0.5),
                      0.1),
        "temperature": (lambda v: gj.LocalDeltaMixture(IMAGES, IMAGE_GAUSSIAN, temperature=v).denoise(
            IMAGES[:2], 0.5), 1.0),
    },
    "auto_sigma_skip": {
        "sigmas": (lambda v: gj.auto_sigma_skip(MODELS["mixture"], GAUSSIAN, v, key=KEY, num_states=4), SIGMAS),
        "x_T": (lambda v: gj.auto_sigma_skip(MODELS["mixture"], GAUSSIAN, SIGMAS, v), 10.0 * X),
        "tolerance": (lambda v: gj.auto_sigma_skip(MODELS["mixture"], GAUSSIAN, SIGMAS, key=KEY, num_states=4,
                                                   tolerance=v), 0.01),
    },
}

CASES = [
    (f"{target}.{argument}[{bad}]", call, value)
    for target, arguments in TARGETS.items()
    for argument, (call, good) in arguments.items()
    for bad, value in bad_values(good).items()
]


# Targets whose every accepted value compiles an ODE solve or a local model: the slow tier runs them.
SLOW_TARGETS = ("solve_pf_ode", "auto_sigma_skip", *LOCAL_MODELS)


@pytest.mark.parametrize(("name", "call", "value"), [
    pytest.param(*case, id=case[0], marks=[pytest.mark.slow] * case[0].startswith(SLOW_TARGETS)) for case in CASES])
def test_bad_value_gives_a_clear_error_or_a_finite_result(name, call, value):
    try:
        out = call(value)
    except (ValueError, TypeError) as error:
        assert "`" in str(error) or "must" in str(error), f"{name}: unclear message {error!r}"
        return
    # NaN, complex values and strings have no correct result: they must be refused
    assert not name.endswith(("[nan]", "[complex]", "[string]")), f"{name}: accepted"
    leaves = [np.asarray(leaf, dtype=complex) for leaf in jax.tree_util.tree_leaves(out)]
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves), f"{name}: returned non-finite values"
    assert all(np.all(leaf.imag == 0) for leaf in leaves), f"{name}: returned complex values"


def test_the_table_is_large():
    assert len(CASES) >= 900
