"""`python -m analysis gmm-sweep`: how many modes and how much rank the network's score needs (Fig. 9, 10).

For every number of components K (`--components`) and covariance rank r (`--ranks`, capped
at D), a Gaussian mixture is fitted to the training set (`gj.fit_gmm(flat, K, rank=r,
key=...)`, k-means then the top-r eigenpairs of each cluster covariance, App. A.5, Eq. 41;
K = 1 is the rank-r Gaussian), and its score is compared with the network's on noised
training data `y + sigma n` (`gaussjax.evaluation.noised_data`, Sec. 5) at each sigma of
`--sigmas` (default `geomspace(0.05, 20, 8)`), by `gj.compare_scores`: the fraction of
unexplained variance of the score (Eq. 28) and of the denoiser.

Keys: the queries are drawn with `command_key(--seed, 'queries')` (the same points for every
mixture); the K-component mixtures share the k-means clusters of the reference model `gmm{K}`
(`gaussjax.fit.fit_references`: `fold_in(key(0), K)`), so `K=10,r=D` is the run's `gmm10`.

Writes `gmm_sweep.csv`, one row per (K, rank, sigma):

    components, rank, sigma, fuv_score, fuv_denoiser, r2_denoiser

and `gmm_sweep.png` (FUV of the score against rank, one panel per sigma, one line per K:
the lower panel of Fig. 9). The summary gives, per sigma, the minimal rank whose score
FUV is below `--threshold` (default 0.01: 99% of the network's score variance explained)
for each K and for the best K, or `none` (cf. Fig. 10B, which uses a relative criterion).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import Command, Result, check_components, noise_levels, positive_ints
from analysis.memory import FLOAT32, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError
from gaussjax.evaluation import noised_data

OUTPUTS = ("gmm_sweep.csv", "gmm_sweep.png")
COLUMNS = ("components", "rank", "sigma", "fuv_score", "fuv_denoiser", "r2_denoiser")
DEFAULT_SIGMAS = tuple(float(s) for s in np.geomspace(0.05, 20, 8))


def add_arguments(parser):
    group = parser.add_argument_group("gmm-sweep")
    group.add_argument("--components", type=positive_ints, default="1,2,5,10",
                       help="numbers of components K, comma-separated")
    group.add_argument("--ranks", type=positive_ints, default="1,4,16,64",
                       help="covariance ranks, comma-separated (capped at D)")
    group.add_argument("--sigmas", type=noise_levels, default=DEFAULT_SIGMAS,
                       help="noise levels, comma-separated (default geomspace(0.05, 20, 8))")
    group.add_argument("--threshold", type=float, default=0.01,
                       help="score FUV below which a rank suffices (default 0.01)")


def resolve_ranks(ranks: Sequence[int], dim: int) -> list[int]:
    """Ranks capped at `dim` (D), sorted, without repeats."""
    return sorted({min(int(r), dim) for r in ranks})


def candidate_name(components: int, rank: int) -> str:
    return f"K={components},r={rank}"


def fit_mixtures(flat: np.ndarray, components: Sequence[int], ranks: Sequence[int], key) -> dict:
    """`{(K, r): gj.fit_gmm(flat, K, rank=r, key=jax.random.fold_in(key, K))}` over the grid; `flat (N, D)`.

    k-means runs once per K and its clusters are passed as `labels`: the same mixtures as
    `fit_gmm(..., key=...)` (which clusters with `kmeans(flat, K, key=...)`), without clustering
    again for every rank.
    """
    check_components("--components", components, flat.shape[0])
    mixtures = {}
    for k in tqdm(components, desc="fitting GMMs", leave=False):
        labels = np.asarray(gj.kmeans(flat, k, key=jax.random.fold_in(key, k))[1])  # once per K
        mixtures.update({(k, r): gj.fit_gmm(flat, k, rank=r, labels=labels) for r in ranks})
    return mixtures


def sweep_rows(network, mixtures: dict, flat: np.ndarray, sigmas: Sequence[float], *, key, num_queries: int) -> list:
    """Tidy rows (`COLUMNS`) of `gj.compare_scores(network, mixtures, noised_data(flat), sigmas)`, Eq. 28."""
    names = {candidate_name(k, r): (k, r) for k, r in mixtures}
    candidates = {name: mixtures[kr] for name, kr in names.items()}
    table = gj.compare_scores(network, candidates, noised_data(flat), np.asarray(sigmas), key=key,
                              num_queries=num_queries)
    rows = [{"components": names[row["candidate"]][0], "rank": names[row["candidate"]][1], **row} for row in table]
    return sorted(rows, key=lambda row: (row["components"], row["rank"], row["sigma"]))


def minimal_ranks(rows: Sequence[dict], threshold: float) -> dict:
    """`{(sigma, K): smallest rank with fuv_score < threshold, or None}` (cf. Fig. 10B)."""
    best = {}
    for row in rows:
        key = (float(row["sigma"]), int(row["components"]))
        best.setdefault(key, None)
        if float(row["fuv_score"]) < threshold and (best[key] is None or int(row["rank"]) < best[key]):
            best[key] = int(row["rank"])
    return best


def summary_lines(rows: Sequence[dict], threshold: float) -> list[str]:
    """Per sigma: `sigma=S: K=1: r, K=2: none, ...; best: r (K=k)` with the minimal ranks of `minimal_ranks`."""
    ranks = minimal_ranks(rows, threshold)
    lines = [f"minimal rank with score FUV < {threshold:g}, per sigma and number of components K:"]
    for sigma in sorted({s for s, _ in ranks}):
        per_k = {k: r for (s, k), r in ranks.items() if s == sigma}
        found = [(r, k) for k, r in per_k.items() if r is not None]
        best = "none" if not found else "{} (K={})".format(*min(found))
        text = ", ".join(f"K={k}: {'none' if r is None else r}" for k, r in sorted(per_k.items()))
        lines.append(f"sigma={sigma:.4g}: {text}; best: {best}")
    return lines


def plot(rows: Sequence[dict], threshold: float):
    """FUV of the score against rank, one panel per sigma, one line per K (Fig. 9, lower)."""
    sigmas = sorted({row["sigma"] for row in rows})
    ncols = min(4, len(sigmas))
    fig, axes = figure(ncols, -(-len(sigmas) // ncols), size=(3.4, 2.8))
    for ax, sigma in zip(axes.flat, sigmas, strict=False):
        for k in sorted({row["components"] for row in rows}):
            line = sorted((row["rank"], row["fuv_score"]) for row in rows
                          if row["sigma"] == sigma and row["components"] == k)
            ax.plot(*zip(*line, strict=True), marker="o", label=f"K={k}")
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", yscale="log", title=f"sigma = {sigma:.3g}", xlabel="rank", ylabel="FUV of score")
    for ax in axes.flat[len(sigmas):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def validate(context, args) -> None:
    """Refuse options that conflict with the data (named) and a sweep whose arrays would not fit in memory.

    `compare_scores` holds the queries and the network's and every mixture's denoiser outputs,
    `(S, Q, D)` float32 each; the mixtures hold their top-r eigenvectors, `(K, D, r)` each, fitted
    from the clusters' covariances, `(K, D, D)`.
    """
    if not 0 < args.threshold < 1:
        raise InputValueError(f"`--threshold` must be in (0, 1), got {args.threshold}")
    components, dim = args.components, context.flat.shape[1]
    check_components("--components", components, context.flat.shape[0])
    ranks = resolve_ranks(args.ranks, dim)
    mixtures = len(components) * len(ranks)
    fitted = sum(components) * sum(ranks) * dim + max(components) * dim**2
    check_memory(FLOAT32 * (len(args.sigmas) * context.num_queries * dim * (mixtures + 2) + fitted),
                 f"`--num-queries` {context.num_queries} x {len(args.sigmas)} sigmas x {mixtures} mixtures (D = {dim})")


def run(context, args) -> Result:
    ranks = resolve_ranks(args.ranks, context.flat.shape[1])
    mixtures = fit_mixtures(context.flat, args.components, ranks, jax.random.key(0))  # fit_references' default key
    rows = sweep_rows(context.network, mixtures, context.flat, args.sigmas, key=context.key("queries"),
                      num_queries=context.num_queries)
    csv_path = write_csv(context.path("gmm_sweep.csv"), rows, COLUMNS)
    png_path = save_figure(plot(rows, args.threshold), context.path("gmm_sweep.png"))
    return Result(summary_lines(rows, args.threshold), [csv_path, png_path])


COMMAND = Command(
    name="gmm-sweep", help="Fig. 9/10: FUV of the network's score explained by GMMs over components x rank x sigma",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run,
)
