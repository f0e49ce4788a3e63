"""The training state and the jitted training loop (EDM loss, Adam, EMA, data-parallel)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gaussjax.nn import edm_loss
from gaussjax.runs import PRECISIONS, TrainConfig

# Per-sigma-bin training loss: bin edges in sigma (the first and last bins are open).
LOSS_BIN_EDGES = (0.01, 0.05, 0.2, 1.0, 5.0)


class TrainState(eqx.Module):
    """Everything a resumed run needs: a pytree of arrays (saved whole by Orbax, one item per field)."""

    step: jax.Array  # int32 scalar, optimizer steps taken
    params: Any
    ema_params: Any
    opt_state: Any
    key: jax.Array  # uint32 (2,) raw PRNG key data


class Metrics(eqx.Module):
    """Sums over the steps of one `train_loop` call (one `loss.csv` row)."""

    loss: jax.Array  # sum of batch-mean losses
    steps: jax.Array  # number of steps summed
    bin_loss: jax.Array  # (bins,) sum of per-example losses per sigma bin
    bin_count: jax.Array  # (bins,) examples per sigma bin


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with EDM's linear learning-rate warm-up, optionally after global-norm clipping."""
    warmup = max(config.lr_warmup_steps, 1)
    schedule = lambda count: config.lr * jnp.minimum((count + 1) / warmup, 1.0)  # noqa: E731
    adam = optax.adam(learning_rate=schedule)
    return adam if config.grad_clip is None else optax.chain(optax.clip_by_global_norm(config.grad_clip), adam)


def init_state(config: TrainConfig, precond, image_shape, optimizer) -> TrainState:
    """A fresh state: network initialized from `config.seed`, EMA equal to it."""
    init_key, run_key = jax.random.split(jax.random.key(config.seed))
    x = jnp.zeros((1, *image_shape), jnp.float32)
    params = jax.jit(precond.init)({"params": init_key}, x, jnp.ones((1,)))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),  # own buffers: the step donates the state
        opt_state=optimizer.init(params),
        key=jax.random.key_data(run_key),
    )


def ema_decay(config: TrainConfig, step) -> jax.Array:
    """EDM's EMA: half-life in images, ramped up to at most `ema_rampup_ratio` of the images seen."""
    seen = step.astype(jnp.float32) * config.batch_size
    halflife = jnp.minimum(config.ema_halflife_images, seen * config.ema_rampup_ratio)
    return 0.5 ** (config.batch_size / jnp.maximum(halflife, 1e-8))


def zero_metrics() -> Metrics:
    """Empty sums, to start a `train_loop` call's `Metrics`."""
    bins = len(LOSS_BIN_EDGES) + 1
    return Metrics(jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.zeros(bins), jnp.zeros(bins))


def make_train_step(config: TrainConfig, precond, optimizer, mesh: Mesh | None):
    """`train_step(state, data, metrics) -> (state, metrics)`: one optimizer step (pure, not jitted).

    With `config.precision == 'bf16'` the network runs in bfloat16 (`EDMPrecond.compute_dtype`);
    parameters, gradients, Adam's moments, the EMA and the loss stay float32.
    `data (N, H, W, C)` is the whole training set on the device(s); the step draws its
    batch indices, flips and noise from the state's key, so results depend only on the
    state. With a mesh of several devices the batch is sharded over its `"data"` axis and
    parameters are replicated; XLA inserts the gradient all-reduce.
    """
    edges = jnp.log(jnp.asarray(LOSS_BIN_EDGES))
    num_bins = len(LOSS_BIN_EDGES) + 1
    precond = precond.clone(compute_dtype=PRECISIONS[config.precision])  # mixed precision: float32 parameters

    def train_step(state: TrainState, data, metrics: Metrics):
        key, batch_key, flip_key, loss_key = jax.random.split(jax.random.wrap_key_data(state.key), 4)
        images = data[jax.random.randint(batch_key, (config.batch_size,), 0, data.shape[0])]
        if config.xflip:
            flip = jax.random.bernoulli(flip_key, 0.5, (config.batch_size, 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1, :], images)
        if mesh is not None:
            images = jax.lax.with_sharding_constraint(images, NamedSharding(mesh, PartitionSpec("data")))

        def objective(params):
            loss, sigma = edm_loss(precond, params, images, loss_key, P_mean=config.P_mean, P_std=config.P_std,
                                   sigma_data=config.sigma_data)
            return loss.mean(), (loss, sigma)

        (mean_loss, (loss, sigma)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay(config, state.step)
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params)
        bins = jax.nn.one_hot(jnp.searchsorted(edges, jnp.log(sigma)), num_bins)  # (B, bins)
        metrics = Metrics(
            metrics.loss + mean_loss,
            metrics.steps + 1,
            metrics.bin_loss + loss @ bins,
            metrics.bin_count + bins.sum(axis=0),
        )
        return TrainState(state.step + 1, params, ema, opt_state, jax.random.key_data(key)), metrics

    return train_step


def make_train_loop(config: TrainConfig, precond, optimizer, mesh: Mesh | None):
    """`train_loop(state, data, num_steps) -> (state, Metrics)`: `num_steps` steps of `make_train_step`.

    Each step is its own jitted call (the state's buffers donated), dispatched
    asynchronously: the host only waits when it reads the metrics, and results do not
    depend on how steps are grouped into calls. The steps are deliberately not fused into
    one compiled loop (why: docs/training.md, "Performance notes").
    """
    train_step = jax.jit(make_train_step(config, precond, optimizer, mesh), donate_argnums=0)

    def train_loop(state: TrainState, data, num_steps: int):
        metrics = zero_metrics()
        for _ in range(num_steps):
            state, metrics = train_step(state, data, metrics)
        return state, metrics

    return train_loop


def bin_labels() -> list[str]:
    """Column names of the per-sigma-bin losses."""
    edges = ("0",) + tuple(f"{e:g}" for e in LOSS_BIN_EDGES) + ("inf",)
    return [f"loss_sigma_{lo}_{hi}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def metrics_row(step: int, metrics: Metrics) -> dict:
    """A `loss.csv` row: mean loss over the `train_loop` call, overall and per sigma bin."""
    counts = np.asarray(metrics.bin_count)
    sums = np.asarray(metrics.bin_loss)
    row = {"step": step, "loss": float(metrics.loss) / max(int(metrics.steps), 1)}
    for name, total, count in zip(bin_labels(), sums, counts, strict=True):
        row[name] = float(total / count) if count else float("nan")
    return row
