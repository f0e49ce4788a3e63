"""The paper's Sec. 8 design options in training: `bypass`, `whiten`, `warm_start` (docs/training.md)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gaussjax.checks import InputTypeError, InputValueError
from gaussjax.data import load_dataset
from gaussjax.fit import fit_gaussian
from gaussjax.nn import EDMPrecond, SongUNet, edm_sigmas, gaussian_design
from gaussjax.runs import TrainConfig, load_checkpoint
from train.__main__ import main
from train.configs import get_config
from train.run import train
from train.step import init_state, make_optimizer, make_train_step, zero_metrics

P_MEAN, P_STD = -1.2, 1.2


@pytest.mark.parametrize("sigma_max", [0.05, 0.3, 2.0, 80.0])
def test_warm_start_draws_the_truncated_log_normal(sigma_max):
    sigma = np.asarray(edm_sigmas(jax.random.key(0), 20_000, P_mean=P_MEAN, P_std=P_STD, sigma_max=sigma_max))
    assert sigma.dtype == np.float32 and np.all(sigma > 0)
    assert sigma.max() <= np.float32(sigma_max)
    truncated = scipy.stats.truncnorm(-np.inf, (np.log(sigma_max) - P_MEAN) / P_STD, loc=P_MEAN, scale=P_STD)
    assert scipy.stats.kstest(np.log(sigma.astype(np.float64)), truncated.cdf).pvalue > 1e-3


@pytest.mark.parametrize("sigma_max", [1e-4, 1e-12, 1e6])
def test_warm_start_far_in_the_tails_stays_finite_and_below_the_limit(sigma_max):
    """A limit 7 sigma below the mean (1e-4) still follows the truncated law; 1e-12 (Phi(b) underflows
    float32) gives the limit itself; 1e6 is EDM's untruncated law."""
    sigma = np.asarray(edm_sigmas(jax.random.key(1), 4096, P_mean=P_MEAN, P_std=P_STD, sigma_max=sigma_max))
    assert np.all(np.isfinite(sigma)) and np.all(sigma > 0) and sigma.max() <= np.float32(sigma_max)
    if sigma_max == 1e-12:
        np.testing.assert_array_equal(sigma, np.float32(sigma_max))
    else:
        bound = (np.log(sigma_max) - P_MEAN) / P_STD
        truncated = scipy.stats.truncnorm(-np.inf, bound, loc=P_MEAN, scale=P_STD)
        assert scipy.stats.kstest(np.log(sigma.astype(np.float64)), truncated.cdf).pvalue > 1e-3


def test_warm_start_ks_test_has_teeth():
    """The untruncated log-normal is told apart from the truncated one (and draws above the limit)."""
    sigma = np.asarray(edm_sigmas(jax.random.key(0), 20_000, P_mean=P_MEAN, P_std=P_STD))
    assert sigma.max() > 2.0
    truncated = scipy.stats.truncnorm(-np.inf, (np.log(2.0) - P_MEAN) / P_STD, loc=P_MEAN, scale=P_STD)
    assert scipy.stats.kstest(np.log(np.minimum(sigma, 2.0).astype(np.float64)), truncated.cdf).pvalue < 1e-6


def test_without_warm_start_sigmas_are_edm_s_draws_bitwise():
    key = jax.random.key(3)
    expected = jnp.exp(jax.random.normal(key, (64,), jnp.float32) * P_STD + P_MEAN)
    np.testing.assert_array_equal(np.asarray(edm_sigmas(key, 64, P_mean=P_MEAN, P_std=P_STD)), np.asarray(expected))


def test_edm_sigmas_arguments_are_named():
    with pytest.raises(InputValueError, match="sigma_max"):
        edm_sigmas(jax.random.key(0), 4, sigma_max=0.0)
    with pytest.raises(InputValueError, match="`n`"):
        edm_sigmas(jax.random.key(0), 0)


