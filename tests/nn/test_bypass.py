"""The Gaussian bypass and whitening of `gaussian_design` (paper Sec. 8), against float64 NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax import heun_sampler, karras_sigmas
from gaussjax.checks import InputTypeError, InputValueError
from gaussjax.fit import fit_gaussian
from gaussjax.nn import (
    EDMPrecond,
    GaussianEDMPrecond,
    NeuralDenoiser,
    SongUNet,
    VEPrecond,
    VPPrecond,
    gaussian_design,
    iDDPMPrecond,
    sampling_start,
    unwhiten_flat,
    warm_start_skip,
    whiten_flat,
    with_gaussian,
)
from gaussjax.nn._precond import PRECONDITIONERS

R, C = 4, 2
D = R * R * C


def _net(out_per_in=1):
    return SongUNet(img_resolution=R, in_channels=C, out_channels=out_per_in * C, model_channels=8,
                    channel_mult=(1,), num_blocks=1, attn_resolutions=(), dropout=0.0)


def _preconds():
    return [EDMPrecond(net=_net()), VPPrecond(net=_net()), VEPrecond(net=_net()), iDDPMPrecond(net=_net(2))]


def _data(seed=0, n=400):
    """Correlated data with a spread of variances (one direction nearly flat)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 1e-3, D)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return (rng.normal(size=(n, D)) * scales) @ basis.T + rng.normal(size=D) * 0.3


def _moments64(X):
    mean = X.mean(0)
    lam, U = np.linalg.eigh(np.cov(X.T, bias=True))
    return mean, np.clip(lam, 0, None), U


def _variables(module, gaussian, zero_net=True):
    """Initialised variables holding `gaussian`; with `zero_net` every network parameter is 0, so `F = 0`
    exactly (EDM's initialisation gives the last layer weights of scale 1e-5, so `F` is ~1e-5 there)."""
    variables = module.init(jax.random.key(1), jnp.zeros((1, R, R, C)), jnp.ones(1))
    if zero_net:
        variables = dict(variables, params=jax.tree_util.tree_map(jnp.zeros_like, variables["params"]))
    return with_gaussian(variables, gaussian)


def _numpy_denoise(mean, lam, U, x, sigma, floor=None):
    """float64: mu + U diag(lam / (lam + sigma^2 v)) U^T (x - mu), v = 1 or (lam + floor) (whitened noise)."""
    v = 1.0 if floor is None else lam + floor
    shrink = lam[None, :] / (lam[None, :] + sigma[:, None] ** 2 * v)
    return mean + (shrink * ((x - mean) @ U)) @ U.T


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_bypass_at_init_is_the_gaussian_denoiser(index):
    X = _data()
    gaussian = fit_gaussian(X)
    module = gaussian_design(_preconds()[index], bypass=True)
    assert isinstance(module, PRECONDITIONERS)
    variables = _variables(module, gaussian)
    rng = np.random.default_rng(2)
    x = X[:6] + rng.normal(size=(6, D)) * 0.7
    sigma = np.array([0.01, 0.1, 0.5, 1.0, 3.0, 20.0])
    out = np.asarray(module.apply(variables, jnp.asarray(x.reshape(6, R, R, C), jnp.float32), sigma)).reshape(6, D)
    mean, lam, U = _moments64(X)
    np.testing.assert_allclose(out, _numpy_denoise(mean, lam, U, x, sigma), atol=2e-5)
    np.testing.assert_allclose(out, np.asarray(gaussian.denoise(jnp.asarray(x, jnp.float32), sigma)), atol=2e-5)
    # EDM's own initialisation: F is tiny, so the network is the Gaussian denoiser up to c_out * O(1e-4).
    initial = _variables(module, gaussian, zero_net=False)
    out = np.asarray(module.apply(initial, jnp.asarray(x.reshape(6, R, R, C), jnp.float32), sigma)).reshape(6, D)
    c_out = np.abs(np.asarray(module.scalings(jnp.asarray(sigma, jnp.float32))[1]))
    assert np.all(np.abs(out - _numpy_denoise(mean, lam, U, x, sigma)) <= 1e-3 * c_out[:, None] + 2e-5)


