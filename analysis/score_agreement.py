"""`python -m analysis score-agreement`: the network's score vs analytic scores over sigma (paper Fig. 6, Sec. 4.2).

The network (the reference) is compared with the isotropic (Eq. 29), Gaussian (Eq. 30-34),
k-means Gaussian-mixture (`--gmm-components`; and one component per class when the data has
labels, Eq. 41) and delta (the training set's exact score, Eq. 9-11) models, all fitted to
the training split, with `gj.compare_scores` on three query sets: noised training images
(`train`), noised held-out images (`test`, when the dataset has a test split) and pure
noise (`noise`). `--local` adds local (patch) models (`gaussjax.scores.local_spec`: LS / ELS
machines, patch posterior means, data-derived locality); the summary names the model whose
denoiser best predicts the network's at each sigma.

Seeds: the models are `analysis._common.references` (the probes' models, whatever the seed); query
set `i` (train 0, test 1, noise 2) is drawn with `fold_in(command_key(--seed, 'queries'), i)`.

CSV `score_agreement.csv`, one row per (query set, sigma, reference model):
    sigma           noise level
    reference       the analytic model ('isotropic', 'gaussian', 'gmm5', ..., 'gmm-class', 'delta', and any
                    --local model: 'ls3', 'els3', 'pspc4', 'locality', ...)
    queries         'train', 'test' or 'noise'
    fuv_score       fraction of the network's score variance the model leaves unexplained (Eq. 28)
    fuv_denoiser    the same for the denoiser outputs
    r2_denoiser     R^2 of the model's denoiser for the network's (`gaussjax.evaluation.denoiser_r2`)
    mse_denoiser    mean squared difference of the denoiser outputs per coordinate
PNG `score_agreement.png`: fuv_score vs sigma (log-log), one panel per query set, one line per
model; vertical lines at the square roots of the top 10 covariance eigenvalues (as Fig. 6).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import (
    Command,
    Result,
    check_components,
    local_model_specs,
    names_of,
    positive_ints,
    references,
    sigma_grid,
)
from analysis.memory import FLOAT32, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError
from gaussjax.evaluation import noised_data, pure_noise

OUTPUTS = ("score_agreement.csv", "score_agreement.png")
COLUMNS = ("sigma", "reference", "queries", "fuv_score", "fuv_denoiser", "r2_denoiser", "mse_denoiser")
QUERY_SETS = ("train", "test", "noise")  # index i -> fold_in(query_key, i)
EXPLAINED = 0.01  # sigma99: the Gaussian leaves < 1% of the score's variance unexplained
R2_FLOOR = 0.9  # where the Gaussian's denoiser stops predicting the network's
EIGVAL_LINES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("score-agreement")
    group.add_argument("--gmm-components", type=positive_ints, default="5,10",
                       help="comma-separated K of the k-means Gaussian mixtures (default '5,10'; '' for none)")
    group.add_argument("--local", type=local_model_specs, default="",
                       help="comma-separated local (patch) models also compared: ls{k}, els{k}, pspc{p}, locality "
                            "(e.g. 'ls3,els3,pspc4,locality'; default none)")
    group.add_argument("--query-sets", type=names_of(*QUERY_SETS), default=None,
                       help="comma-separated query sets among train, test, noise (default all the dataset has; the "
                            "draws of a set do not depend on which others are chosen)")
    group.add_argument("--num-sigmas", type=int, default=12, help="noise levels (default 12)")
    group.add_argument("--sigma-min", type=float, default=0.01, help="smallest noise level (default 0.01)")
    group.add_argument("--sigma-max", type=float, default=80.0, help="largest noise level (default 80)")


def model_names(context, args) -> list[str]:
    """The reference models compared, in the order of the plot's legend (`analysis._common.references`)."""
    classes = ["gmm-class"] if context.train.labels is not None else []
    return ["isotropic", "gaussian", *(f"gmm{k}" for k in args.gmm_components), *classes, "delta", *args.local]


def query_set_names(context, chosen: list[str] | None) -> list[str]:
    """The query sets of `--query-sets` (None: all the dataset has), in `QUERY_SETS` order; an explicit 'test'
    without a test split is an error."""
    if chosen is None:
        return [name for name in QUERY_SETS if name != "test" or context.test is not None]
    if "test" in chosen and context.test is None:
        raise InputValueError("`--query-sets` names 'test', but the dataset has no test split")
    return chosen


def query_sets(context, chosen: list[str] | None) -> dict:
    """name -> query distribution: noised train / held-out images, pure noise (`query_set_names` selects)."""
    def distribution(name):
        if name == "noise":
            return pure_noise(context.flat.shape[1])
        return noised_data(context.flat if name == "train" else np.asarray(context.test.flat))

    return {name: distribution(name) for name in query_set_names(context, chosen)}


def agreement_rows(network, models: dict, queries: dict, sigmas: np.ndarray, query_key, num_queries: int) -> list[dict]:
    """Tidy rows of `gj.compare_scores` of the network against every model, per query set."""
    rows = []
    for name, distribution in tqdm(queries.items(), desc="score-agreement", unit="query set"):
        key = jax.random.fold_in(query_key, QUERY_SETS.index(name))
        for row in gj.compare_scores(network, models, distribution, sigmas, key=key, num_queries=num_queries):
            rows.append({"sigma": row["sigma"], "reference": row.pop("candidate"), "queries": name, **row})
    return rows