def test_config_fields_are_validated_and_old_files_load(tmp_path):
    config = get_config("digits-tiny")
    assert (config.bypass, config.whiten, config.warm_start) == (False, None, None)
    text = config.to_json()
    assert not {"bypass", "whiten", "warm_start"} & set(json.loads(text))  # older runs' files unchanged
    (tmp_path / "config.json").write_text(text)
    assert TrainConfig.from_file(tmp_path / "config.json") == config
    designed = config.replace(bypass=True, whiten=1e-3, warm_start=2.0)
    assert TrainConfig.from_json(designed.to_json()) == designed
    for changes, error, name in (({"whiten": 0.0}, InputValueError, "whiten"),
                                 ({"warm_start": -1.0}, InputValueError, "warm_start"),
                                 ({"warm_start": float("inf")}, InputValueError, "warm_start"),
                                 ({"bypass": 1}, InputTypeError, "bypass")):
        with pytest.raises(error, match=f"`{name}`"):
            config.replace(**changes).validate()


def test_command_line_options(capsys):
    assert main(["--config", "digits-tiny", "--dry-run", "--bypass", "--whiten", "1e-3", "--warm-start", "2"]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert (fields["bypass"], fields["whiten"], fields["warm_start"]) == (True, 1e-3, 2.0)
    assert main(["--config", "digits-tiny", "--dry-run", "--warm-start", "0"]) == 2
    assert "`warm_start`" in capsys.readouterr().err


@pytest.mark.slow
def test_train_steps_keep_the_gaussian_and_train_the_network():
    config = get_config("digits-tiny").replace(bypass=True, whiten=1e-3, warm_start=1.0)
    dataset = load_dataset("digits")
    images = jnp.asarray(dataset.images[:64])
    precond = gaussian_design(EDMPrecond(SongUNet(**config.network.for_images(images.shape[1:]).kwargs(),
                                                  conv_impl="xla")), bypass=True, whiten=1e-3)
    optimizer = make_optimizer(config)
    gaussian = fit_gaussian(np.asarray(dataset.flat))
    state = init_state(config, precond, images.shape[1:], optimizer, gaussian=gaussian)
    assert "gaussian" not in jax.tree_util.tree_structure(state.opt_state).__repr__()
    before = jax.tree_util.tree_map(np.asarray, state.params)
    step = jax.jit(make_train_step(config, precond, optimizer, None))
    for _ in range(3):
        state, _ = step(state, images, zero_metrics())
    for tree in (state.params, state.ema_params):
        for key in ("mean", "eigvals", "eigvecs"):
            np.testing.assert_array_equal(np.asarray(tree["gaussian"][key]), before["gaussian"][key])
    moved = [np.any(np.asarray(a) != b) for a, b in zip(jax.tree_util.tree_leaves(state.params["params"]),
                                                         jax.tree_util.tree_leaves(before["params"]), strict=True)]
    assert any(moved)


@pytest.mark.slow
def test_a_bypass_whitened_run_loads_as_its_data_space_denoiser(tmp_path):
    """`load_checkpoint` of a `--bypass --whiten` run: at step 0 (F ~ 0) the denoiser is the documented
    mapped-back Gaussian denoiser mu + U diag(lam / (lam + sigma^2 (lam + eps_abs))) U^T (x - mu), float64."""
    eps = 1e-2
    config = get_config("digits-tiny").replace(steps=10, checkpoint_every=10, log_every=10, bypass=True, whiten=eps,
                                               warm_start=2.0, probe_gmm_components=(), probe_delta=False)
    train(config, tmp_path / "run", progress=False, log=lambda *a: None)
    denoiser, step = load_checkpoint(tmp_path / "run", step=0)
    assert step == 0
    X = np.asarray(load_dataset("digits").flat, np.float64)
    mean = X.mean(0)
    lam, U = np.linalg.eigh(np.cov(X.T, bias=True))
    lam = np.clip(lam, 0, None)
    x = X[:8] + np.random.default_rng(0).normal(size=X[:8].shape) * 0.3
    sigma = np.geomspace(0.02, 20, 8)
    shrink = lam / (lam + sigma[:, None] ** 2 * (lam + eps * lam.max()))
    expected = mean + (shrink * ((x - mean) @ U)) @ U.T
    out = np.asarray(denoiser.denoise(jnp.asarray(x, jnp.float32), jnp.asarray(sigma, jnp.float32)))
    np.testing.assert_allclose(out, expected, atol=2e-3)
    trained, _ = load_checkpoint(tmp_path / "run")
    assert np.abs(np.asarray(trained.denoise(jnp.asarray(x, jnp.float32), jnp.asarray(sigma, jnp.float32)))
                  - expected).max() > 1e-4  # the network has moved away from the Gaussian