@pytest.mark.slow
def test_plain_precond_is_not_the_gaussian_denoiser():
    """(The check above has teeth: without the bypass, EDM at init is c_skip x.)"""
    X = _data()
    module = gaussian_design(EDMPrecond(net=_net()), bypass=False)
    variables = _variables(module, fit_gaussian(X))
    x = X[:3]
    out = np.asarray(module.apply(variables, jnp.asarray(x.reshape(3, R, R, C), jnp.float32), 1.0)).reshape(3, D)
    np.testing.assert_allclose(out, 0.25 / 1.25 * x, atol=1e-6)


@pytest.mark.slow
def test_gradients_do_not_reach_the_gaussian():
    X = _data()
    module = gaussian_design(EDMPrecond(net=_net()), bypass=True, whiten=1e-3)
    variables = _variables(module, fit_gaussian(X))
    x = jnp.asarray(X[:4].reshape(4, R, R, C), jnp.float32)

    def loss(v):
        return jnp.sum(jnp.square(module.apply(v, x + 0.3, 0.5) - x))

    grads = jax.grad(loss)(variables)
    for leaf in jax.tree_util.tree_leaves(grads["gaussian"]):
        assert np.all(np.asarray(leaf) == 0)
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree_util.tree_leaves(grads["params"]))


