"""Calibrating a local model's window to a network: the patch size per sigma that best predicts its denoiser.

Kamb & Ganguli calibrate the LS / ELS window per dataset by hand, Niedoba et al. the patch
size per noise level; `fit_patch_size` does it for any family of local models (any
`make_model(size)`) against any network, on the same queries and with the same statistic
as the score-agreement analysis (`gaussjax.evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gaussjax._checks import check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.evaluation import NoisedData, PureNoise, make_score_probe
from gaussjax.scores._local import LocalModel


class PatchSizeSchedule(LocalModel):
    """A local model that switches window size with the noise level.

    A query at noise `sigma` is denoised by the model chosen at the grid level nearest to
    it in `log sigma` (boundaries at the geometric midpoints). Every distinct model runs
    on the whole batch and each query takes its own model's output, so a call costs the
    sum of the distinct models' calls.

    Attributes:
        models: the distinct local models, one per window size in `sizes`.
        sizes: their window sizes.
        sigmas: `(S,)` the grid levels, increasing.
        choice: `(S,)` index into `models` of the model used at each level.
    """

    models: tuple
    sizes: tuple = eqx.field(static=True)
    sigmas: tuple = eqx.field(static=True)
    choice: tuple = eqx.field(static=True)
    image_shape: tuple = eqx.field(static=True)

    @property
    def size_per_sigma(self) -> dict:
        """`{sigma: window size}` of the grid."""
        return {s: self.sizes[c] for s, c in zip(self.sigmas, self.choice, strict=True)}

    def _denoise(self, x, sigma):
        outputs = jnp.stack([model._denoise(x, sigma) for model in self.models])  # (M, B, D)
        log_grid = np.log(np.asarray(self.sigmas, np.float64))
        boundaries = jnp.asarray((log_grid[1:] + log_grid[:-1]) / 2, sigma.dtype)
        level = jnp.searchsorted(boundaries, jnp.log(sigma))  # (B,) nearest grid level
        which = jnp.asarray(self.choice, jnp.int32)[level]  # (B,) its model
        return jnp.take_along_axis(outputs, which[None, :, None], axis=0)[0]


def fit_patch_size(
    network,
    make_model: Callable[[int], LocalModel],
    sigmas: Float[Array, " S"] | Sequence[float],
    queries: NoisedData | PureNoise,
    *,
    sizes: Sequence[int] = (1, 3, 5, 7),
    key: jax.Array,
    num_queries: int = 64,
) -> tuple[list[dict], PatchSizeSchedule]:
    """The window size per sigma whose local model best predicts `network`'s denoiser (highest R^2).

    Args:
        network: the reference, any model with `.denoise(x, sigma)` (e.g. a `NeuralDenoiser`).
        make_model: `size -> local model`, e.g.
            `lambda k: gaussjax.scores.PatchMixture(images, k, equivariant=True)`.
        sigmas: the noise levels to calibrate at.
        queries: `gaussjax.noised_data(points)` (ideally held-out images) or `pure_noise(D)`.
        sizes: the candidate window sizes.
        key: PRNG key of the query points (the same queries for every size).
        num_queries: query points per sigma.

    Returns:
        `(rows, model)`: `rows` has one dict per (sigma, size) with `sigma`, `patch_size`,
        `r2_denoiser`, `mse_denoiser`, `fuv_score` and `best` (True for the chosen size at
        that sigma); `model` is a `PatchSizeSchedule` that uses the chosen size near each sigma.
    """
    sizes = [check_positive_int("sizes", int(size)) for size in sizes]
    if not sizes or len(set(sizes)) != len(sizes):
        raise InputValueError(f"`sizes` must be distinct window sizes, got {sizes}")
    models = {size: make_model(size) for size in sizes}
    for size, model in models.items():
        if not isinstance(model, LocalModel):
            raise InputTypeError(f"`make_model({size})` must return a local model, got {type(model).__name__}")
    probe = make_score_probe({str(size): model for size, model in models.items()}, queries, sigmas,
                             key=key, num_queries=num_queries)
    rows = [{"sigma": r["sigma"], "patch_size": int(r["candidate"]), "r2_denoiser": r["r2_denoiser"],
             "mse_denoiser": r["mse_denoiser"], "fuv_score": r["fuv_score"]} for r in probe(network)]
    grid = sorted(dict.fromkeys(r["sigma"] for r in rows))
    chosen = {s: max((r for r in rows if r["sigma"] == s), key=lambda r: r["r2_denoiser"])["patch_size"] for s in grid}
    for row in rows:
        row["best"] = row["patch_size"] == chosen[row["sigma"]]
    used = list(dict.fromkeys(chosen[s] for s in grid))
    schedule = PatchSizeSchedule(tuple(models[size] for size in used), tuple(used), tuple(grid),
                                 tuple(used.index(chosen[s]) for s in grid), tuple(models[sizes[0]].image_shape))
    return rows, schedule