def _gaussian_column(rows: list[dict], queries: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """`(sigmas, values)` of the Gaussian's `column` on one query set, sigma ascending."""
    picked = sorted((float(r["sigma"]), float(r[column])) for r in rows
                    if r["reference"] == "gaussian" and r["queries"] == queries)
    return np.array([s for s, _ in picked]), np.array([v for _, v in picked])


def sigma99(rows: list[dict], queries: str = "train") -> float | None:
    """Smallest grid sigma from which on (it and every larger one) the Gaussian's fuv_score < 0.01; None if none."""
    sigmas, fuv = _gaussian_column(rows, queries, "fuv_score")
    good = fuv < EXPLAINED
    tail = np.flatnonzero(~good)
    first = 0 if tail.size == 0 else tail[-1] + 1
    return float(sigmas[first]) if first < len(sigmas) else None


def r2_breakdown(rows: list[dict], queries: str) -> float | None:
    """The smallest grid sigma at which the Gaussian's denoiser R^2 is below 0.9 (None if it never is).

    At low noise every denoiser is close to the identity, so R^2 is near 1 for all models; it
    falls where the network's denoiser starts to differ from the Gaussian's. (At the highest
    noise levels R^2 loses meaning: the network's outputs barely vary across queries.)
    """
    sigmas, r2 = _gaussian_column(rows, queries, "r2_denoiser")
    below = sigmas[r2 < R2_FLOOR]
    return float(below.min()) if below.size else None


def plot(rows: list[dict], eigvals: np.ndarray, path) -> None:
    """Fig. 6: fuv_score vs sigma, log-log, a panel per query set and a line per model."""
    sets = list(dict.fromkeys(r["queries"] for r in rows))
    models = list(dict.fromkeys(r["reference"] for r in rows))
    fig, axes = figure(len(sets))
    for ax, name in zip(axes[0], sets, strict=True):
        for i, model in enumerate(models):
            picked = [(r["sigma"], r["fuv_score"]) for r in rows if r["queries"] == name and r["reference"] == model]
            ax.plot(*zip(*picked, strict=True), marker=".", color=f"C{i}", label=model)
        for lam in eigvals[:EIGVAL_LINES]:
            ax.axvline(np.sqrt(lam), color="0.7", lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="sigma", title=f"{name} queries")
    axes[0, 0].set_ylabel("FUV of the network's score")
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)


def _format(sigma: float | None, none: str) -> str:
    return none if sigma is None else f"{sigma:.4g}"


def summary_lines(rows: list[dict]) -> list[str]:
    """sigma99 on train queries and the Gaussian denoiser's R^2 < 0.9 breakdown on train and held-out queries."""
    lines = []
    if any(r["queries"] == "train" for r in rows):
        lines.append(f"sigma99 (Gaussian explains > 99% of the network's score at this and every larger grid sigma, "
                     f"train queries): {_format(sigma99(rows), 'none on the grid')}")
    for name in ("train", "test"):
        if any(r["queries"] == name for r in rows):
            lines.append(f"Gaussian denoiser R^2 < {R2_FLOOR} from sigma = "
                         f"{_format(r2_breakdown(rows, name), 'none (R^2 >= 0.9 everywhere)')} ({name} queries)")
    return lines + best_model_lines(rows)


def best_model_lines(rows: list[dict]) -> list[str]:
    """The model whose denoiser best predicts the network's (highest R^2) at each sigma, held-out queries if any."""
    queries = "test" if any(r["queries"] == "test" for r in rows) else "train"
    picked = [r for r in rows if r["queries"] == queries]
    best = []
    for sigma in sorted(dict.fromkeys(float(r["sigma"]) for r in picked)):
        top = max((r for r in picked if float(r["sigma"]) == sigma), key=lambda r: float(r["r2_denoiser"]))
        best.append(f"{sigma:.3g}: {top['reference']} ({float(top['r2_denoiser']):.3f})")
    return [f"best denoiser R^2 per sigma ({queries} queries): " + ", ".join(best)]


def validate(context, args) -> None:
    """Refuse options that conflict with the data (named) and a comparison whose arrays would not fit in memory.

    Each query set's comparison holds the queries, the network's and every model's denoiser
    outputs, `(S, Q, D)` float32 each, and every mixture's covariances, `(K, D, D)`.
    """
    check_components("--gmm-components", args.gmm_components, len(context.flat))
    query_set_names(context, args.query_sets)
    models = len(model_names(context, args))
    dim = context.flat.shape[1]
    check_memory(FLOAT32 * (args.num_sigmas * context.num_queries * dim * (models + 2)
                            + sum(args.gmm_components) * dim**2),
                 f"`--num-queries` {context.num_queries} x `--num-sigmas` {args.num_sigmas} (with {models} models "
                 f"of D = {dim}) and `--gmm-components` {','.join(map(str, args.gmm_components))!r}")
    sigma_grid(args.num_sigmas, args.sigma_min, args.sigma_max)


def run(context, args) -> Result:
    """Fit the models, compare on every query set, write `score_agreement.csv` and `.png`."""
    sigmas = sigma_grid(args.num_sigmas, args.sigma_min, args.sigma_max)
    models = references(context, model_names(context, args))
    queries = query_sets(context, args.query_sets)
    # `compare_scores` runs the network outside compiled loops, where XLA's own convolutions are the fastest
    network = context.network.with_conv_impl("xla")
    rows = agreement_rows(network, models, queries, sigmas, context.key("queries"), context.num_queries)
    csv_path = write_csv(context.path("score_agreement.csv"), rows, COLUMNS)
    png_path = context.path("score_agreement.png")
    plot(rows, np.asarray(models["gaussian"].eigvals), png_path)
    header = (f"step {context.step} ({context.weights} weights), {len(sigmas)} sigmas, "
              f"{context.num_queries} queries each")
    return Result([header, *summary_lines(rows)], [csv_path, png_path])


COMMAND = Command(
    name="score-agreement",
    help="Fig. 6: FUV of the network's score vs isotropic, Gaussian, GMM and delta scores over sigma",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run,
)
