"""`hybrid_sampler(n_skip="auto")`: the same samples as passing `auto_sigma_skip(...).n_skip` by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussjax as gj
from gaussjax.teleportation import auto_sigma_skip

D = 5


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(7)
    data = rng.normal(size=(200, D)) * np.array([1.5, 1.0, 0.6, 0.3, 0.1]) - 0.2
    g = gj.fit_gaussian(data.astype(np.float32))
    sigmas = gj.karras_sigmas(8, sigma_max=20.0)
    x_T = 20.0 * rng.normal(size=(12, D)).astype(np.float32)
    # a model that departs from the Gaussian at low noise: a delta mixture on a few points
    model = gj.DeltaMixture(data[:6].astype(np.float32))
    return g, model, sigmas, x_T


@pytest.mark.parametrize("sampler", [gj.heun_sampler, gj.euler_sampler, gj.dpmpp_2m_sampler])
def test_auto_equals_the_chosen_n_skip(setup, sampler):
    g, model, sigmas, x_T = setup
    n_skip = auto_sigma_skip(model, g, sigmas, x_T).n_skip
    assert 0 < n_skip < len(sigmas) - 2  # an interior choice, so the test can tell it apart
    auto = gj.hybrid_sampler(model, g, x_T, sigmas, "auto", sampler=sampler)
    manual = gj.hybrid_sampler(model, g, x_T, sigmas, n_skip, sampler=sampler)
    np.testing.assert_array_equal(auto.x, manual.x)
    assert auto.nfe == manual.nfe
    other = gj.hybrid_sampler(model, g, x_T, sigmas, n_skip - 1, sampler=sampler)
    assert other.nfe != auto.nfe


def test_auto_with_the_gaussian_skips_all_but_the_last_step(setup):
    g, _, sigmas, x_T = setup
    out = gj.hybrid_sampler(g, g, x_T, sigmas, "auto", return_trajectory=True)
    assert out.nfe == 1 and out.trajectory.shape[0] == 2  # one Euler step to 0 from sigmas[-2]


@pytest.mark.parametrize("bad", ["Auto", "all", "", "3"])
def test_bad_strings(setup, bad):
    g, model, sigmas, x_T = setup
    with pytest.raises(ValueError, match="non-negative int or 'auto'"):
        gj.hybrid_sampler(model, g, x_T, sigmas, bad)


def test_traced_state_with_auto_is_refused(setup):
    g, model, sigmas, x_T = setup
    with pytest.raises(TypeError, match="outside jax.jit"):
        jax.jit(lambda x: gj.hybrid_sampler(model, g, x, sigmas, "auto").x)(x_T)
    # an int n_skip still works under jit
    jitted = jax.jit(lambda x: gj.hybrid_sampler(model, g, x, sigmas, 2).x)(x_T)
    np.testing.assert_allclose(jitted, gj.hybrid_sampler(model, g, x_T, sigmas, 2).x, rtol=1e-5, atol=1e-5)


class Diverged:
    """A model whose denoiser returns NaN at every noise level (a diverged network; not a pytree)."""

    def __init__(self, g):
        self.g = g

    def denoise(self, x, sigma):
        return self.g.denoise(x, sigma) * jnp.nan


def test_auto_with_a_model_returning_nan_raises_instead_of_sampling(setup):
    # D20: the NaN disagreement read as "disagrees everywhere", n_skip = 0, and NaN samples came back
    g, _, sigmas, x_T = setup
    with pytest.raises(ValueError, match="`model` returned NaN or infinite values"):
        gj.hybrid_sampler(Diverged(g), g, x_T, sigmas, "auto")
