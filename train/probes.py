"""Score-structure probes at checkpoints (paper Sec. 5, Fig. 12): network vs analytic scores.

At every checkpoint the network's denoiser (raw and EMA weights) is compared, on two
fixed seeded query sets over a sigma grid (noised training images, `queries = train`, and
noised held-out images of the dataset's test split, `queries = test`, when it has one),
with the isotropic, Gaussian, k-means Gaussian-mixture (several K), per-class mixture
(when the data has labels) and delta (training-set) scores: the score and denoiser FUV,
the denoiser R^2 and MSE of `gaussjax.evaluation.ScoreProbe`. The analytic models are
fitted once per run and cached in the run directory; their denoiser outputs on the query
sets are computed once, so a probe costs only the network's forward passes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gaussjax as gj
from gaussjax.checks import InputValueError
from gaussjax.data import load_dataset
from gaussjax.evaluation import ScoreProbe, make_score_probe, noised_data
from gaussjax.runs import TrainConfig

PROBE_COLUMNS = ["step", "sigma", "reference", "weights", "queries", "fuv_score", "fuv_denoiser", "r2_denoiser",
                 "mse_denoiser"]
MODEL_FILE = "analytic_models.npz"


def reference_names(config: TrainConfig, num_train: int, labelled: bool) -> list[str]:
    """The references probed, in `probes.csv` order: isotropic, Gaussian, the k-means GMMs of
    `probe_gmm_components` (those with K <= N), the per-class GMM (labelled data), delta, local models."""
    return ["isotropic", "gaussian", *(f"gmm{k}" for k in config.probe_gmm_components if k <= num_train),
            *(["gmm-class"] if labelled else []), *(["delta"] if config.probe_delta else []), *config.probe_local]


def fit_analytic_models(config: TrainConfig, flat: np.ndarray, labels, run_dir: Path, image_shape=None) -> dict:
    """name -> reference model (`gaussjax.fit.fit_references` with `probe_gmm_rank`), fitted to the training set
    once and cached in `run_dir`; `python -m analysis` fits the same models.

    The local models of `config.probe_local` need the training images' `image_shape (H, W, C)`.
    """
    names = reference_names(config, len(flat), labels is not None)
    fitted = [name for name in names if name in ("isotropic", "gaussian") or name.startswith("gmm")]
    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        models = gj.fit.fit_references(flat, fitted, labels=labels, rank=config.probe_gmm_rank)
        partial = path.with_name(path.name + ".partial")  # a crash never leaves a truncated cache
        with open(partial, "wb") as file:
            np.savez(file, **{f"{name}/{field}": np.asarray(value) for name, model in models.items()
                              for field, value in _fields(model).items()})
        os.replace(partial, path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    models = {"isotropic": gj.Isotropic(arrays["isotropic/mean"])}
    models["gaussian"] = gj.Gaussian(*(arrays[f"gaussian/{f}"] for f in ("mean", "eigvals", "eigvecs")))
    for name in sorted({k.split("/")[0] for k in arrays if k.startswith("gmm")}, key=_mixture_order):
        models[name] = gj.GaussianMixture(*(arrays[f"{name}/{f}"] for f in ("weights", "means", "eigvals", "eigvecs")))
    rest = [name for name in names if name not in fitted]
    return models | gj.fit.fit_references(flat, rest, image_shape=image_shape, labels=labels,
                                          gaussian=models["gaussian"])


def _fields(model) -> dict:
    """The arrays that define a cached model (`Isotropic`, `Gaussian` or `GaussianMixture`)."""
    names = {"Isotropic": ("mean",), "Gaussian": ("mean", "eigvals", "eigvecs"),
             "GaussianMixture": ("weights", "means", "eigvals", "eigvecs")}[type(model).__name__]
    return {name: getattr(model, name) for name in names}


def _mixture_order(name: str):
    return (1, 0) if name == "gmm-class" else (0, int(name[3:]))


HELD_OUT_QUERY_FRACTION = 0.5  # held-out queries per sigma, relative to `probe_queries` (probe cost, see docs)
HELD_OUT_WEIGHTS = "ema"  # the only weights probed on held-out queries when both are probed


def build_probe(
    config: TrainConfig, flat: np.ndarray, models: dict, *, salt: int = 7, fraction: float = 1.0
) -> ScoreProbe:
    """A fixed query set and the analytic models' outputs on it.

    The queries are `flat (N, D)` images noised, seeded by `config.seed` and `salt`: `fraction`
    of `config.probe_queries` query points per sigma (at least 2).
    """
    key = jax.random.fold_in(jax.random.key(config.seed), salt)
    num_queries = max(2, round(fraction * config.probe_queries))
    return make_score_probe(models, noised_data(flat), config.probe_sigmas, key=key, num_queries=num_queries)


def build_probes(config: TrainConfig, flat: np.ndarray, models: dict, test_flat: np.ndarray | None) -> dict:
    """Query set name -> `ScoreProbe`: `train` (the queries of runs before held-out probes) and `test` (if any)."""
    probes = {"train": build_probe(config, flat, models)}
    if test_flat is not None and len(test_flat):
        probes["test"] = build_probe(config, test_flat, models, salt=8, fraction=HELD_OUT_QUERY_FRACTION)
    return probes


def place_probes(probes: dict, mesh: Mesh | None) -> dict:
    """The probes with their queries and analytic outputs `(S, Q, D)` as global arrays on `mesh` (None: as they are).

    Sharded over the query axis `Q` where it divides by the device count (each device then runs the
    network on its share of the queries, and the statistics are reduced over the mesh), replicated
    otherwise. Every process builds the same probes (same seed, same models), so each can supply the
    part its devices hold.
    """
    if mesh is None:
        return probes

    def place(array) -> jax.Array:
        host = np.asarray(array)
        spec = PartitionSpec(None, "data") if host.shape[1] % mesh.size == 0 else PartitionSpec()
        return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda index: host[index])

    return {name: dataclasses.replace(probe, queries=place(probe.queries),
                                      candidate_outputs={k: place(v) for k, v in probe.candidate_outputs.items()})
            for name, probe in probes.items()}


def load_test_flat(config: TrainConfig, data_dir=None) -> np.ndarray | None:
    """The run dataset's test split as `(N, D)`, or None if it has none (folder and array datasets)."""
    try:
        dataset = load_dataset(config.dataset, root=data_dir, split="test", **config.dataset_options)
    except ValueError:
        return None
    return np.asarray(dataset.flat)


