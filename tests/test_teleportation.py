"""`auto_sigma_skip`: the disagreement curve against an independent NumPy computation, and the index rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussjax as gj
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.teleportation import AUTO_SKIP_TOLERANCE, TeleportChoice, auto_sigma_skip

D = 6


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(300, D)) @ np.diag([2.0, 1.5, 1.0, 0.5, 0.2, 0.05]) + 0.3
    g = gj.fit_gaussian(data.astype(np.float32))
    sigmas = gj.karras_sigmas(7, sigma_min=0.05, sigma_max=20.0)
    x_T = 20.0 * rng.normal(size=(40, D)).astype(np.float32)
    return g, sigmas, x_T


def _numpy_states(g, x_T, sigma_T, sigma):
    """Eq. 15 from the eigenpairs, float64: `mu + (sigma/sigma_T) x_perp + sum_k psi_k c_k u_k`."""
    mu, lam, U = (np.asarray(a, np.float64) for a in (g.mean, g.eigvals, g.eigvecs))
    offset = np.asarray(x_T, np.float64) - mu
    c = offset @ U
    perp = offset - c @ U.T
    psi = np.sqrt((sigma**2 + lam) / (sigma_T**2 + lam))
    return mu + (sigma / sigma_T) * perp + (c * psi) @ U.T


def _numpy_gaussian_denoiser(g, x, sigma):
    mu, lam, U = (np.asarray(a, np.float64) for a in (g.mean, g.eigvals, g.eigvecs))
    return mu + ((x - mu) @ U * (lam / (lam + sigma**2))) @ U.T


class Bumped:
    """The Gaussian's denoiser, plus a constant offset at one noise level only (not a pytree: opaque to jit)."""

    def __init__(self, g, sigma, offset):
        self.g, self.sigma, self.offset = g, float(sigma), offset

    def denoise(self, x, sigma):
        hit = jnp.abs(sigma - self.sigma) <= 1e-4 * self.sigma
        return self.g.denoise(x, sigma) + jnp.where(hit, self.offset, 0.0)


def test_the_gaussian_agrees_with_itself_everywhere(setup):
    g, sigmas, x_T = setup
    choice = auto_sigma_skip(g, g, sigmas, x_T)
    assert isinstance(choice, TeleportChoice)
    assert choice.n_skip == len(sigmas) - 2 and isinstance(choice.n_skip, int)
    assert choice.sigma_skip == pytest.approx(float(sigmas[-2]))
    assert choice.disagreement.shape == (len(sigmas) - 1,) and choice.disagreement.dtype == np.float64
    assert np.all(choice.disagreement < 1e-9)
    drawn = auto_sigma_skip(g, g, sigmas, key=jax.random.key(5), num_states=8)  # x_T drawn, no data
    assert drawn.n_skip == len(sigmas) - 2


def test_disagreement_matches_numpy_along_the_closed_form(setup):
    g, sigmas, x_T = setup
    iso = gj.Isotropic(np.asarray(g.mean))  # denoises everything to the mean: disagrees at every level
    choice = auto_sigma_skip(iso, g, sigmas, x_T, num_states=len(x_T))
    grid = np.asarray(sigmas, np.float64)
    expected = []
    for sigma in grid[:-1]:
        x = _numpy_states(g, x_T, grid[0], sigma)
        d_gauss, d_iso = _numpy_gaussian_denoiser(g, x, sigma), np.asarray(g.mean, np.float64)
        expected.append(np.sum((d_iso - d_gauss) ** 2) / np.sum((d_iso - x) ** 2))
    expected = np.array(expected)
    np.testing.assert_allclose(choice.disagreement, expected, rtol=2e-4)
    assert np.all(np.diff(expected) > 0) and expected[0] < 1e-2 < expected[-1]  # a real curve, not all 0
    # the index rule: the largest k with every level <= k within the tolerance
    for i in range(len(expected) - 1):
        tolerance = float(np.sqrt(expected[i] * expected[i + 1]))  # between levels i and i + 1
        picked = auto_sigma_skip(iso, g, sigmas, x_T, num_states=len(x_T), tolerance=tolerance)
        assert picked.n_skip == i and picked.sigma_skip == pytest.approx(grid[i])
    assert auto_sigma_skip(iso, g, sigmas, x_T, tolerance=0.0).n_skip == 0
    assert auto_sigma_skip(iso, g, sigmas, x_T, tolerance=10 * expected[-1]).n_skip == len(sigmas) - 2
    # only the first num_states states are used
    np.testing.assert_allclose(auto_sigma_skip(iso, g, sigmas, x_T, num_states=5).disagreement,
                               auto_sigma_skip(iso, g, sigmas, x_T[:5], num_states=50).disagreement, rtol=1e-6)


