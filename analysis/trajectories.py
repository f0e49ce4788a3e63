"""`python -m analysis trajectories`: does the Gaussian solution predict the network's early sampling path? (Fig. 7, 15)

From the same initial states `x_T = sigma_max z` (`command_key(--seed, 'initial-states')`, the `x_T` of
`samples`), the network's deterministic Heun
sampler (EDM Alg. 2 on the Karras grid `karras_sigmas(--num-steps)`) is compared, at every grid
sigma, with three references fitted to the training set:

- `gaussian`: the closed-form PF-ODE solution (Eq. 15) and its denoiser (Eq. 16), exact;
- `gmm`: the reference `gmm{K}` of K = `--gmm-components` (Eq. 41; the run's probes' and score-agreement's
  model of that name), its own Heun path;
- `delta`: the delta mixture on the training points (the "exact" score), its own Heun path.

Per trajectory, the deviation is the RMS over coordinates, `||a - b|| / sqrt(D)`, of the states
`x_sigma` (`quantity = state`, every grid sigma including the final 0) and of the denoiser outputs
`D(x_sigma, sigma)` along each path (`quantity = denoiser`, the positive sigmas). Pixels are in [-1, 1].

Files in `--out`:
    trajectories.csv  columns `sigma, step, reference, quantity, median, q25, q75, mean`: quantiles of
                      the per-trajectory RMS deviation over the `--num-queries` initial states;
                      `step` is the grid index (0 at sigma_max).
    trajectories.png  median and 25-75% band vs sigma (log x), one panel per quantity.
    trajectory_deviations.npz  the per-trajectory deviations `(S, B)` under `<reference>_<quantity>`,
                      and `sigmas (N + 1,)`.

Summary: per reference, the final-sample deviation and the sigma where it departs from the network:
the largest grid sigma at which the median state deviation exceeds `DEPARTURE_RMS = 0.1` (the
paper's "MSE < 0.01" closeness, Sec. 5, as an RMS).

A run trained with the paper's Sec. 8 options is sampled from its own start (`gaussjax.nn.sampling_start`,
the same `z`): a `--warm-start` run's path is the Gaussian's teleported states down to its warm start
(denoiser deviations nan there: the network is not queried), a `--whiten` run's starts from the whitened
prior mapped back, `mu + sigma_max W^(-1) z`, so its early deviations from the references' paths (from
`sigma_max z`) measure the two priors' difference.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import Command, Result, check_components, references
from analysis.memory import FLOAT32, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError

OUTPUTS = ("trajectories.csv", "trajectories.png", "trajectory_deviations.npz")
REFERENCES = ("gaussian", "gmm", "delta")
QUANTITIES = ("state", "denoiser")
COLUMNS = ("sigma", "step", "reference", "quantity", "median", "q25", "q75", "mean")
DEPARTURE_RMS = 0.1  # RMS deviation (pixels in [-1, 1]) = the paper's MSE 0.01 (Sec. 5, Fig. 7)
# float32 arrays of shape (N + 1, Q, D) held at once: states and denoiser outputs of the network's and the three
# references' paths (8), and the float64 differences of `rms_deviation` (3 x 2)
PATH_ARRAYS = 14


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--num-steps` and `--gmm-components` (shared with `samples`)."""
    parser.add_argument("--num-steps", type=int, default=18, help="Heun steps on the Karras grid (default 18)")
    parser.add_argument("--gmm-components", type=int, default=10,
                        help="components K of the GMM reference (default 10)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def check_model_options(args: argparse.Namespace, num_train: int) -> None:
    """Named errors for `--num-steps < 1` and `--gmm-components` outside `[1, N]`."""
    if args.num_steps < 1:
        raise InputValueError(f"`--num-steps` must be >= 1, got {args.num_steps}")
    check_components("--gmm-components", [args.gmm_components], num_train)


def check_model_memory(context, args, per_query: int) -> None:
    """Refuse `--num-queries`, `--num-steps` and `--gmm-components` whose arrays would not fit in memory.

    `per_query`: float32 values held per query point (`D` times the arrays of the command); the
    GMM reference adds its covariances, `(K, D, D)` float32, and the grid its `N + 1` noise levels
    (with the sampler's values per level, a few float32 each).
    """
    dim = context.flat.shape[1]
    check_memory(FLOAT32 * (context.num_queries * per_query + args.gmm_components * dim**2 + 4 * (args.num_steps + 1)),
                 f"`--num-queries` {context.num_queries} with `--num-steps` {args.num_steps} (D = {dim}) and "
                 f"`--gmm-components` {args.gmm_components}")


def validate(context, args) -> None:
    """Refuse bad options (named) and trajectories that would not fit in memory, before any work."""
    check_model_options(args, len(context.flat))
    check_model_memory(context, args, (args.num_steps + 1) * context.flat.shape[1] * PATH_ARRAYS)


def initial_states(key: jax.Array, num: int, dim: int, sigma_max: float) -> jax.Array:
    """`x_T = sigma_max z`, `z ~ N(0, I)`: `(num, D)` float32 drawn with `key` (`context.key('initial-states')`)."""
    return sigma_max * jax.random.normal(key, (num, dim), jnp.float32)


def fit_models(context, gmm_components: int) -> dict:
    """`{'gaussian', 'gmm', 'delta'}`: references `gaussian`, `gmm{K}` and `delta` (`analysis._common.references`)."""
    models = references(context, ["gaussian", f"gmm{gmm_components}", "delta"])
    return {"gaussian": models["gaussian"], "gmm": models[f"gmm{gmm_components}"], "delta": models["delta"]}


def network_path(context, noise: jax.Array, sigmas: jax.Array, gaussian) -> tuple[np.ndarray, np.ndarray]:
    """The network's sampler path from `noise (B, D)`: states `(N + 1, B, D)`, denoiser outputs `(N, B, D)`.

    Heun from `context.network_start` (for a plain run `heun_path` from `sigma_max noise`). A warm-start
    run's first `n_skip` levels are the Gaussian's teleported states (the sampler's own, in its
    coordinates), where the network gives no output: nan.
    """
    start = context.network_start(noise, sigmas, gaussian)
    states, denoised = heun_path(context.network, start.x, start.sigmas)
    if not start.n_skip:
        return states, denoised
    skipped = [np.asarray(context.network_start(noise, sigmas, gaussian, warm_start=float(s)).x)
               for s in np.asarray(sigmas)[:start.n_skip]]
    return (np.concatenate([np.stack(skipped), states]),
            np.concatenate([np.full((start.n_skip, *denoised.shape[1:]), np.nan, denoised.dtype), denoised]))


def heun_path(model, x_T: jax.Array, sigmas: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """A model's Heun path: states `(N + 1, B, D)` at every grid sigma and denoiser outputs `(N, B, D)`."""
    out = gj.heun_sampler(model, x_T, sigmas, return_trajectory=True)
    return np.asarray(out.trajectory), np.asarray(out.denoised)


def gaussian_path(gaussian: gj.Gaussian, x_T: jax.Array, sigmas: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The exact Gaussian path from `x_T` at `sigmas[0]` (Eqs. 15, 16): states `(N + 1, B, D)`, denoised `(N, B, D)`."""
    states = gj.gaussian_trajectory(gaussian, x_T, sigmas[0], sigmas)
    denoised = gj.gaussian_denoiser_trajectory(gaussian, x_T, sigmas[0], sigmas[:-1])
    return np.asarray(states), np.asarray(denoised)


def reference_paths(references: dict, x_T: jax.Array, sigmas: jax.Array) -> dict:
    """`{name: (states, denoised)}`: the Gaussian in closed form, the other models by their Heun sampler."""
    return {
        name: gaussian_path(model, x_T, sigmas) if name == "gaussian" else heun_path(model, x_T, sigmas)
        for name, model in tqdm(references.items(), desc="reference trajectories", leave=False)
    }


def rms_deviation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`||a - b|| / sqrt(D)` over the last axis, in float64: `(..., D) -> (...)`."""
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.sqrt(np.mean(difference**2, axis=-1))


def path_deviations(network: tuple, references: dict) -> dict:
    """`{(reference, quantity): (S, B)}` RMS deviations of each reference path from the network's."""
    return {
        (name, quantity): rms_deviation(network[q], paths[q])
        for name, paths in references.items()
        for q, quantity in enumerate(QUANTITIES)
    }


def quantile_rows(sigmas: np.ndarray, deviations: dict) -> list[dict]:
    """CSV rows: per `(reference, quantity)` and grid sigma, quantiles over trajectories of `(S, B)`."""
    rows = []
    for (reference, quantity), values in deviations.items():
        q25, median, q75 = np.quantile(values, (0.25, 0.5, 0.75), axis=1)
        for step, sigma in enumerate(np.asarray(sigmas)[: values.shape[0]]):
            rows.append({"sigma": float(sigma), "step": step, "reference": reference, "quantity": quantity,
                         "median": float(median[step]), "q25": float(q25[step]), "q75": float(q75[step]),
                         "mean": float(values[step].mean())})
    return rows


def departure_sigma(rows: list[dict], reference: str, threshold: float = DEPARTURE_RMS) -> float | None:
    """The largest sigma at which `reference`'s median state deviation exceeds `threshold` (None if never)."""
    over = [r["sigma"] for r in rows
            if r["reference"] == reference and r["quantity"] == "state" and r["median"] > threshold]
    return max(over) if over else None


def plot(rows: list[dict], path):
    """Median and 25-75% band of the deviation vs sigma (log x, positive sigmas), one panel per quantity."""
    fig, axes = figure(ncols=len(QUANTITIES))
    for ax, quantity in zip(axes[0], QUANTITIES, strict=True):
        for reference in REFERENCES:
            sel = [r for r in rows if r["reference"] == reference and r["quantity"] == quantity and r["sigma"] > 0]
            sigma = [r["sigma"] for r in sel]
            ax.plot(sigma, [r["median"] for r in sel], label=reference)
            ax.fill_between(sigma, [r["q25"] for r in sel], [r["q75"] for r in sel], alpha=0.25)
        if quantity == "state":
            ax.axhline(DEPARTURE_RMS, color="gray", linestyle=":", linewidth=1)
        ax.set(xscale="log", xlabel="sigma", ylabel=f"RMS deviation of {quantity}",
               title=f"{'x_sigma' if quantity == 'state' else 'D(x_sigma)'}: reference - network")
        ax.invert_xaxis()  # sampling runs from high to low sigma
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _summary(rows: list[dict], context, num_steps: int) -> list[str]:
    lines = [f"trajectories: {context.num_queries} initial states, {num_steps} Heun steps, network step {context.step}"]
    for reference in REFERENCES:
        final = next(r for r in rows if r["reference"] == reference and r["quantity"] == "state" and r["sigma"] == 0)
        departs = departure_sigma(rows, reference)
        where = "never" if departs is None else f"sigma = {departs:.4g}"
        lines.append(f"  {reference:8s} final-sample RMS deviation median {final['median']:.4f} "
                     f"[{final['q25']:.4f}, {final['q75']:.4f}]; median state deviation > {DEPARTURE_RMS} from {where}")
    return lines


def run(context, args) -> Result:
    sigmas = gj.karras_sigmas(args.num_steps)
    noise = initial_states(context.key("initial-states"), context.num_queries, context.flat.shape[1], 1.0)
    x_T = float(sigmas[0]) * noise
    models = fit_models(context, args.gmm_components)
    network = network_path(context, noise, sigmas, models["gaussian"])
    deviations = path_deviations(network, reference_paths(models, x_T, sigmas))
    rows = quantile_rows(np.asarray(sigmas), deviations)
    np.savez(context.path("trajectory_deviations.npz"), sigmas=np.asarray(sigmas),
             **{f"{r}_{q}": v for (r, q), v in deviations.items()})
    csv_path = write_csv(context.path("trajectories.csv"), rows, COLUMNS)
    png_path = plot(rows, context.path("trajectories.png"))
    return Result(_summary(rows, context, args.num_steps),
                  [csv_path, png_path, context.path("trajectory_deviations.npz")])


COMMAND = Command(
    name="trajectories",
    help="Fig. 7/15: network Heun trajectories vs the Gaussian solution, a GMM and the delta model",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run,
)
