"""`python -m analysis teleport`: steps analytical teleportation saves at unchanged quality (Fig. 14; Tables 1, 4-6).

Analytical teleportation (paper Alg. 1) replaces a sampler's first `n_skip` steps on the grid
`karras_sigmas(--num-steps)` by the closed-form Gaussian solution (`gj.hybrid_sampler`). For every
`n_skip = 0, 1, ...` the network samples `--num-samples` images from the SAME `x_T = sigma_max z`
(`command_key(--seed, 'initial-states')`), and their quality is measured against the held-out
split (the train split if the dataset has none; the summary says so):

- `fd`: the Frechet distance of features (`fid` with `--inception`: Inception pool3 features);
- `kid`, `kid_std`: the kernel inception distance (mean and std over subsets) in the same features;
- `precision`, `recall`: improved precision / recall (k = 3) in the same features;
- `mse_to_full`: the pixelwise MSE to the full sampler's (`n_skip = 0`) samples from the same `x_T`.

Features: without `--inception`, a small classifier trained on the run's train split
(`train_feature_net`; cached in `OUT/feature_net/` and reused when it was trained on the same
dataset). The distance is then called "FD", never "FID". `--inception PATH` uses FID's
InceptionV3 (pytorch-fid's weight file, `load_inception`). The command deletes nothing: an
`OUT/feature_net` that is not a feature net of the run's dataset (another dataset's, or other
files) is an error before any work, telling to remove it or to choose another `--out`.

Noise floor: the FD between two independent full-sampler sample sets of the same size (the
second from another `x_T`, `command_key(--seed, 'floor-states')`), measured per sampler, not
assumed. `n_skip` is within the noise floor when `FD(n_skip) <= FD(0) + floor`. "Saves X% NFE
within the noise floor" refers to the largest `n_skip` up to which EVERY `n_skip` is within the
floor (a contiguous run from 0, so one lucky draw cannot claim a saving), as a share of the full
sampler's NFE. NFE: Heun on N steps costs `2N - 1`, so teleporting `k` steps costs
`2(N - k) - 1`; Euler and DPM-Solver++(2M) cost `N - k`. The sweep stops at the first `n_skip`
(past the auto choice) whose FD exceeds `COLLAPSE_FACTOR = 3` times `FD(0) + floor` (quality
has collapsed), or at `N - 1`.

A run trained with `--warm-start SIGMA` is swept like any other (rows with `sigma_skip > SIGMA` query the
network at levels it was never trained on; `compare-runs` and `samples` start it at SIGMA). A whitened run
(`--whiten`) is refused: its network denoises anisotropic noise, so the isotropic Gaussian solution is not
its early path.

Auto choice: `gaussjax.teleportation.auto_sigma_skip` on `--num-queries` states (no data needed),
the same for every sampler (it depends only on the grid); its row is marked in the plot.

Files in `--out`:
    teleport.csv   columns `sampler, n_skip, sigma_skip, nfe, fd, kid, kid_std, precision, recall,
                   mse_to_full, within_floor` (`fid` for `fd` with `--inception`), one row per n_skip.
    teleport.png   NFE vs FD per sampler with the noise-floor band `FD(0) + floor` and the auto choice.
    teleport_floor.csv  columns `sampler, nfe, fd_full, fd_second, floor`: the noise floor per sampler.
    teleport_auto.csv   columns `step, sigma, disagreement, teleported`: the auto choice's curve.
    teleport_features.npz  float32 features: `real` (held-out), every row's samples
                   (`<sampler>_<n_skip>`) and the noise floor's second set (`<sampler>_second`),
                   so every FD, KID and precision/recall can be recomputed.
    feature_net/   the cached feature net (without `--inception`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import gaussjax as gj
from analysis._common import Command, Result, references
from analysis.memory import FLOAT32, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError
from gaussjax.quality import (
    FeatureStats,
    frechet_distance,
    kernel_inception_distance,
    load_feature_net,
    load_inception,
    precision_recall,
    save_feature_net,
    train_feature_net,
)
from gaussjax.teleportation import AUTO_SKIP_TOLERANCE, auto_sigma_skip

OUTPUTS = ("teleport.csv", "teleport.png", "teleport_floor.csv", "teleport_auto.csv", "teleport_features.npz")
FEATURE_NET = "feature_net"  # the cached feature net's directory in --out
FEATURE_NET_FILE = "feature_net.json"  # what marks a directory as a saved feature net (save_feature_net)
SAMPLERS = {"heun": gj.heun_sampler, "dpmpp2m": gj.dpmpp_2m_sampler, "euler": gj.euler_sampler}
COLLAPSE_FACTOR = 3.0
SAMPLE_BATCH = 512  # samples per sampler call
FEATURE_BATCH = 512  # images per feature-net call
KID_SUBSETS = 100
FEATURES_BOUND = 2048  # features per image: Inception's pool3 width, more than a feature net's
# float32 arrays of shape (M, D) held at once: the two x_T, a sweep's full, second and current samples, and
# the float64 copies of `mse_to_full` (2 x 2)
SAMPLE_ARRAYS = 9
FLOOR_COLUMNS = ("sampler", "nfe", "fd_full", "fd_second", "floor")
AUTO_COLUMNS = ("step", "sigma", "disagreement", "teleported")


def columns(metric: str) -> tuple[str, ...]:
    name = metric.lower()
    return ("sampler", "n_skip", "sigma_skip", "nfe", name, "kid", "kid_std", "precision", "recall", "mse_to_full",
            "within_floor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sampler", default="heun", choices=(*SAMPLERS, "all"),
                        help="sampler after the teleport (default heun; all: heun, dpmpp2m and euler)")
    parser.add_argument("--num-steps", type=int, default=18,
                        help="steps N on the Karras grid (default 18: Heun 35 NFE)")
    parser.add_argument("--num-samples", type=int, default=256, help="samples per n_skip (default 256)")
    parser.add_argument("--inception", type=Path, default=None,
                        help="pytorch-fid Inception weights (.pth): FID instead of the feature net's FD")


def validate(context, args) -> None:
    """Refuse bad options (named), an `OUT/feature_net` that is not a feature net, and a sweep that would not fit
    in memory, before any work.

    Held at once: the `(M, D)` samples (`SAMPLE_ARRAYS`), every row's features, `(M, F)` float32
    for `N` rows and the floor's second set per sampler, and the auto choice's `(N + 1, Q, D)` states.
    """
    if args.num_steps < 2:
        raise InputValueError(f"`--num-steps` must be >= 2 (teleporting needs a step to skip), got {args.num_steps}")
    if args.num_samples < 5:
        raise InputValueError(f"`--num-samples` must be >= 5 (precision/recall use k = 3 neighbours), "
                              f"got {args.num_samples}")
    if args.inception is not None and not Path(args.inception).is_file():
        raise InputValueError(f"`--inception` {args.inception} is not a file: "
                              "pass pytorch-fid's Inception weights (.pth)")
    if args.inception is None:
        check_feature_net_dir(context.out / FEATURE_NET)
    dim, samplers, rows = context.flat.shape[1], len(SAMPLERS) if args.sampler == "all" else 1, args.num_steps + 1
    check_memory(FLOAT32 * (args.num_samples * (dim * SAMPLE_ARRAYS + rows * samplers * FEATURES_BOUND)
                            + rows * context.num_queries * dim),
                 f"`--num-samples` {args.num_samples} x `--num-steps` {args.num_steps} ({samplers} sampler(s), D = "
                 f"{dim}) and `--num-queries` {context.num_queries}")


def check_feature_net_dir(path: Path) -> None:
    """`path` (`OUT/feature_net`) must be absent, an empty directory, or a saved feature net (never deleted)."""
    if path.exists() and not path.is_dir():
        raise InputValueError(f"{path} is a file, where the command caches its feature net (a directory): remove it or "
                              "choose another `--out`")
    if path.is_dir() and any(path.iterdir()) and not (path / FEATURE_NET_FILE).is_file():
        raise InputValueError(f"{path} holds files that are not a saved feature net (no {FEATURE_NET_FILE}), where the "
                              "command caches its feature net: remove them or choose another `--out`")


def feature_extractor(context, args) -> tuple:
    """`(features(images (B, H, W, C)) -> (B, F) np.ndarray, metric name, description)`.

    Without `--inception`: the feature net cached in `OUT/feature_net` if it was trained on the
    run's dataset (another dataset's is an error, never deleted), else one trained and saved there.
    """
    if args.inception is not None:
        inception = load_inception(args.inception)
        return (lambda images: np.asarray(inception(images), np.float64)), "FID", "Inception pool3 features"
    path, train = context.out / FEATURE_NET, context.train
    check_feature_net_dir(path)
    if (path / FEATURE_NET_FILE).is_file():
        net, how = load_feature_net(path), f"cached {path}"
        if net.dataset_name != train.name or tuple(net.image_shape) != tuple(train.images.shape[1:]):
            raise InputValueError(f"{path} holds a feature net of dataset {net.dataset_name!r} (images "
                                  f"{tuple(net.image_shape)}), not of the run's {train.name!r} (images "
                                  f"{tuple(train.images.shape[1:])}): remove it or choose another `--out`")
    else:
        held_out = context.test if context.test is not None and context.test.labels is not None else None
        net = train_feature_net(train, context.key("feature-net"), test=held_out, progress=False)
        save_feature_net(net, path)
        how = f"trained, saved to {path}"
    accuracy = "n/a" if net.accuracy is None else f"{net.accuracy:.1%} on {net.accuracy_split}"
    return (lambda images: np.asarray(net.features(images), np.float64)), "FD", (
        f"feature net ({how}; held-out accuracy {accuracy})")


def features_of(extract, unflatten, flat: np.ndarray) -> np.ndarray:
    """`extract`'s features `(N, F)` of flat images `(N, D)`, `FEATURE_BATCH` images at a time."""
    return np.concatenate([extract(jnp.asarray(unflatten(flat[i:i + FEATURE_BATCH])))
                           for i in range(0, len(flat), FEATURE_BATCH)])


