"""`python -m analysis samples`: network, Gaussian, GMM and delta model samples from the same noise (Fig. 8 B, C).

From the same `x_T = sigma_max z` (seeded, as `trajectories`), each model maps noise to a sample:
the network, the reference `gmm{K}` of K = `--gmm-components` and the delta mixture on the training set by the
deterministic Heun sampler on `karras_sigmas(--num-steps)`, the Gaussian by its closed-form
final state (Eq. 17). Pixels are in [-1, 1]. The network of a run trained with the paper's Sec. 8 options
starts where it must (`gaussjax.nn.sampling_start`, the same `z`): a `--warm-start` run at the first grid
level at or below its warm start, teleported there by the Gaussian (so up to it, it follows the Gaussian's
path exactly); a `--whiten` run from the whitened prior mapped back, `mu + sigma_max W^(-1) z`.

Files in `--out`:
    samples.png          one row of tiles per model (the first 16 samples), same noise per column.
    samples_mse.csv      columns `model_a, model_b, mse`: the pixelwise MSE between two models'
                         samples, averaged over samples and coordinates (Fig. 8 C), every pair.
    samples_nearest.csv  columns `sample, nearest_index, distance, nearest_distance_ratio`: for each
                         network sample, its nearest training image (Euclidean), the distance, and
                         the ratio of the nearest to the second-nearest distance (a memorisation
                         score: near 0 means a copy of one training image; 0 when both are 0).
    samples.npz          the samples `(B, D)` under each model's name, and `x_T`.

Summary: the MSE of the network's samples to each model's, and the fraction of network samples
with `nearest_distance_ratio < MEMORISATION_RATIO = 1/3` (the threshold of Yoon et al. 2023 and
Gu et al. 2023 for a memorised sample).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import Command, Result
from analysis.output import figure, save_figure, write_csv
from analysis.trajectories import (
    add_model_arguments,
    check_model_memory,
    check_model_options,
    fit_models,
    initial_states,
)
from gaussjax.checks import InputValueError

OUTPUTS = ("samples.png", "samples_mse.csv", "samples_nearest.csv", "samples.npz")
MODELS = ("network", "gaussian", "gmm", "delta")
MSE_COLUMNS = ("model_a", "model_b", "mse")
NEAREST_COLUMNS = ("sample", "nearest_index", "distance", "nearest_distance_ratio")
MAX_TILES = 16  # samples shown per row
MEMORISATION_RATIO = 1 / 3
_CHUNK = 256  # samples per block of the distance matrix
# float32 arrays of shape (Q, D) held at once: x_T, the four models' samples, a sampler's state and its
# intermediates (4), and the float64 copies of a pair in `pairwise_mse` (2 x 2)
SAMPLE_ARRAYS = 13


def add_arguments(parser) -> None:
    add_model_arguments(parser)


def model_samples(network, references: dict, x_T: jax.Array, sigmas: jax.Array, start=None) -> dict:
    """`{model: (B, D)}` samples from `x_T` at `sigmas[0]`: Heun for all but the Gaussian's closed form (Eq. 17).

    `start`: the network's own start (`AnalysisContext.network_start`, a `SamplingStart`), or None: `x_T` on
    `sigmas` as the references.
    """
    models = {"network": network, **references}

    def sample(name, model):
        if name == "gaussian":
            return gj.gaussian_final_state(model, x_T, sigmas[0])
        if name == "network" and start is not None:
            return gj.heun_sampler(model, start.x, start.sigmas).x
        return gj.heun_sampler(model, x_T, sigmas).x

    return {name: np.asarray(sample(name, model))
            for name, model in tqdm(models.items(), desc="sampling", leave=False)}


def pairwise_mse(samples: dict) -> list[dict]:
    """`mean((a - b)^2)` over samples and coordinates for every pair of models, in float64 (Fig. 8 C)."""
    return [{"model_a": a, "model_b": b,
             "mse": float(np.mean((samples[a].astype(np.float64) - samples[b].astype(np.float64)) ** 2))}
            for a, b in itertools.combinations(samples, 2)]


def _squared_distances(queries: np.ndarray, points: np.ndarray, point_norms: np.ndarray) -> np.ndarray:
    """`||q - p||^2` `(b, N)` by the matmul form, in float64, clipped at 0."""
    sq = np.sum(queries**2, axis=1)[:, None] - 2 * queries @ points.T + point_norms[None, :]
    return np.maximum(sq, 0.0)


def nearest_neighbours(samples: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample's nearest training point: `(index (B,), distance (B,), nearest / second-nearest ratio (B,))`.

    Needs `N >= 2` training points; a ratio of 0/0 (a duplicated training image hit exactly) is 0.
    """
    points = np.asarray(train, np.float64)
    if len(points) < 2:
        raise InputValueError(f"the nearest-neighbour ratio needs >= 2 training images, got {len(points)}")
    norms = np.sum(points**2, axis=1)
    index, first, second = [], [], []
    for start in range(0, len(samples), _CHUNK):
        sq = _squared_distances(np.asarray(samples[start:start + _CHUNK], np.float64), points, norms)
        two = np.argpartition(sq, 1, axis=1)[:, :2]
        pair = np.take_along_axis(sq, two, axis=1)
        order = np.argsort(pair, axis=1, kind="stable")
        index.append(np.take_along_axis(two, order[:, :1], axis=1)[:, 0])
        first.append(np.sqrt(np.take_along_axis(pair, order[:, :1], axis=1)[:, 0]))
        second.append(np.sqrt(np.take_along_axis(pair, order[:, 1:], axis=1)[:, 0]))
    index, first, second = (np.concatenate(v) for v in (index, first, second))
    ratio = np.divide(first, second, out=np.zeros_like(first), where=second > 0)
    return index, first, ratio