def test_whitening_round_trips_and_whitens():
    X = _data()
    gaussian = fit_gaussian(X)
    stored = {"mean": gaussian.mean, "eigvals": gaussian.eigvals, "eigvecs": gaussian.eigvecs}
    eps = 1e-3
    mean, lam, U = _moments64(X)
    floor = eps * lam.max()
    W = U @ np.diag((lam + floor) ** -0.5) @ U.T
    z = np.asarray(whiten_flat(stored, eps, jnp.asarray(X, jnp.float32)))
    np.testing.assert_allclose(z, (X - mean) @ W.T, atol=2e-3)
    back = np.asarray(unwhiten_flat(stored, eps, jnp.asarray(z)))
    np.testing.assert_allclose(back, X, atol=2e-5)
    cov = np.cov(z.T.astype(np.float64), bias=True)
    np.testing.assert_allclose(cov, U @ np.diag(lam / (lam + floor)) @ U.T, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_whitened_bypass_maps_back_to_the_documented_denoiser(index):
    """At init the whitened bypass network is the whitened Gaussian's denoiser; mapped back it is
    mu + U diag(lam / (lam + sigma^2 (lam + eps_abs))) U^T (x - mu) (the module docstring)."""
    X = _data()
    eps = 1e-2
    module = gaussian_design(_preconds()[index], bypass=True, whiten=eps)
    variables = _variables(module, fit_gaussian(X))
    rng = np.random.default_rng(3)
    x = X[:5] + rng.normal(size=(5, D)) * 0.2
    sigma = np.array([0.02, 0.2, 1.0, 2.0, 10.0])
    out = np.asarray(module.apply(variables, jnp.asarray(x.reshape(5, R, R, C), jnp.float32), sigma)).reshape(5, D)
    mean, lam, U = _moments64(X)
    np.testing.assert_allclose(out, _numpy_denoise(mean, lam, U, x, sigma, floor=eps * lam.max()), atol=5e-5)


def test_whitened_coordinates_see_the_whitened_gaussian():
    X = _data()
    eps = 1e-2
    module = gaussian_design(EDMPrecond(net=_net()), bypass=True, whiten=eps).clone(coordinates="whitened")
    variables = _variables(module, fit_gaussian(X))
    mean, lam, U = _moments64(X)
    mu_z, lam_z = np.zeros(D), lam / (lam + eps * lam.max())
    z = np.random.default_rng(4).normal(size=(3, D))
    sigma = np.array([0.1, 1.0, 5.0])
    out = np.asarray(module.apply(variables, jnp.asarray(z.reshape(3, R, R, C), jnp.float32), sigma)).reshape(3, D)
    np.testing.assert_allclose(out, _numpy_denoise(mu_z, lam_z, U, z, sigma), atol=2e-5)


def _denoiser(module, gaussian, zero_net=True):
    return NeuralDenoiser(module=module, params=_variables(module, gaussian, zero_net), image_shape=(R, R, C))


def _numpy_flow(mean, lam, U, x, sigma_from, sigma_to):
    """float64 Eq. 15: the Gaussian PF-ODE from `sigma_from` to `sigma_to`, mu + U diag(sqrt(..)) U^T (x - mu)."""
    ratio = np.sqrt((lam + sigma_to**2) / (lam + sigma_from**2))
    return mean + (ratio * ((x - mean) @ U)) @ U.T


def test_whitened_start_has_the_whitened_prior_covariance():
    X = _data()
    eps = 1e-2
    network = _denoiser(gaussian_design(EDMPrecond(net=_net()), whiten=eps), fit_gaussian(X))
    noise = np.random.default_rng(5).normal(size=(20000, D))
    start = sampling_start(network, noise, karras_sigmas(18))
    assert start.n_skip == 0 and start.sigmas.shape == (19,)
    mean, lam, U = _moments64(X)
    expected = 80.0**2 * (U @ np.diag(lam + eps * lam.max()) @ U.T)
    np.testing.assert_allclose(np.cov(np.asarray(start.x, np.float64).T, bias=True), expected,
                               atol=0.05 * expected.max())


@pytest.mark.parametrize("whiten", [None, 1e-2])
def test_warm_start_teleports_with_the_gaussian_and_samples_it(whiten):
    """A bypass network with F = 0 is the Gaussian; from the warm start, Heun ends at Eq. 15's exact end state."""
    X = _data()
    mean, lam, U = _moments64(X)
    network = _denoiser(gaussian_design(EDMPrecond(net=_net()), bypass=True, whiten=whiten), fit_gaussian(X))
    sigmas = karras_sigmas(200)
    noise = np.random.default_rng(6).normal(size=(16, D))
    start = sampling_start(network, noise, sigmas, warm_start=2.0)
    k = int(np.flatnonzero(np.asarray(sigmas)[:-1] <= 2.0)[0])
    assert start.n_skip == k and start.sigmas.shape == (201 - k,)
    s0, sk = float(sigmas[0]), float(sigmas[k])
    if whiten is None:  # data coordinates: teleport with N(mu, Sigma); the end state is the flow to 0
        expected_start = _numpy_flow(mean, lam, U, s0 * noise, s0, sk)
        expected_end = _numpy_flow(mean, lam, U, s0 * noise, s0, 0.0)
    else:  # whitened coordinates: N(0, lam / (lam + eps_abs)) there, mapped back by mu + W^-1 z
        floor = whiten * lam.max()
        lam_z, scale = lam / (lam + floor), np.sqrt(lam + floor)
        def back(z):
            return mean + (scale * (z @ U)) @ U.T
        expected_start = back(_numpy_flow(0.0, lam_z, U, s0 * noise, s0, sk))
        expected_end = back(_numpy_flow(0.0, lam_z, U, s0 * noise, s0, 0.0))
    np.testing.assert_allclose(start.x, expected_start, atol=2e-4 * np.abs(expected_start).max())
    end = np.asarray(heun_sampler(network, start.x, start.sigmas).x)
    np.testing.assert_allclose(end, expected_end, atol=2e-3 * np.abs(expected_end).max())


def test_warm_start_of_a_plain_network_needs_the_data_gaussian():
    X = _data()
    mean, lam, U = _moments64(X)
    network = NeuralDenoiser(module=EDMPrecond(net=_net()), params=EDMPrecond(net=_net()).init(
        jax.random.key(0), jnp.zeros((1, R, R, C)), jnp.ones(1)))
    sigmas = karras_sigmas(18)
    noise = np.random.default_rng(7).normal(size=(4, D))
    with pytest.raises(InputValueError, match="gaussian"):
        sampling_start(network, noise, sigmas, warm_start=1.0)
    start = sampling_start(network, noise, sigmas, warm_start=1.0, gaussian=fit_gaussian(X))
    s0, sk = float(sigmas[0]), float(sigmas[start.n_skip])
    np.testing.assert_allclose(start.x, _numpy_flow(mean, lam, U, s0 * noise, s0, sk), atol=1e-3)
    plain = sampling_start(network, noise, sigmas)  # no warm start: the prior draw itself
    np.testing.assert_allclose(plain.x, s0 * noise, rtol=1e-6)
    with pytest.raises(InputValueError, match="noise"):
        sampling_start(network, noise[0], sigmas)
    with pytest.raises(InputValueError, match="D = H W C = 32"):
        sampling_start(network, noise[:, :-1], sigmas)
    with pytest.raises(InputValueError, match="warm_start"):
        sampling_start(network, noise, sigmas, warm_start=-1.0)


def test_warm_start_skip_picks_the_first_level_at_or_below():
    sigmas = np.array([80.0, 10.0, 2.0, 0.5, 0.0])
    assert warm_start_skip(sigmas, None) == 0
    assert warm_start_skip(sigmas, 100.0) == 0
    assert warm_start_skip(sigmas, 80.0) == 0
    assert warm_start_skip(sigmas, 10.0) == 1
    assert warm_start_skip(sigmas, 9.99) == 2
    assert warm_start_skip(sigmas, 1e-6) == 3  # at most N - 1: one step is always sampled


def test_arguments_are_checked():
    with pytest.raises(InputTypeError, match="precond"):
        gaussian_design(_net(), bypass=True)
    with pytest.raises(InputValueError, match="whiten"):
        gaussian_design(EDMPrecond(net=_net()), whiten=0.0)
    with pytest.raises(InputTypeError, match="bypass"):
        GaussianEDMPrecond(net=_net(), bypass=1)
    with pytest.raises(InputValueError, match="coordinates"):
        GaussianEDMPrecond(net=_net(), coordinates="latent")
    module = gaussian_design(EDMPrecond(net=_net()), bypass=True)
    variables = module.init(jax.random.key(0), jnp.zeros((1, R, R, C)), jnp.ones(1))
    with pytest.raises(InputValueError, match="full rank"):
        with_gaussian(variables, fit_gaussian(_data(), rank=3))
    with pytest.raises(InputValueError, match="gaussian"):
        with_gaussian({"params": variables["params"]}, fit_gaussian(_data()))


def test_a_design_network_round_trips_through_safetensors(tmp_path):
    """`--network` files of a bypass + whitened network: same class, fields, Gaussian and outputs."""
    from gaussjax.nn import load_safetensors, save_safetensors

    X = _data()
    module = gaussian_design(EDMPrecond(net=_net()), bypass=True, whiten=1e-2)
    network = NeuralDenoiser(module=module, params=_variables(module, fit_gaussian(X), zero_net=False))
    save_safetensors(tmp_path / "net.safetensors", network)
    loaded = load_safetensors(tmp_path / "net.safetensors")
    assert type(loaded.module) is GaussianEDMPrecond and (loaded.module.bypass, loaded.module.whiten) == (True, 1e-2)
    for key in ("mean", "eigvals", "eigvecs"):
        np.testing.assert_array_equal(loaded.params["gaussian"][key], network.params["gaussian"][key])
    x = np.random.default_rng(8).normal(size=(3, D)).astype(np.float32)
    np.testing.assert_array_equal(loaded.denoise(x, 0.7), network.denoise(x, 0.7))