def sample(network, gaussian, x_T: jax.Array, sigmas: jax.Array, n_skip: int, sampler) -> tuple[np.ndarray, int]:
    """Teleport + `sampler` from `x_T (M, D)`, `SAMPLE_BATCH` at a time: `(samples (M, D), NFE per sample)`."""
    parts, nfe = [], None
    for start in range(0, x_T.shape[0], SAMPLE_BATCH):
        out = gj.hybrid_sampler(network, gaussian, x_T[start:start + SAMPLE_BATCH], sigmas, n_skip, sampler=sampler)
        parts.append(np.asarray(out.x))
        nfe = int(out.nfe)
    return np.concatenate(parts), nfe


class Quality:
    """FD, KID and precision/recall of sample features against fixed real features; `key` draws KID's subsets."""

    def __init__(self, real: np.ndarray, key: jax.Array):
        self.real, self.real_stats, self.key = real, FeatureStats.from_features(real), key

    def fd(self, fake: np.ndarray) -> float:
        return float(frechet_distance(self.real_stats, FeatureStats.from_features(fake)))

    def __call__(self, fake: np.ndarray) -> dict:
        kid = kernel_inception_distance(self.real, fake, key=self.key, num_subsets=KID_SUBSETS,
                                        subset_size=min(len(self.real), len(fake)))
        pr = precision_recall(self.real, fake, k=3)
        return {"fd": self.fd(fake), "kid": float(kid.mean), "kid_std": float(kid.std),
                "precision": float(pr.precision), "recall": float(pr.recall)}


