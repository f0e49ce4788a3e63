"""`python -m analysis score-field`: the score field on the plane through three images (Fig. 11, 13, 19-21).

Three training images `a, b, c` (of one class, `--classes same`, or of three classes,
`--classes different`; `both` does both), chosen by `--seed`, span a plane

    x(u, v) = a + u e1 + v e2,   e1 = (b - a) / |b - a|,   e2 = Gram-Schmidt of (c - a) against e1,

so `(u, v)` are L2 distances on the plane (Fig. 11's axes). On a `--grid` of points covering
the three anchors with a margin, at each sigma of `--sigmas`, the score of the network and of
the analytic models (Gaussian, Eq. 12; GMM with `--gmm-components` modes, Eq. 41; delta mixture
of the training set, Eq. 9-11) is projected onto `(e1, e2)`. `--all-checkpoints` adds the
network at every checkpoint of the run (`network@STEP`, Fig. 13's training evolution).

Writes `score_field.csv`, one row per (plane, sigma, model, grid point):

    classes, sigma, model, u, v, score_u, score_v

`score_field_anchors.csv` (`classes, anchor, index, label, u, v`: the three training images,
by index into the training split, and their plane coordinates), and one PNG per plane,
`score_field_{classes}.png` (quiver plots over the heatmap of the projected norm, anchors in
red; rows = sigma, cols = model). The summary gives, per plane, sigma and model, the mean
cosine between the model's projected field and the network's over the grid.

Keys: anchors drawn with `command_key(--seed, 'anchors')`; the models are the references `gaussian`,
`gmm{K}` and `delta` (`analysis._common.references`: the run's probes' models).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from analysis._common import Command, Result, check_components, command_key, noise_levels, references
from analysis.memory import FLOAT32, FLOAT64, ROW_BYTES, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError

OUTPUTS = ("score_field.csv", "score_field_anchors.csv", "score_field_same.png", "score_field_different.png")
COLUMNS = ("classes", "sigma", "model", "u", "v", "score_u", "score_v")
ANCHOR_COLUMNS = ("classes", "anchor", "index", "label", "u", "v")
CLASS_CHOICES = ("same", "different")


def add_arguments(parser):
    group = parser.add_argument_group("score-field")
    group.add_argument("--classes", default="both", choices=(*CLASS_CHOICES, "both"),
                       help="anchors of one class, of three classes, or both planes (default both)")
    group.add_argument("--sigmas", type=noise_levels, default="0.1,0.5,2",
                       help="noise levels, comma-separated (default 0.1,0.5,2)")
    group.add_argument("--grid", type=grid_shape, default="15x15",
                       help="grid points along u and v, 'NUxNV' or 'N' (default 15x15)")
    group.add_argument("--margin", type=float, default=0.3,
                       help="margin around the anchors, as a fraction of their extent (default 0.3)")
    group.add_argument("--gmm-components", type=int, default=10, help="modes of the GMM (default 10)")
    group.add_argument("--all-checkpoints", action="store_true", help="also the network at every checkpoint")


def grid_shape(text: str) -> tuple[int, int]:
    """`--grid`: `'15x15'` (or `'15'`) as `(NU, NV)`, each >= 2."""
    parts = str(text).lower().split("x")
    try:
        shape = tuple(int(p) for p in (parts * 2 if len(parts) == 1 else parts))
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 2:
        raise argparse.ArgumentTypeError(f"must be 'NUxNV' or 'N' with N >= 2, got {text!r}")
    return shape


def choose_anchors(labels: np.ndarray | None, classes: str, seed: int) -> np.ndarray:
    """Indices `(3,)` of three training images: one class (`'same'`) or three classes (`'different'`).

    Deterministic in `seed`: the class(es) and then the images are drawn with a NumPy generator
    seeded by the key data of `command_key(seed, 'anchors')`.
    """
    if labels is None:
        raise InputValueError("`--classes` needs class labels, and this dataset has none")
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(command_key(seed, 'anchors'))))
    values, counts = np.unique(labels, return_counts=True)
    if classes == "same":
        eligible = values[counts >= 3]
        if len(eligible) == 0:
            raise InputValueError("`--classes same` needs a class with at least 3 training images")
        members = np.flatnonzero(labels == rng.choice(eligible))
        return np.sort(rng.choice(members, size=3, replace=False))
    if len(values) < 3:
        raise InputValueError(f"`--classes different` needs 3 classes, the training set has {len(values)}")
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in rng.choice(values, size=3, replace=False)])


def plane_basis(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal `basis (D, 2)` = `(e1, e2)` of the plane through `a, b, c (D,)`, and the anchors' `uv (3, 2)`.

    `e1 = (b - a) / |b - a|`, `e2` = `c - a` minus its `e1` part, normalised (Gram-Schmidt);
    the plane's origin is `a`, so `a + basis @ uv[i]` is the i-th anchor. Float64.
    """
    a, b, c = (np.asarray(p, np.float64) for p in (a, b, c))
    ab, ac = b - a, c - a
    e1 = ab / _nonzero_norm(ab)
    ortho = ac - (ac @ e1) * e1
    e2 = ortho / _nonzero_norm(ortho)
    basis = np.stack([e1, e2], axis=1)
    return basis, np.stack([a, b, c]) @ basis - a @ basis