def nearest_rows(index: np.ndarray, distance: np.ndarray, ratio: np.ndarray) -> list[dict]:
    return [{"sample": i, "nearest_index": int(n), "distance": float(d), "nearest_distance_ratio": float(r)}
            for i, (n, d, r) in enumerate(zip(index, distance, ratio, strict=True))]


def plot(samples: dict, unflatten, path):
    """One row of image tiles per model, the first `MAX_TILES` samples, pixels [-1, 1] shown as [0, 1]."""
    count = min(MAX_TILES, len(next(iter(samples.values()))))
    fig, axes = figure(ncols=count, nrows=len(samples), size=(0.9, 0.9))
    for row, (name, flat) in zip(axes, samples.items(), strict=True):
        images = np.clip((np.asarray(unflatten(flat[:count])) + 1) / 2, 0, 1)
        for col, (ax, image) in enumerate(zip(row, images, strict=True)):
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    return save_figure(fig, path)


def validate(context, args) -> None:
    """Refuse bad options (named) and samples that would not fit in memory, before any work."""
    check_model_options(args, len(context.flat))
    check_model_memory(context, args, context.flat.shape[1] * SAMPLE_ARRAYS)


def run(context, args) -> Result:
    flat = context.flat
    sigmas = gj.karras_sigmas(args.num_steps)
    noise = initial_states(context.key("initial-states"), context.num_queries, flat.shape[1], 1.0)
    x_T = float(sigmas[0]) * noise
    models = fit_models(context, args.gmm_components)
    start = context.network_start(noise, sigmas, models["gaussian"])
    samples = model_samples(context.network, models, x_T, sigmas, start)
    np.savez(context.path("samples.npz"), x_T=np.asarray(x_T), **samples)
    mse = pairwise_mse(samples)
    index, distance, ratio = nearest_neighbours(samples["network"], flat)
    written = [
        write_csv(context.path("samples_mse.csv"), mse, MSE_COLUMNS),
        write_csv(context.path("samples_nearest.csv"), nearest_rows(index, distance, ratio), NEAREST_COLUMNS),
        plot(samples, context.train.unflatten, context.path("samples.png")),
        context.path("samples.npz"),
    ]
    vs_network = ", ".join(f"{r['model_b']} {r['mse']:.4f}" for r in mse if r["model_a"] == "network")
    return Result([
        f"samples: {context.num_queries} from the same x_T, {args.num_steps} Heun steps, network step {context.step}",
        f"  MSE network vs: {vs_network}",
        (f"  memorised (nearest/second-nearest distance < 1/3): {np.mean(ratio < MEMORISATION_RATIO):.1%} "
         f"of network samples; median nearest distance {np.median(distance):.4f}"),
    ], written)


COMMAND = Command(
    name="samples",
    help="Fig. 8: samples of the network, the Gaussian solution, a GMM and the delta model from the same noise",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run, num_queries=64,
)
