"""Where to teleport: the sampler step to resume at, from the model's own agreement with the Gaussian.

Analytical teleportation (paper Alg. 1, Sec. 6) replaces a sampler's first steps by the
closed-form Gaussian solution. `auto_sigma_skip` chooses how many steps to skip without
data: it measures, on the states the closed form itself visits, how far the model's score
departs from the Gaussian's, and skips the steps where the two agree.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from gaussjax._checks import (
    check_float_array,
    check_key,
    check_noise_levels,
    check_positive_int,
    check_real,
    is_concrete,
)
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._pytree import denoise_checked
from gaussjax.scores import Denoiser, Gaussian
from gaussjax.solution import gaussian_denoiser_trajectory, gaussian_trajectory

AUTO_SKIP_TOLERANCE = 0.01
"""Largest score disagreement (FUV, Eq. 28) at which a noise level is left to the Gaussian.

0.01 is the paper's own criterion for "the Gaussian approximation holds": the Gaussian
explains more than 99% of the network's score variance (Sec. 5, Fig. 6; `sigma99` in
`python -m analysis score-agreement`), not a value tuned on a dataset. The disagreement it
gives on the default digits run, and the FD of the step it picks: docs/analysis.md, "teleport".
"""

_BATCH = 256  # states per model call: bounds memory for any num_states


class TeleportChoice(NamedTuple):
    """What `auto_sigma_skip` returns.

    Attributes:
        n_skip: sampler steps to replace by the closed form, in `[0, len(sigmas) - 2]`
            (pass it to `hybrid_sampler`).
        sigma_skip: `sigmas[n_skip]`, where the sampler resumes.
        disagreement: `(len(sigmas) - 1,)` float64: the score FUV of the Gaussian against the
            model at the grid levels `sigmas[0] .. sigmas[-2]` (every level a teleport can reach).
    """

    n_skip: int
    sigma_skip: float
    disagreement: np.ndarray


def _require_concrete(**arrays) -> None:
    traced = [name for name, value in arrays.items() if value is not None and not is_concrete(value)]
    if traced:
        raise InputTypeError(
            f"auto_sigma_skip got traced {', '.join(f'`{n}`' for n in traced)}: choosing the teleport point is a "
            "host-side decision (a Python int sets the sampler's grid length); call it outside jax.jit/vmap "
            "and pass the resulting n_skip in"
        )


def _model_outputs(model, states: np.ndarray, sigma: float) -> np.ndarray:
    """`model.denoise` of the finite `states (B, D)` at a scalar sigma, `_BATCH` rows per call (the last chunk padded).

    Raises `ValueError` naming `model` if it returns another shape, or NaN or infinite values.
    """
    outputs = []
    size = min(_BATCH, len(states))
    for start in range(0, len(states), size):
        chunk = states[start:start + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        out = denoise_checked("model", model, jnp.asarray(padded), jnp.asarray(sigma, padded.dtype))
        outputs.append(np.asarray(out)[:len(chunk)])
    outputs = np.concatenate(outputs)
    if not np.all(np.isfinite(outputs)):
        raise InputValueError(
            f"`model` returned NaN or infinite values at sigma = {sigma:.6g} on finite states: its agreement with "
            "the Gaussian is undefined (a diverged network?)"
        )
    return outputs


def auto_sigma_skip(
    model: Denoiser,
    gaussian: Gaussian,
    sigmas: Float[ArrayLike, " N+1"],
    x_T: Float[ArrayLike, "*batch D"] | None = None,
    *,
    key: PRNGKeyArray | None = None,
    num_states: int = 64,
    tolerance: float = AUTO_SKIP_TOLERANCE,
) -> TeleportChoice:
    """How many steps of a sampler on `sigmas` to replace by analytical teleportation (paper Alg. 1, Sec. 6).

    The Gaussian solution is exact for the Gaussian model; teleporting is safe as long as the
    model's score agrees with the Gaussian's along the way. This measures that agreement on
    the states the closed form itself produces, so it needs only the model, no data:

    1. `x_T` (the first `num_states` rows of the caller's, or `sigmas[0] * z` drawn with `key`);
    2. the closed-form states `x_i = gaussian_trajectory(gaussian, x_T, sigmas[0], sigmas[i])`
       at every grid level `i = 0 .. N - 1` (the positive levels a teleport can reach);
    3. the disagreement `d_i`: the score FUV (Eq. 28) of the Gaussian against the model,
       `sum ||D_model(x_i) - D_gauss(x_i)||^2 / sum ||D_model(x_i) - x_i||^2` over the states;
    4. `n_skip` = the largest `k <= N - 1` with `d_i <= tolerance` for every `i <= k`
       (the Gaussian then covers sigma_0 .. sigma_k), or 0 if there is none.

    A host-side decision: the result is a Python int that sets the sampler's grid length, so
    the inputs must be concrete (call it outside `jax.jit`). Costs `N * num_states` model
    evaluations, in batches of at most 256 states.

    Args:
        model: the denoiser to sample with (`.denoise(x (B, D), sigma)`).
        gaussian: the `Gaussian` fitted to the training data (`fit_gaussian`).
        sigmas: the sampler's grid `(N + 1,)`, strictly decreasing (e.g. `karras_sigmas(18)`).
        x_T: optional `(..., D)` initial states at `sigmas[0]`; the first `num_states` (over the
            flattened batch axes) are used.
        key: PRNG key for drawing `x_T` when none is given (one of the two is required).
        num_states: states per level, >= 1.
        tolerance: the largest disagreement (score FUV) left to the Gaussian, >= 0;
            default `AUTO_SKIP_TOLERANCE` = 0.01 (the Gaussian explains 99% of the score).

    Returns:
        `TeleportChoice(n_skip, sigma_skip, disagreement (N,))`.

    Raises:
        TypeError: traced `sigmas` or `x_T` (call it outside jit), or a model without `.denoise`.
        ValueError: a bad grid, `tolerance` or `num_states`, a non-finite `x_T`, or a `model` that
            returns another shape than its input's, or NaN or infinite values.

    Example:
        >>> import jax, gaussjax as gj
        >>> from gaussjax.teleportation import auto_sigma_skip
        >>> g = gj.fit_gaussian(jax.random.normal(jax.random.key(1), (200, 4)))
        >>> sigmas = gj.karras_sigmas(18)
        >>> choice = auto_sigma_skip(g, g, sigmas, key=jax.random.key(0))  # the Gaussian agrees with itself
        >>> choice.n_skip, len(choice.disagreement)
        (17, 18)

        Then `gj.hybrid_sampler(model, gaussian, x_T, sigmas, choice.n_skip)` teleports to
        `choice.sigma_skip` and samples the rest of the grid.
    """
    _require_concrete(sigmas=sigmas, x_T=x_T)
    tolerance = check_real("tolerance", tolerance, minimum=0)
    num_states = check_positive_int("num_states", num_states)
    if not isinstance(gaussian, Gaussian):
        raise InputTypeError(f"`gaussian` must be a gaussjax.Gaussian (fit one with gaussjax.fit_gaussian), "
                             f"got {type(gaussian).__name__}")
    if not callable(getattr(model, "denoise", None)):
        raise InputTypeError(f"`model` must have a `denoise(x, sigma)` method, got {type(model).__name__}")
    grid = np.asarray(check_noise_levels("sigmas", sigmas, ndim=(1,), min_size=2, decreasing=True), np.float64)
    if not grid[0] > 0:
        raise InputValueError(f"`sigmas[0]` must be > 0, got {grid[0]}")
    dtype = gaussian.mean.dtype
    if x_T is None:
        if key is None:
            raise InputTypeError("pass `x_T` (the states to sample from) or `key` (to draw sigmas[0] * z)")
        key = check_key(key)
        x_T = grid[0] * jax.random.normal(key, (num_states, gaussian.dim), dtype)
    else:
        x_T = check_float_array("x_T", x_T)
        if x_T.ndim == 0 or x_T.shape[-1] != gaussian.dim:
            raise InputValueError(f"`x_T` must have shape (..., D) with D = {gaussian.dim} (the Gaussian's), "
                                  f"got {x_T.shape}")
        x_T = x_T.reshape(-1, gaussian.dim)[:num_states]
        if x_T.shape[0] == 0:
            raise InputValueError("`x_T` holds no states")
    levels = grid[:-1]  # every positive level a teleport can reach (only the last may be 0)
    disagreement = np.empty(len(levels))
    for i, sigma in enumerate(levels):  # one level at a time: memory ~ the states of one level
        state = np.asarray(gaussian_trajectory(gaussian, x_T, grid[0], levels[i:i + 1]))[0]  # (B, D)
        gauss = np.asarray(gaussian_denoiser_trajectory(gaussian, x_T, grid[0], levels[i:i + 1])[0], np.float64)
        net = _model_outputs(model, state, float(sigma)).astype(np.float64)
        x = state.astype(np.float64)
        # Eq. 28 on scores (D - x) / sigma^2 (as gaussjax.metrics.fraction_unexplained_variance), in float64
        unexplained, total = np.sum(np.square(net - gauss)), np.sum(np.square(net - x))
        disagreement[i] = unexplained / total if total > 0 else (0.0 if unexplained == 0 else np.inf)
    within = disagreement <= tolerance
    n_skip = max(int(np.argmin(within)) if not within.all() else len(levels), 1) - 1
    n_skip = min(n_skip, len(grid) - 2)
    return TeleportChoice(n_skip, float(grid[n_skip]), disagreement)


__all__ = [
    "AUTO_SKIP_TOLERANCE",
    "TeleportChoice",
    "auto_sigma_skip",
]