def _nonzero_norm(vector: np.ndarray) -> float:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-8:
        raise InputValueError("the three anchor images are collinear (or repeated): they span no plane; "
                              "try another --seed")
    return norm


def plane_grid(anchor_uv: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    """Grid points `uv (NU NV, 2)` over the anchors' bounding box widened by `margin` times its largest side."""
    low, high = anchor_uv.min(axis=0), anchor_uv.max(axis=0)
    pad = margin * float(np.max(high - low))
    u, v = (np.linspace(lo - pad, hi + pad, n) for lo, hi, n in zip(low, high, shape, strict=True))
    uu, vv = np.meshgrid(u, v, indexing="xy")
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


def plane_points(origin: np.ndarray, basis: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """`x = origin + u e1 + v e2`, `(G, D)` float64, for `uv (G, 2)`."""
    return origin[None, :] + uv @ basis.T


def projected_score(model, points: np.ndarray, sigma: float, basis: np.ndarray) -> np.ndarray:
    """`(score(x, sigma) . e1, score(x, sigma) . e2)`, `(G, 2)`, of `model` at `points (G, D)`."""
    score = model.score(jnp.asarray(points, jnp.float32), sigma)
    return np.asarray(score, np.float64) @ basis


def mean_cosine(field: np.ndarray, reference: np.ndarray) -> float:
    """Mean over grid points of the cosine between the 2-D vectors of `field` and `reference`, `(G, 2)` each."""
    dots = np.sum(field * reference, axis=1)
    norms = np.linalg.norm(field, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.mean(dots / np.maximum(norms, 1e-30)))


def score_models(context, components: int, all_checkpoints: bool) -> dict:
    """name -> model: the network (and `network@STEP` per checkpoint), `gaussian`, `gmm{K}`, `delta`."""
    models = {"network": context.network}
    if all_checkpoints:
        models.update(_checkpoint_networks(context))
    return models | references(context, ["gaussian", f"gmm{components}", "delta"])


def _checkpoint_steps(context) -> list[int]:
    """The run's checkpoint steps but the analysed one (`--all-checkpoints`)."""
    from gaussjax.runs import Checkpointer

    if context.run_dir is None:
        raise InputValueError("`--all-checkpoints` needs `--run RUN_DIR`")
    return [s for s in Checkpointer(context.run_dir, read_only=True).steps() if s != context.step]


def _checkpoint_networks(context) -> dict:
    """`network@STEP` for every readable checkpoint of the run but the analysed one; an unreadable one is left
    out with a `warning:` line on stderr naming its step."""
    from gaussjax.runs import UnreadableCheckpointError, load_denoiser

    networks = {}
    for step in _checkpoint_steps(context):
        try:
            networks[f"network@{step}"] = load_denoiser(context.run_dir, step=step, weights=context.weights)
        except UnreadableCheckpointError as error:
            print(f"warning: {' '.join(str(error).split())}; left out of --all-checkpoints", file=sys.stderr)
    return networks


def plane_rows(classes: str, models: dict, points: np.ndarray, uv: np.ndarray, sigmas: Sequence[float],
               basis: np.ndarray) -> list[dict]:
    """Tidy rows (`COLUMNS`) of every model's projected score at every sigma on one plane."""
    rows = []
    for sigma in sigmas:
        for name, model in tqdm(models.items(), desc=f"{classes}, sigma={sigma:g}", leave=False):
            field = projected_score(model, points, sigma, basis)
            rows += [{"classes": classes, "sigma": float(sigma), "model": name, "u": float(p[0]), "v": float(p[1]),
                      "score_u": float(s[0]), "score_v": float(s[1])} for p, s in zip(uv, field, strict=True)]
    return rows


def field_of(rows: Sequence[dict], classes: str, sigma: float, model: str) -> np.ndarray:
    """The projected field `(G, 2)` of one (plane, sigma, model) from tidy rows, in grid order."""
    return np.array([(r["score_u"], r["score_v"]) for r in rows
                     if r["classes"] == classes and r["sigma"] == sigma and r["model"] == model], np.float64)


def summary_lines(rows: Sequence[dict]) -> list[str]:
    """Per plane and sigma: each model's mean cosine with the network's projected field."""
    lines = ["mean cosine of the projected score with the network's, per plane and sigma:"]
    for classes, sigma in dict.fromkeys((r["classes"], r["sigma"]) for r in rows):
        reference = field_of(rows, classes, sigma, "network")
        models = [m for m in dict.fromkeys(r["model"] for r in rows) if m != "network"]
        text = ", ".join(f"{m} {mean_cosine(field_of(rows, classes, sigma, m), reference):.3f}" for m in models)
        lines.append(f"classes={classes} sigma={sigma:g}: {text}")
    return lines


def plot_plane(rows: Sequence[dict], classes: str, anchor_uv: np.ndarray, shape: tuple[int, int]):
    """Quiver plots of one plane over the heatmap of the projected norm; rows = sigma, cols = model (Fig. 11)."""
    sigmas = list(dict.fromkeys(r["sigma"] for r in rows if r["classes"] == classes))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = figure(len(models), len(sigmas), size=(2.8, 2.6))
    uv = np.array([(r["u"], r["v"]) for r in rows if r["classes"] == classes and r["sigma"] == sigmas[0]
                   and r["model"] == models[0]])
    grid_u, grid_v = (uv[:, i].reshape(shape[1], shape[0]) for i in range(2))
    for i, sigma in enumerate(sigmas):
        for j, model in enumerate(models):
            field, ax = field_of(rows, classes, sigma, model), axes[i, j]
            norm = np.linalg.norm(field, axis=1).reshape(grid_u.shape)
            ax.pcolormesh(grid_u, grid_v, norm, shading="auto", cmap="viridis")
            ax.quiver(uv[:, 0], uv[:, 1], field[:, 0], field[:, 1], color="white", width=0.006)
            ax.scatter(anchor_uv[:, 0], anchor_uv[:, 1], color="red", s=14, zorder=3)
            ax.set_aspect("equal")
            ax.set_title(f"{model}, sigma={sigma:g}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def validate(context, args) -> None:
    """Refuse bad options (named) and planes whose rows would not fit in memory, before any work.

    Per plane and sigma every model's field is evaluated at the `NU NV` grid points of the
    plane (`(G, D)` float64 points, float32 scores), and every (plane, sigma, model, point) is a
    tidy row held until the CSV is written.
    """
    sigmas, (nu, nv) = args.sigmas, args.grid
    if not (np.isfinite(args.margin) and args.margin >= 0):
        raise InputValueError(f"`--margin` must be >= 0, got {args.margin}")
    check_components("--gmm-components", [args.gmm_components], context.flat.shape[0])
    planes = CLASS_CHOICES if args.classes == "both" else (args.classes,)
    for classes in planes:
        choose_anchors(context.train.labels, classes, context.seed)
    models = 4 + (len(_checkpoint_steps(context)) if args.all_checkpoints else 0)
    dim, points = context.flat.shape[1], nu * nv
    check_memory(ROW_BYTES * points * len(sigmas) * models * len(planes) + (FLOAT64 + FLOAT32) * points * dim
                 + FLOAT32 * args.gmm_components * dim**2,
                 f"`--grid` {nu}x{nv} x {len(sigmas)} sigmas x {models} models x {len(planes)} planes (D = {dim}) "
                 f"and `--gmm-components` {args.gmm_components}")


def run(context, args) -> Result:
    sigmas, shape = args.sigmas, args.grid
    planes = CLASS_CHOICES if args.classes == "both" else (args.classes,)
    anchors = {classes: choose_anchors(context.train.labels, classes, context.seed) for classes in planes}
    models = score_models(context, args.gmm_components, args.all_checkpoints)
    flat = context.flat.astype(np.float64)
    rows, anchor_rows, outputs = [], [], []
    for classes, index in anchors.items():
        basis, anchor_uv = plane_basis(*flat[index])
        uv = plane_grid(anchor_uv, shape, args.margin)
        plane = plane_rows(classes, models, plane_points(flat[index[0]], basis, uv), uv, sigmas, basis)
        rows += plane
        anchor_rows += [{"classes": classes, "anchor": name, "index": int(i), "label": int(context.train.labels[i]),
                         "u": float(p[0]), "v": float(p[1])}
                        for name, i, p in zip("abc", index, anchor_uv, strict=True)]
        outputs.append(save_figure(plot_plane(plane, classes, anchor_uv, shape),
                                   context.path(f"score_field_{classes}.png")))
    outputs[:0] = [write_csv(context.path("score_field.csv"), rows, COLUMNS),
                   write_csv(context.path("score_field_anchors.csv"), anchor_rows, ANCHOR_COLUMNS)]
    return Result(summary_lines(rows), outputs)


COMMAND = Command(
    name="score-field",
    help="Fig. 11/13: network vs analytic score fields projected on the plane through three training images",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run,
)