@dataclasses.dataclass(frozen=True)
class SweepSetup:
    """What every sampler's sweep shares.

    Attributes:
        network: the denoiser sampled.
        gaussian: the Gaussian teleported with (`gj.hybrid_sampler`).
        x_T: `(M, D)` initial states of every row; `x_T2`: `(M, D)` the noise floor's second set.
        sigmas: the Karras grid `(N + 1,)`.
        quality: the metrics against the real features.
        features: `samples (M, D) -> features (M, F)`.
        auto_skip: the auto choice's `n_skip` (the sweep runs at least to it).
    """

    network: object
    gaussian: gj.Gaussian
    x_T: jax.Array
    x_T2: jax.Array
    sigmas: jax.Array
    quality: Quality
    features: Callable[[np.ndarray], np.ndarray]
    auto_skip: int


@dataclasses.dataclass(frozen=True)
class SweepRows:
    """One sampler's sweep: a row per `n_skip` (`columns`, with `fd`), its noise-floor row and the features saved."""

    rows: list[dict]
    floor: dict
    features: dict[str, np.ndarray]


def sweep(name: str, setup: SweepSetup) -> SweepRows:
    """Rows for `n_skip = 0 ..` until collapse (see the module docstring), and the noise-floor row."""
    sampler, sigmas, features = SAMPLERS[name], setup.sigmas, setup.features
    network, gaussian, quality, x_T = setup.network, setup.gaussian, setup.quality, setup.x_T
    full, full_nfe = sample(network, gaussian, x_T, sigmas, 0, sampler)
    second, _ = sample(network, gaussian, setup.x_T2, sigmas, 0, sampler)
    f_full, f_second = features(full), features(second)
    saved = {f"{name}_second": f_second.astype(np.float32)}
    floor = {"sampler": name, "nfe": full_nfe, "fd_full": quality.fd(f_full), "fd_second": quality.fd(f_second)}
    floor["floor"] = float(frechet_distance(FeatureStats.from_features(f_full), FeatureStats.from_features(f_second)))
    limit = floor["fd_full"] + floor["floor"]
    rows, sigma_values = [], np.asarray(sigmas, np.float64)
    for n_skip in tqdm(range(len(sigmas) - 1), desc=f"teleport + {name}", leave=False):
        if n_skip == 0:
            x, nfe, f = full, full_nfe, f_full
        else:
            x, nfe = sample(network, gaussian, x_T, sigmas, n_skip, sampler)
            f = features(x)
        saved[f"{name}_{n_skip}"] = f.astype(np.float32)  # the features are float32 to begin with
        row = {"sampler": name, "n_skip": n_skip, "sigma_skip": float(sigma_values[n_skip]), "nfe": nfe, **quality(f),
               "mse_to_full": float(np.mean((x.astype(np.float64) - full.astype(np.float64)) ** 2))}
        row["within_floor"] = bool(row["fd"] <= limit)
        rows.append(row)
        if n_skip >= setup.auto_skip and row["fd"] > COLLAPSE_FACTOR * limit:
            break
    return SweepRows(rows, floor, saved)


