"""The train step: mixed precision (`TrainConfig.precision='bf16'`) keeps float32 state and float32's loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax.data import load_dataset
from gaussjax.nn import EDMPrecond, SongUNet
from train.configs import get_config
from train.step import init_state, make_optimizer, make_train_step, zero_metrics


@pytest.mark.slow
def test_bf16_step_keeps_float32_state_and_the_float32_loss():
    config = get_config("digits-tiny")
    images = jnp.asarray(load_dataset("digits").images[:256])
    precond = EDMPrecond(SongUNet(**config.network.for_images(images.shape[1:]).kwargs(), conv_impl="xla"))
    optimizer = make_optimizer(config)
    steps = {precision: jax.jit(make_train_step(config.replace(precision=precision), precond, optimizer, None))
             for precision in ("float32", "bf16")}
    state = init_state(config, precond, images.shape[1:], optimizer)
    for _ in range(10):  # away from the initial network, whose output layer is ~0 (D = c_skip x)
        state, _ = steps["float32"](state, images, zero_metrics())
    results = {precision: step(state, images, zero_metrics()) for precision, step in steps.items()}
    (full, full_metrics), (mixed, mixed_metrics) = results["float32"], results["bf16"]
    for tree in (mixed.params, mixed.ema_params, mixed.opt_state):
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)} \
            == {jnp.dtype(jnp.float32)}
    # Same batch and noise (same key): the losses differ by bfloat16's rounding only, and not by nothing.
    loss, mixed_loss = float(full_metrics.loss), float(mixed_metrics.loss)
    assert loss != mixed_loss
    assert mixed_loss == pytest.approx(loss, rel=2e-2)
    # One Adam step moves each parameter by about lr in the gradient's sign: the same sign in both precisions.
    moved = [np.sign(np.asarray(b) - np.asarray(a)) for a, b in
             zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(full.params), strict=True)]
    moved_mixed = [np.sign(np.asarray(b) - np.asarray(a)) for a, b in
                   zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(mixed.params), strict=True)]
    agree = np.mean(np.concatenate([(a == b).ravel() for a, b in zip(moved, moved_mixed, strict=True)]))
    assert agree > 0.9


def test_precision_is_validated():
    with pytest.raises(ValueError, match="`precision` must be one of float32, bf16, got 'fp8'"):
        get_config("digits-tiny").replace(precision="fp8").validate()
