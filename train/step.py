"""The training state and the jitted training loop (EDM loss, Adam, EMA, data-parallel)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gaussjax.nn import edm_loss, with_gaussian
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


def trained(variables) -> dict:
    """The collection the optimizer trains, `{'params': ...}`; the others (a bypass's or whitening's fitted
    Gaussian, `gaussjax.nn.gaussian_design`) stay fixed, in the parameters and their EMA alike."""
    return {"params": variables["params"]}


def init_state(config: TrainConfig, precond, image_shape, optimizer, gaussian=None) -> TrainState:
    """A fresh state: network initialized from `config.seed`, EMA equal to it.

    `gaussian`: the training set's fitted Gaussian, stored in the variables of a `gaussian_design`
    network (`config.bypass` / `config.whiten`); None otherwise. Adam's state covers `trained(params)` only.
    """
    init_key, run_key = jax.random.split(jax.random.key(config.seed))
    x = jnp.zeros((1, *image_shape), jnp.float32)
    params = jax.jit(precond.init)({"params": init_key}, x, jnp.ones((1,)))
    if gaussian is not None:
        params = with_gaussian(params, gaussian)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),  # own buffers: the step donates the state
        opt_state=optimizer.init(trained(params)),
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
    """`train_step(state, images, metrics) -> (state, metrics)`: one optimizer step (pure, not jitted).

    With `config.precision == 'bf16'` the network runs in bfloat16 (`EDMPrecond.compute_dtype`);
    parameters, gradients, Adam's moments, the EMA and the loss stay float32.
    Only `trained(state.params)` is differentiated, updated and averaged (a design network's Gaussian
    is carried along unchanged). With `config.whiten` the loss is taken in whitened coordinates: the
    batch is mapped to `W (x - mu)` (after flips) and the network called there
    (`coordinates='whitened'`). With `config.warm_start` the noise levels are drawn up to it only
    (`gaussjax.nn.edm_sigmas`).
    `images (B, H, W, C)` is the step's global batch (`train.batches`); the step draws its
    flips and noise from the state's key, so results depend only on the state and the batch.
    With a mesh the batch is sharded over its `"data"` axis (over every process's devices) and
    parameters are replicated; XLA inserts the gradient all-reduce (`mesh` is unused here:
    the batch arrives sharded, and `make_train_loop` places the results).
    """
    del mesh
    edges = np.log(np.asarray(LOSS_BIN_EDGES, np.float32))  # a constant of the program, on no device
    num_bins = len(LOSS_BIN_EDGES) + 1
    precond = precond.clone(compute_dtype=PRECISIONS[config.precision])  # mixed precision: float32 parameters
    whitened = config.whiten is not None
    if whitened:
        precond = precond.clone(coordinates="whitened")

    def train_step(state: TrainState, images, metrics: Metrics):
        # The second key drew the batch indices before they were drawn on the host (`train.batches`);
        # it stays split off, so that flips and noise are drawn as before.
        key, _, flip_key, loss_key = jax.random.split(jax.random.wrap_key_data(state.key), 4)
        if config.xflip:
            flip = jax.random.bernoulli(flip_key, 0.5, (images.shape[0], 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1, :], images)

        fixed = {name: value for name, value in state.params.items() if name != "params"}
        if whitened:
            images = precond.whiten_images(fixed["gaussian"], images)

        def objective(params):
            loss, sigma = edm_loss(precond, {**params, **fixed}, images, loss_key, P_mean=config.P_mean,
                                   P_std=config.P_std, sigma_data=config.sigma_data, sigma_max=config.warm_start)
            return loss.mean(), (loss, sigma)

        params = trained(state.params)
        (mean_loss, (loss, sigma)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = ema_decay(config, state.step)
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, trained(state.ema_params), params)
        params, ema = {**params, **fixed}, {**ema, **fixed}
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
    """`train_loop(state, batches) -> (state, Metrics)`: one step of `make_train_step` per batch of `batches`.

    Each step is its own jitted call (the state's buffers donated), dispatched
    asynchronously: the host only waits when it reads the metrics, and results do not
    depend on how steps are grouped into calls. The steps are deliberately not fused into
    one compiled loop (why: docs/training.md, "Performance notes"). With a mesh the state
    and the metrics come out replicated on every device of every process, so each process
    can read them.
    """
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    train_step = jax.jit(make_train_step(config, precond, optimizer, mesh), donate_argnums=0,
                         out_shardings=replicated)

    zeros = zero_metrics() if mesh is None else replicate(zero_metrics(), mesh)  # not donated: reused

    def train_loop(state: TrainState, batches: Iterable[jax.Array]):
        metrics = zeros
        for images in batches:
            state, metrics = train_step(state, images, metrics)
        return state, metrics

    return train_loop


def replicate(tree, mesh: Mesh):
    """`tree` (arrays equal on every process) as global arrays replicated on every device of `mesh`.

    (In jax 0.10.2 `jax.device_put` of a host array onto devices of several processes builds an array
    whose shards cannot be listed, which Orbax cannot save; a jitted identity builds a proper one.)
    """
    return jax.jit(_identity, out_shardings=NamedSharding(mesh, PartitionSpec()))(tree)


def _identity(tree):
    return tree


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