def within_floor_skip(rows: list[dict]) -> int:
    """The largest n_skip up to which every row is within the noise floor (0 if only n_skip = 0)."""
    best = 0
    for row in rows:
        if not row["within_floor"]:
            break
        best = row["n_skip"]
    return best


def plot(rows: list[dict], floors: dict, auto_skip: int, metric: str, path: Path) -> Path:
    fig, axes = figure(size=(5.2, 3.6))
    ax = axes[0, 0]
    for i, (name, floor) in enumerate(floors.items()):
        color = f"C{i}"
        mine = [r for r in rows if r["sampler"] == name]
        ax.plot([r["nfe"] for r in mine], [r["fd"] for r in mine], "o-", color=color, ms=3, label=name)
        ax.axhspan(max(floor["fd_full"] - floor["floor"], 0), floor["fd_full"] + floor["floor"],
                   color=color, alpha=0.12)
        auto = [r for r in mine if r["n_skip"] == auto_skip]
        if auto:
            ax.plot(auto[0]["nfe"], auto[0]["fd"], "*", color=color, ms=13, mec="k",
                    label=f"auto ({name}, n_skip={auto_skip})")
    ax.set_xlabel("NFE per sample")
    ax.set_ylabel(metric)
    ax.set_yscale("log")
    ax.set_title(f"teleport + sampler: NFE vs {metric} (band: FD(0) ± noise floor)", fontsize=8)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def run(context, args) -> Result:
    start = time.perf_counter()
    if getattr(getattr(context.network, "module", None), "whiten", None) is not None:
        raise InputValueError(
            f"{context.source} is a whitened network (--whiten): its denoiser is for noise of covariance "
            "sigma^2 (Sigma + eps I), so the data Gaussian's isotropic-noise solution is not its early path and "
            "teleport does not apply; compare its samples with `compare-runs` or `samples`")
    extract, metric, described = feature_extractor(context, args)  # first: it may refuse a cached net
    names = list(SAMPLERS) if args.sampler == "all" else [args.sampler]
    sigmas = gj.karras_sigmas(args.num_steps)
    gaussian = references(context, ["gaussian"])["gaussian"]
    shape = (args.num_samples, context.flat.shape[1])
    choice = auto_sigma_skip(context.network, gaussian, sigmas, key=context.key("auto-skip"),
                             num_states=context.num_queries)
    real_split, fallback = (context.test, "") if context.test is not None else (
        context.train, " (the dataset has no held-out split: against the TRAIN split)")
    real = features_of(extract, context.train.unflatten, np.asarray(real_split.flat))
    setup = SweepSetup(
        network=context.network, gaussian=gaussian, sigmas=sigmas, auto_skip=choice.n_skip,
        x_T=float(sigmas[0]) * jax.random.normal(context.key("initial-states"), shape, jnp.float32),
        x_T2=float(sigmas[0]) * jax.random.normal(context.key("floor-states"), shape, jnp.float32),
        quality=Quality(real, context.key("kid")),
        features=lambda samples: features_of(extract, context.train.unflatten, samples),
    )
    rows, floors, saved = [], {}, {"real": real.astype(np.float32)}
    for name in names:
        result = sweep(name, setup)
        rows, floors[name] = rows + result.rows, result.floor
        saved.update(result.features)
    table = columns(metric)
    out_rows = [{**{k: v for k, v in r.items() if k != "fd"}, metric.lower(): r["fd"]} for r in rows]
    np.savez(context.path("teleport_features.npz"), **saved)
    auto_rows = [{"step": i, "sigma": float(s), "disagreement": float(d), "teleported": i <= choice.n_skip}
                 for i, (s, d) in enumerate(zip(np.asarray(sigmas), choice.disagreement, strict=False))]
    written = [
        write_csv(context.path("teleport.csv"), out_rows, table),
        write_csv(context.path("teleport_floor.csv"), list(floors.values()), FLOOR_COLUMNS),
        write_csv(context.path("teleport_auto.csv"), auto_rows, AUTO_COLUMNS),
        plot(rows, floors, choice.n_skip, metric, context.path("teleport.png")),
        context.path("teleport_features.npz"),
    ]
    lines = [
        (f"teleport: {args.num_samples} samples per n_skip from the same x_T, {args.num_steps} steps on the Karras "
         f"grid, network step {context.step}; {metric} with {described}, against {real_split.name}/"
         f"{real_split.split} ({len(real)} images){fallback}"),
        (f"  auto choice (tolerance {AUTO_SKIP_TOLERANCE}): n_skip={choice.n_skip}, "
         f"sigma_skip={choice.sigma_skip:.3g}"),
    ]
    for name in names:
        mine, floor = [r for r in rows if r["sampler"] == name], floors[name]
        full_nfe, best = mine[0]["nfe"], within_floor_skip(mine)
        best_row = mine[best]
        lines.append(
            f"{name}: saves {1 - best_row['nfe'] / full_nfe:.0%} NFE within the noise floor (n_skip={best}, "
            f"NFE {best_row['nfe']} of {full_nfe}, {metric} {best_row['fd']:.3g} vs {floor['fd_full']:.3g} "
            f"+ floor {floor['floor']:.3g})")
        auto = [r for r in mine if r["n_skip"] == choice.n_skip][0]
        lines.append(
            f"  {name} auto: n_skip={choice.n_skip}, sigma_skip={choice.sigma_skip:.3g}, NFE {auto['nfe']} of "
            f"{full_nfe} (saves {1 - auto['nfe'] / full_nfe:.0%}), {metric} {auto['fd']:.3g}, "
            + ("within the noise floor" if auto["within_floor"] else "OUTSIDE the noise floor"))
    lines.append(f"  in {time.perf_counter() - start:.0f} s")
    return Result(lines, written)


COMMAND = Command(
    name="teleport", help="Fig. 14: analytical teleportation, NFE vs FD per sampler, with the auto-chosen sigma_skip",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run,
    num_queries=64,  # states per level for the auto choice
    in_report=False,  # minutes on a CPU: run it on its own
)