def probe_rows(probes: dict, step: int, denoisers: dict) -> list[dict]:
    """Rows of `probes.csv` (`PROBE_COLUMNS`) for one checkpoint.

    `probes` maps query set name (train / test) -> `ScoreProbe`, `denoisers` weights name
    (raw / ema) -> model.
    """
    rows = []
    for weights, denoiser in denoisers.items():
        for queries, probe in probes.items():
            if queries != "train" and weights != HELD_OUT_WEIGHTS and HELD_OUT_WEIGHTS in denoisers:
                continue  # held-out queries probe the EMA network only (what EDM samples with)
            for row in probe(denoiser):
                full = {"step": step, "reference": row["candidate"], "weights": weights, "queries": queries, **row}
                rows.append({column: full[column] for column in PROBE_COLUMNS})
    return rows


def append_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Append rows to a CSV, writing the header if the file is new."""
    new = not Path(path).exists()
    with open(path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def truncate_rows(path: Path, max_step: int, columns: list[str]) -> None:
    """Drop rows past `max_step` and any partly written line (after a crash), keeping the rest.

    Raises ValueError naming the file if its header is not `columns` (a file of another layout,
    e.g. written by an older gaussjax, is never rewritten: start a new run directory).
    """
    if not Path(path).exists():
        return
    with open(path, newline="") as file:
        header = next(csv.reader(file), None)
    if header is None:  # created, nothing written yet
        Path(path).unlink()
        return
    if header != columns:
        raise InputValueError(f"{path} has the columns {header}, not {columns}: it was written by another version of "
                              "gaussjax; resume it with that version or start a new run directory")
    rows = [r for r in read_rows(path) if None not in r.values() and r.get("step", "").isdigit()
            and int(r["step"]) <= max_step and len(r) == len(columns)]
    Path(path).unlink()
    if rows:
        append_rows(path, rows, columns)


def probed_steps(path: Path) -> set[int]:
    return {int(r["step"]) for r in read_rows(path)}


def summary_table(path: Path, num_sigmas: int = 3, weights: str = "ema", column: str = "fuv_score") -> str:
    """FUV vs step at a few sigmas (low, middle, high of the probe grid), one column per reference (train queries)."""
    rows = [r for r in read_rows(path) if r["weights"] == weights and r["queries"] == "train"]
    if not rows:
        return "(no probes yet)"
    sigmas = sorted({float(r["sigma"]) for r in rows})
    chosen = [sigmas[i] for i in np.unique(np.linspace(0, len(sigmas) - 1, num_sigmas).round().astype(int))]
    references = list(dict.fromkeys(r["reference"] for r in rows))
    value = {(int(r["step"]), float(r["sigma"]), r["reference"]): float(r[column]) for r in rows}
    steps = sorted({int(r["step"]) for r in rows})
    lines = []
    for sigma in chosen:
        lines.append(f"{column} ({weights} weights) at sigma = {sigma:.3g}")
        lines.append(f"{'step':>8} " + " ".join(f"{name:>10}" for name in references))
        for step in steps:
            lines.append(f"{step:>8} "
                         + " ".join(f"{value.get((step, sigma, n), float('nan')):>10.3g}" for n in references))
    return "\n".join(lines)
