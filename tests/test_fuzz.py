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
        "means": (lambda v: gj.GaussianMixture(np.full(K, 1 / K), v, np.ones((K, R)), np.stack([BASIS] * K)).score(X, 1.0),
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
}

CASES = [
    (f"{target}.{argument}[{bad}]", call, value)
    for target, arguments in TARGETS.items()
    for argument, (call, good) in arguments.items()
    for bad, value in bad_values(good).items()
]


@pytest.mark.parametrize(("name", "call", "value"), CASES, ids=[c[0] for c in CASES])
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
    assert len(CASES) >= 600