def test_one_bad_level_stops_the_teleport_before_it(setup):
    g, sigmas, x_T = setup
    bad = 3
    model = Bumped(g, sigmas[bad], 5.0)  # agrees with the Gaussian at every level but sigmas[3]
    choice = auto_sigma_skip(model, g, sigmas, x_T)
    assert choice.disagreement[bad] > 0.1
    assert np.all(np.delete(choice.disagreement, bad) < 1e-9)
    assert choice.n_skip == bad - 1  # later levels agree again, but the teleport would cross sigmas[3]
    assert auto_sigma_skip(Bumped(g, sigmas[0], 5.0), g, sigmas, x_T).n_skip == 0


def test_default_tolerance_is_the_papers_99_percent():
    assert AUTO_SKIP_TOLERANCE == 0.01
    assert "99%" in auto_sigma_skip.__doc__ and "Alg. 1" in auto_sigma_skip.__doc__


def test_traced_inputs_are_refused(setup):
    g, sigmas, x_T = setup
    with pytest.raises(TypeError, match="outside jax.jit"):
        jax.jit(lambda s: auto_sigma_skip(g, g, s, x_T).n_skip)(sigmas)
    with pytest.raises(TypeError, match="traced `x_T`"):
        jax.jit(lambda x: auto_sigma_skip(g, g, sigmas, x).n_skip)(x_T)


@pytest.mark.parametrize(("tolerance", "error"), [(-0.1, InputValueError), (float("nan"), InputValueError),
                                                  (float("inf"), InputValueError), ("0.1", InputTypeError),
                                                  (True, InputTypeError), (None, InputTypeError)])
def test_bad_tolerance(setup, tolerance, error):
    g, sigmas, x_T = setup
    with pytest.raises(error, match="`tolerance` must be a finite number >= 0"):
        auto_sigma_skip(g, g, sigmas, x_T, tolerance=tolerance)


def test_bad_arguments(setup):
    g, sigmas, x_T = setup
    with pytest.raises(ValueError, match="num_states"):
        auto_sigma_skip(g, g, sigmas, x_T, num_states=0)
    with pytest.raises(TypeError, match="pass `x_T`.*or `key`"):
        auto_sigma_skip(g, g, sigmas)
    with pytest.raises(ValueError, match="decreasing"):
        auto_sigma_skip(g, g, sigmas[::-1], x_T)
    with pytest.raises(ValueError, match="D = 6"):
        auto_sigma_skip(g, g, sigmas, x_T[:, :3])
    with pytest.raises(TypeError, match="gaussjax.Gaussian"):
        auto_sigma_skip(g, gj.Isotropic(np.zeros(D)), sigmas, x_T)
    with pytest.raises(TypeError, match="denoise"):
        auto_sigma_skip(object(), g, sigmas, x_T)


class Altered:
    """The Gaussian's denoiser passed through `change` (not a pytree: opaque to jit)."""

    def __init__(self, g, change):
        self.g, self.change = g, change

    def denoise(self, x, sigma):
        return self.change(self.g.denoise(x, sigma), sigma)


@pytest.mark.parametrize("change", [
    lambda d, s: jnp.where(s < 1.0, jnp.nan, d),  # NaN at the low levels only
    lambda d, s: d.at[3, 0].set(jnp.inf),  # one infinite value
], ids=["nan-at-low-sigma", "one-inf"])
def test_a_model_returning_non_finite_values_is_an_error_not_a_choice(setup, change):
    # D20: the NaN disagreement became inf, so n_skip = 0 was returned as if the model disagreed
    g, sigmas, x_T = setup
    with pytest.raises(ValueError, match=r"`model` returned NaN or infinite values at sigma = [\d.]+ on finite states"):
        auto_sigma_skip(Altered(g, change), g, sigmas, x_T)


@pytest.mark.parametrize("change, shape", [
    (lambda d, s: d[:, :-1], r"\(40, 5\)"),  # one coordinate short
    (lambda d, s: d[0], r"\(6,\)"),  # one state for the batch: broadcast silently before
    (lambda d, s: d[:, None], r"\(40, 1, 6\)"),
], ids=["short", "one-row", "extra-axis"])
def test_a_model_returning_another_shape_is_named(setup, change, shape):
    g, sigmas, x_T = setup
    with pytest.raises(ValueError, match=rf"`model.denoise` returned shape {shape} for states of shape \(40, 6\)"):
        auto_sigma_skip(Altered(g, change), g, sigmas, x_T)


def test_non_finite_initial_states_are_refused(setup):
    g, sigmas, x_T = setup
    with pytest.raises(ValueError, match="`x_T` contains NaN or infinite"):
        auto_sigma_skip(g, g, sigmas, np.where(np.arange(D) == 2, np.nan, x_T))
