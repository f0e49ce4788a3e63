"""The one-shot device benchmark (issue 24, item 6): the fused kernels against XLA and the device's matmul, and
the CIFAR-10 DDPM++ training step against EDM's published throughput.

    PYTHONPATH=. python3 bench/device.py --out DIR    # the full run, on one GPU: at most --budget (420 s) in all
    PYTHONPATH=. python3 bench/device.py --quick      # tiny shapes, 3 repeats: a smoke run of every code path
    PYTHONPATH=. python3 bench/device.py --groups delta-cifar,train-float32-highest

Prints one markdown table on stdout (progress, with timestamps, goes to stderr); with `--out DIR` it also
writes the table to DIR/device.md and the rows to DIR/device.json, both rewritten after every group, so a run
cut short leaves what it measured. `--quick` runs on a CPU too (the `pallas` rows are then the kernels run
interpreted: a check that they run, not a speed).

Groups (each runs in its own process, see "Failures"), in order: `delta-cifar` (`DeltaMixture`, N = 50,000
points, D = 3,072, B = 256 queries), `delta-mnist` (N = 60,000, D = 784, B = 256), `gmm-cifar` and `gmm-mnist`
(`GaussianMixture`, K = 100 modes of rank r = 256, D = 3,072 / 784, B = 256), `els-cifar` and `els-mnist`
(`PatchMixture(equivariant=True)`, k = 5, N = 500 images 32x32x3 / 1,000 images 28x28x1, B = 8 queries), then
`train-float32` and `train-bf16` (the `cifar10` config's network, EDM's config F: DDPM++, 32x32x3, batch 512
as EDM). `train-float32-highest` (the network's products at HIGHEST, as EDM computes) runs only when named.
Every query is at sigma = 1, the data uniform in [-1, 1]. `--quick` runs `delta-small`, `gmm-small`, `els-small`
and the two training rows on the `digits-tiny` network (8x8x1, batch 32), meant to take under 2 minutes on a
CPU.

Rows of a kernel group, each a jitted call on arrays already on the device:
- `xla`, `pallas`: `model.denoise(x, sigma)`, the model an argument of `jax.jit`, built with
  `implementation="xla"` / `"pallas"`; a model without an `implementation` field is timed as `xla` (its only
  path) and its `pallas` row reads "n/a";
- `matmul <precision>`: the two products of the model's operand shapes, logits `queries @ keys.T` and weighted
  sum `weights @ values`, as one call, at `HIGHEST` (full float32: the precision of `gaussjax._precision`),
  at the `DotAlgorithmPreset`s TF32_TF32_F32_X3 and BF16_BF16_F32_X6 (split-precision schemes near float32
  accuracy on tensor cores) and at `DEFAULT` (TF32 on NVIDIA GPUs since Ampere), each where the backend
  compiles it. `vs F32 matmul` is a row's TFLOP/s over `matmul F32 (HIGHEST)`'s; `vs xla` is the `xla` row's
  time over the row's.

FLOPs, counted analytically (a multiply-add is 2; the exponentials, the softmax's O(B N) work and the
model's one-off preparation are not counted):
- delta, N points y_i in D dimensions, B queries: `2 B N (D + D)`, the logits x . y_i and the weighted sum of
  the y_i; matmul operands `(B, D) @ (D, N)` and `(B, N) @ (N, D)`;
- GMM, K modes of rank r: `2 B K (D r + D) + 2 B K (D r + D) = 4 B K D (r + 1)`, the projections U_k^T x and
  x . mu_k, and the weighted means mu_k + U_k c_k; matmul operands `(B, D) @ (D, K (r + 1))` and
  `(B, K (r + 1)) @ (K (r + 1), D)`;
- ELS, N images H x W x C, k x k windows, P = Q = H W, K = k^2 C: `2 B P N Q (K + C)` (the count in
  `PatchMixture`'s docstring); matmul operands `(R, K) @ (K, N Q)` and `(R, N Q) @ (N Q, C)` with R the first
  rows of the B P (so that the `(R, N Q)` logits hold at most 2^28 numbers), rated by their own count;
- train: XLA's cost analysis of the compiled step (`compiled.cost_analysis()["flops"]`).

Timing: `bench._timing.time_alternating`, the medians of alternating repeats after a warm-up call, each call
waited for with `jax.block_until_ready`. The repeats are set from one timed call to fill about `--seconds` per
group, between 3 and `--max-repeats`; a candidate whose one call takes longer than `--seconds` is reported
from that call alone ("1 call" in its note).

Memory: `temp MiB` is the compiled program's scratch (`compiled.memory_analysis().temp_size_in_bytes`: the
logits blocks of the XLA path, a kernel's own buffers); `peak MiB` is `jax.devices()[0].memory_stats()
["peak_bytes_in_use"]` of the group's process (JAX cannot reset it), which includes the data and every model
of the group: per group, not per row.

Training rows: one optimizer step per call (`train.step.make_train_step`: EDM loss, gradients, Adam, EMA,
as `python -m train` runs it; the state donated), on one device, batch 512, one batch of images drawn once.
EDM's figure: NVlabs/edm's README ("Training new models": cifar10-32x32-uncond-vp, `--cond=0 --arch=ddpmpp`,
8xV100, "~2 days") with its `train.py` defaults `--duration 200` (Mimg) and `--batch 512`, and its
`training_loop.py`, which turns TF32 off (float32 throughout; `--fp16` is off by default):
200e6 images / (2 x 86,400 s) / 8 GPUs = about 145 images/s per V100, 1,160 for the eight. "~2 days" is
rounded, so this is good to perhaps 20%; EDM publishes no bfloat16 figure for CIFAR-10. Differences: EDM's
config F network also has a 9-input augmentation-label layer and runs its augmentation pipeline (both small);
`train-float32` runs the network's products at JAX's DEFAULT precision (TF32 on NVIDIA GPUs),
`train-float32-highest` at float32 as EDM.

Failures: every group runs in its own process under a time limit (`min(cap, what the budget leaves after
keeping each later group its minimum)`); a row that fails says why in its note, a group whose process fails
or runs out of time keeps the rows it measured (rows from one call are marked so) and adds a row saying what
happened, and the run goes on with the next group.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MATMUL_F32 = "matmul F32 (HIGHEST)"
# row name -> a `jax.lax.Precision` or `jax.lax.DotAlgorithmPreset` name
MATMULS = {MATMUL_F32: "HIGHEST", "matmul TF32x3": "TF32_TF32_F32_X3", "matmul BF16x6": "BF16_BF16_F32_X6",
           "matmul DEFAULT": "DEFAULT"}
MAX_LOGITS = 2**28  # numbers in the ELS matmul baseline's logits (1 GiB in float32)
EDM_IMAGES_PER_S = 200e6 / (2 * 86_400) / 8  # per V100, float32 (module docstring)

TRAIN = {"kind": "train", "config": "cifar10", "image_shape": (32, 32, 3), "batch": 512}
FULL_GROUPS: dict[str, dict[str, Any]] = {
    "delta-cifar": {"kind": "delta", "points": 50_000, "dim": 3072, "queries": 256},
    "delta-mnist": {"kind": "delta", "points": 60_000, "dim": 784, "queries": 256},
    "gmm-cifar": {"kind": "gmm", "modes": 100, "rank": 256, "dim": 3072, "queries": 256},
    "gmm-mnist": {"kind": "gmm", "modes": 100, "rank": 256, "dim": 784, "queries": 256},
    "els-cifar": {"kind": "els", "images": 500, "image_shape": (32, 32, 3), "patch_size": 5, "queries": 8},
    "els-mnist": {"kind": "els", "images": 1000, "image_shape": (28, 28, 1), "patch_size": 5, "queries": 8},
    "train-float32": {**TRAIN, "precision": "float32"},
    "train-bf16": {**TRAIN, "precision": "bf16"},
    "train-float32-highest": {**TRAIN, "precision": "float32", "matmul_precision": "highest"},
}
TINY_TRAIN = {"kind": "train", "config": "digits-tiny", "image_shape": (8, 8, 1), "batch": 32}
QUICK_GROUPS: dict[str, dict[str, Any]] = {
    "delta-small": {"kind": "delta", "points": 2000, "dim": 64, "queries": 16},
    "gmm-small": {"kind": "gmm", "modes": 8, "rank": 8, "dim": 64, "queries": 16},
    "els-small": {"kind": "els", "images": 16, "image_shape": (8, 8, 1), "patch_size": 3, "queries": 2},
    "train-float32": {**TINY_TRAIN, "precision": "float32"},
    "train-bf16": {**TINY_TRAIN, "precision": "bf16"},
    "train-float32-highest": {**TINY_TRAIN, "precision": "float32", "matmul_precision": "highest"},
}
# (time cap of one group, the least time worth starting it with), seconds, by mode and kind
LIMITS = {"full": {"train": (150.0, 90.0), "kernel": (45.0, 25.0)},
          "quick": {"train": (40.0, 15.0), "kernel": (25.0, 8.0)}}
COLUMNS = ("group", "shape", "variant", "ms", "TFLOP/s", "vs F32 matmul", "vs xla", "img/s", "EDM img/s",
           "temp MiB", "peak MiB", "note")

_START = time.time()  # the run's start (a worker takes the driver's: `--started`)


def _log(message: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[{stamp} +{time.time() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _short(error: BaseException) -> str:
    """`Type: first line of the message`, at most 160 characters (table cells stay one line)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 160 else text[:157] + "..."


# -- worker side (one process per group; jax is imported here only) -----------------------------------------


class _Rows:
    """Appends one JSON record per line to the group's rows file, flushed at once (it survives a kill)."""

    def __init__(self, path: str, group: str, shape: str = ""):
        self.file = open(path, "a")  # open for the worker's lifetime
        self.group, self.shape = group, shape

    def write(self, **fields) -> None:
        record = {"group": self.group, "shape": self.shape, **fields}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def stage(self, message: str) -> None:
        """Log what the group starts now, and record it (a group stopped by its time limit says where)."""
        _log(f"{self.group}: {message}")
        self.file.write(json.dumps({"stage": message}) + "\n")
        self.file.flush()


@dataclasses.dataclass
class _Candidate:
    """One timed callable of a group and what is known of it."""

    call: Callable[[], Any] | None = None
    flops: float = 0.0
    temp_mib: float | None = None
    note: str = ""
    error: str | None = None
    single_s: float | None = None


@dataclasses.dataclass
class _Case:
    """A kernel group's inputs: the model's constructor per implementation, its queries, the matmul operands."""

    label: str
    flops: float
    make_model: Callable[[str | None], Any]  # implementation (None: the model has no such field) -> model
    model_class: type
    x: Any
    sigma: Any
    operands: tuple  # (queries, keys, weights, values): queries @ keys.T and weights @ values


def _peak_mib() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats or "peak_bytes_in_use" not in stats else stats["peak_bytes_in_use"] / 2**20


def _temp_mib(compiled) -> float | None:
    try:
        return compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        return None


def _delta_case(spec: dict) -> _Case:
    import jax
    import jax.numpy as jnp

    import gaussjax as gj

    n, d, b = spec["points"], spec["dim"], spec["queries"]
    keys = jax.random.split(jax.random.key(0), 3)
    points = jax.random.uniform(keys[0], (n, d), minval=-1.0, maxval=1.0)
    x = points[:b] + jax.random.normal(keys[1], (b, d))
    weights = jax.random.uniform(keys[2], (b, n))
    return _Case(f"N={n:,} D={d:,} B={b}", 2 * b * n * (d + d), lambda impl: _construct(gj.DeltaMixture, impl, points),
                 gj.DeltaMixture, x, jnp.ones((b,)), (x, points, weights, points))


def _gmm_case(spec: dict) -> _Case:
    import jax
    import jax.numpy as jnp

    import gaussjax as gj

    k, r, d, b = spec["modes"], spec["rank"], spec["dim"], spec["queries"]
    keys = jax.random.split(jax.random.key(1), 5)
    means = jax.random.uniform(keys[0], (k, d), minval=-1.0, maxval=1.0)
    eigvals = jax.random.uniform(keys[1], (k, r), minval=0.1, maxval=2.0)
    eigvecs = jnp.linalg.qr(jax.random.normal(keys[2], (k, d, r)))[0]
    x = jax.random.normal(keys[3], (b, d))
    rows = jnp.concatenate([eigvecs.transpose(0, 2, 1), means[:, None, :]], axis=1).reshape(k * (r + 1), d)
    weights = jax.random.uniform(keys[4], (b, k * (r + 1)))
    arrays = (jnp.ones(k), means, eigvals, eigvecs)
    return _Case(f"K={k} r={r} D={d:,} B={b}", 4 * b * k * d * (r + 1),
                 lambda impl: _construct(gj.GaussianMixture, impl, *arrays), gj.GaussianMixture, x, jnp.ones((b,)),
                 (x, rows, weights, rows))


def _els_case(spec: dict) -> _Case:
    import jax
    import jax.numpy as jnp

    import gaussjax as gj

    n, (h, w, c), k, b = spec["images"], spec["image_shape"], spec["patch_size"], spec["queries"]
    keys = jax.random.split(jax.random.key(2), 6)
    images = jax.random.uniform(keys[0], (n, h, w, c), minval=-1.0, maxval=1.0)
    x = images[:b].reshape(b, -1) + jax.random.normal(keys[1], (b, h * w * c))
    patch_dim, components = k * k * c, n * h * w
    rows = max(1, min(b * h * w, MAX_LOGITS // components))
    operands = (jax.random.normal(keys[2], (rows, patch_dim)), jax.random.normal(keys[3], (components, patch_dim)),
                jax.random.uniform(keys[4], (rows, components)), jax.random.normal(keys[5], (components, c)))
    return _Case(f"N={n:,} {h}x{w}x{c} k={k} B={b}", 2 * b * (h * w) * n * (h * w) * (patch_dim + c),
                 lambda impl: _construct(gj.PatchMixture, impl, images, k, equivariant=True), gj.PatchMixture,
                 x, jnp.ones((b,)), operands)


def _construct(cls, implementation: str | None, *args, **kwargs):
    return cls(*args, **kwargs) if implementation is None else cls(*args, **kwargs, implementation=implementation)


def _has_implementation(cls) -> bool:
    import inspect

    try:
        return "implementation" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _model_candidate(case: _Case, implementation: str) -> _Candidate:
    """`case`'s model with `implementation`, its `denoise` compiled with the model as an argument."""
    import jax

    supported = _has_implementation(case.model_class)
    if not supported and implementation != "xla":
        return _Candidate(error=f"n/a: {case.model_class.__name__} has no `implementation` field")
    note = "" if supported else "no `implementation` field: the XLA path"
    if implementation == "pallas" and jax.default_backend() == "cpu":
        note = "interpreted (CPU)"
    model = case.make_model(implementation if supported else None)
    compiled = jax.jit(lambda m, x, s: m.denoise(x, s)).lower(model, case.x, case.sigma).compile()
    return _Candidate(lambda: compiled(model, case.x, case.sigma), case.flops, _temp_mib(compiled), note)


def _matmul_candidate(case: _Case, precision_name: str) -> _Candidate:
    """The two products of `case`'s operand shapes at one precision, as one compiled call."""
    import jax
    import jax.numpy as jnp

    if precision_name in ("HIGHEST", "DEFAULT"):
        precision = jax.lax.Precision[precision_name]
    else:
        precision = getattr(jax.lax.DotAlgorithmPreset, precision_name, None)
    if precision is None:
        return _Candidate(error=f"n/a: jax {jax.__version__} has no {precision_name}")
    queries, keys, weights, values = case.operands

    def products(q, k, w, v):
        return jnp.matmul(q, k.T, precision=precision), jnp.matmul(w, v, precision=precision)

    compiled = jax.jit(products).lower(*case.operands).compile()
    flops = 2 * queries.shape[0] * keys.shape[0] * queries.shape[1] + 2 * weights.shape[0] * weights.shape[1] * (
        values.shape[1])
    note = "" if queries.shape[0] == case.x.shape[0] else f"first {queries.shape[0]:,} rows"
    return _Candidate(lambda: compiled(*case.operands), flops, _temp_mib(compiled), note)


def _one_call(candidate: _Candidate) -> None:
    """Warm `candidate` up and time one more call (errors go into the candidate)."""
    import jax

    call = candidate.call
    if call is None:
        return
    try:
        jax.block_until_ready(call())
        start = time.perf_counter()
        jax.block_until_ready(call())
        candidate.single_s = time.perf_counter() - start
    except Exception as error:
        candidate.error = _short(error)


def _record(rows: _Rows, variant: str, candidate: _Candidate, seconds: float | None, note: str, **extra) -> None:
    ms = None if seconds is None else seconds * 1e3
    tflops = None if seconds is None else candidate.flops / seconds / 1e12
    text = "; ".join(part for part in (candidate.note, note, candidate.error or "") if part)
    rows.write(variant=variant, ms=ms, tflops=tflops, temp_mib=candidate.temp_mib, peak_mib=_peak_mib(), note=text,
               **extra)


def _time_group(rows: _Rows, candidates: dict[str, _Candidate], seconds: float, max_repeats: int) -> None:
    """Alternate the candidates that ran in one call under `seconds`; record every candidate's final row."""
    from bench._timing import time_alternating

    fast = {name: c for name, c in candidates.items() if c.error is None and c.single_s is not None
            and c.single_s <= seconds}
    times: dict[str, float] = {}
    repeats, failure = 0, ""
    if fast:
        per_round = sum(c.single_s or 0.0 for c in fast.values())
        repeats = int(max(min(3, max_repeats), min(max_repeats, seconds // max(per_round, 1e-9))))
        rows.stage(f"{len(fast)} candidates alternating, {repeats} repeats")
        try:
            times = time_alternating({name: c.call for name, c in fast.items()}, repeats=repeats)
        except Exception as error:  # keep the single calls
            failure = f"the alternation failed: {_short(error)}"
    for name, candidate in candidates.items():
        if name in times:
            _record(rows, name, candidate, times[name], f"median of {repeats}")
        else:
            single = "; ".join(filter(None, ["1 call" if candidate.single_s else "", failure if name in fast else ""]))
            _record(rows, name, candidate, candidate.single_s, single)


def _kernel_group(spec: dict, rows: _Rows, seconds: float, max_repeats: int) -> None:
    build = {"delta": _delta_case, "gmm": _gmm_case, "els": _els_case}[spec["kind"]]
    case = build(spec)
    rows.shape = case.label
    makers: dict[str, Callable[[], _Candidate]] = {"xla": functools.partial(_model_candidate, case, "xla")}
    for name, precision in MATMULS.items():
        makers[name] = functools.partial(_matmul_candidate, case, precision)
    makers["pallas"] = functools.partial(_model_candidate, case, "pallas")  # last: the newest code
    candidates: dict[str, _Candidate] = {}
    for name, make in makers.items():
        rows.stage(f"{name}: compiling and one call")
        try:
            candidate = make()
        except Exception as error:
            candidate = _Candidate(error=_short(error))
        if candidate.error is None:
            _one_call(candidate)
        candidates[name] = candidate
        _record(rows, name, candidate, candidate.single_s, "1 call (provisional)" if candidate.single_s else "")
        _log(f"{rows.group}: {name}: " + (candidate.error or f"{(candidate.single_s or 0) * 1e3:.2f} ms"))
    _time_group(rows, candidates, seconds, max_repeats)


def _train_group(spec: dict, rows: _Rows, seconds: float, max_repeats: int) -> None:
    """The EDM train step of `spec`'s config, one step per call; one row."""
    import jax
    import numpy as np

    from bench._timing import time_alternating
    from gaussjax.nn import EDMPrecond, SongUNet
    from train.configs import get_config
    from train.step import init_state, make_optimizer, make_train_step, zero_metrics

    config = get_config(spec["config"]).replace(batch_size=spec["batch"], precision=spec["precision"])
    shape = tuple(spec["image_shape"])
    precond = EDMPrecond(SongUNet(**config.network.for_images(shape).kwargs()), sigma_data=config.sigma_data)
    optimizer = make_optimizer(config)
    matmul = spec.get("matmul_precision")
    with jax.default_matmul_precision(matmul) if matmul else contextlib.nullcontext():
        state = init_state(config, precond, shape, optimizer)
        params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
        height, width, channels = shape
        rows.shape = f"{spec['config']}: {params:,} params, {height}x{width}x{channels}, B={spec['batch']}"
        data = jax.random.uniform(jax.random.key(1), (config.batch_size, *shape), minval=-1.0, maxval=1.0)
        rows.stage("compiling the step")
        start = time.perf_counter()
        step = jax.jit(make_train_step(config, precond, optimizer, None), donate_argnums=0)
        compiled = step.lower(state, data, zero_metrics()).compile()
    cost: Any = compiled.cost_analysis()  # a dict (a list of one in older jax)
    flops = float((cost if isinstance(cost, dict) else cost[0]).get("flops", 0.0))
    candidate = _Candidate(flops=flops, temp_mib=_temp_mib(compiled),
                           note=f"compiled in {time.perf_counter() - start:.0f} s")
    holder, metrics = {"state": state}, zero_metrics()

    def run():  # the state is donated: carry it forward
        holder["state"], out = compiled(holder["state"], data, metrics)
        return holder["state"], out.loss

    candidate.call = run
    rows.stage(f"{candidate.note}; one step")
    _one_call(candidate)
    if candidate.error is None and candidate.single_s is not None and candidate.single_s <= seconds:
        repeats = int(max(min(3, max_repeats), min(max_repeats, seconds // candidate.single_s)))
        rows.stage(f"{repeats} timed steps")
        step_s, note = time_alternating({"step": run}, repeats=repeats)["step"], f"median of {repeats}"
    else:
        step_s, note = candidate.single_s, "1 call"
    reference = EDM_IMAGES_PER_S if spec["config"] == "cifar10" and spec["precision"] == "float32" else None
    images = None if step_s is None else config.batch_size / step_s
    precision_note = {None: "network products at JAX's DEFAULT precision", "highest": "network products at HIGHEST"}
    variant = f"train {spec['precision']}" + (f" {matmul}" if matmul else "")
    _record(rows, variant, candidate, step_s, f"{note}; {precision_note.get(matmul, matmul)}",
            images_per_s=images, edm_images_per_s=reference)


def _worker(group: str, spec: dict, rows_path: str, seconds: float, max_repeats: int) -> None:
    sys.path.insert(0, str(ROOT))
    import jax

    rows = _Rows(rows_path, group)
    device = jax.devices()[0]
    rows.write(meta={"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
                     "devices": jax.device_count()})
    _log(f"{group}: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    try:
        if spec["kind"] == "train":
            _train_group(spec, rows, seconds, max_repeats)
        else:
            _kernel_group(spec, rows, seconds, max_repeats)
    except Exception as error:  # setup failed (data, model, compile): one row says so
        rows.write(variant="(group)", note=f"error: {_short(error)}", peak_mib=_peak_mib())
        _log(f"{group}: error: {_short(error)}")


# -- driver side (no jax: the device stays free for the workers) ---------------------------------------------


def _read_rows(path: Path) -> tuple[dict, list[dict], str]:
    """The worker's meta record, its rows (the last record of each variant) and the last stage it began."""
    meta: dict = {}
    rows: dict[str, dict] = {}
    stage = ""
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if "meta" in record:
            meta = record["meta"]
        elif "stage" in record:
            stage = record["stage"]
        else:
            rows[record["variant"]] = record
    return meta, list(rows.values()), stage


def _add_ratios(rows: list[dict]) -> None:
    """`vs_f32` (TFLOP/s over the F32 matmul's) and `vs_xla` (the xla row's time over the row's), per group."""
    for group in {row["group"] for row in rows}:
        mine = {row["variant"]: row for row in rows if row["group"] == group}
        f32, xla = mine.get(MATMUL_F32, {}).get("tflops"), mine.get("xla", {}).get("ms")
        for row in mine.values():
            if row.get("tflops") and f32 and not row["variant"].startswith("train"):
                row["vs_f32"] = row["tflops"] / f32
            if row.get("ms") and xla and row["variant"] in ("xla", "pallas"):
                row["vs_xla"] = xla / row["ms"]


def _cell(value, digits: int = 3) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value).replace("|", "/")


def _markdown(meta: dict, rows: list[dict], mode: str, budget: float) -> str:
    keys = ("group", "shape", "variant", "ms", "tflops", "vs_f32", "vs_xla", "images_per_s", "edm_images_per_s",
            "temp_mib", "peak_mib", "note")
    device = f"{meta.get('device', '?')} ({meta.get('platform', '?')}, {meta.get('devices', '?')} device(s))"
    lines = [f"Device benchmark ({mode}): {device}, jax {meta.get('jax', '?')}, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{time.time() - _START:.0f} s of a {budget:.0f} s budget",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in keys) + " |")
    lines += ["", "FLOPs: delta 2 B N (D + D); GMM 4 B K D (r + 1); ELS 2 B P N Q (K + C); train: XLA's count. "
              "EDM img/s: NVlabs/edm, 8xV100 float32, per GPU (bench/device.py). Targets (issue 24): the fused "
              "delta kernel >= 0.8 of the matmul at equal precision, >= 1.5x the XLA path for D <= 784."]
    return "\n".join(lines)


def _write(out: Path | None, meta: dict, rows: list[dict], mode: str, budget: float) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "device.json").write_text(json.dumps({"meta": meta, "mode": mode, "rows": rows}, indent=1))
    (out / "device.md").write_text(_markdown(meta, rows, mode, budget) + "\n")


def _run_group(name: str, spec: dict, timeout: float, args, workdir: Path) -> tuple[dict, list[dict]]:
    """Run one group's worker under `timeout`; its rows, with a row saying how it ended if not cleanly."""
    rows_path = workdir / f"{name}.jsonl"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec),
               "--rows", str(rows_path), "--seconds", str(args.seconds), "--max-repeats", str(args.max_repeats),
               "--started", repr(_START)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    _log(f"{name}: start, at most {timeout:.0f} s")
    status = None
    try:
        code = subprocess.run(command, env=env, cwd=ROOT, timeout=timeout, stdout=sys.stderr).returncode
        if code:
            status = f"worker exited with {code}" if code > 0 else f"worker killed by signal {-code}"
    except subprocess.TimeoutExpired:
        status = f"stopped after {timeout:.0f} s (its time limit)"
    meta, rows, stage = _read_rows(rows_path)
    if status:
        status += f", in: {stage}" if stage else ""
        rows.append({"group": name, "shape": rows[0]["shape"] if rows else "", "variant": "(group)", "note": status})
    _log(f"{name}: {status or 'done'}")
    return meta, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write device.md and device.json here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 repeats (a smoke run; CPU too)")
    parser.add_argument("--groups", default=None, help="comma-separated (default: all but train-float32-highest); "
                        "full: " + ", ".join(FULL_GROUPS) + "; quick: " + ", ".join(QUICK_GROUPS))
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (420; quick 110)")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per group (4; quick 0.3)")
    parser.add_argument("--max-repeats", type=int, default=None, help="most repeats (15; quick 3)")
    for hidden in ("--worker", "--spec", "--rows", "--started"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    args.seconds = args.seconds or (0.3 if args.quick else 4.0)
    args.max_repeats = args.max_repeats or (3 if args.quick else 15)
    if args.worker:
        global _START
        _START = float(args.started)
        _worker(args.worker, json.loads(args.spec), args.rows, args.seconds, args.max_repeats)
        return
    table = QUICK_GROUPS if args.quick else FULL_GROUPS
    default = [name for name, spec in table.items() if "matmul_precision" not in spec]  # those only when named
    names = args.groups.split(",") if args.groups else default
    unknown = [name for name in names if name not in table]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)} for a {mode} run; known: {', '.join(table)}")
    budget = args.budget or (110.0 if args.quick else 420.0)
    limits = [LIMITS[mode]["train" if table[name]["kind"] == "train" else "kernel"] for name in names]
    meta: dict = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir:
        for index, name in enumerate(names):
            cap, least = limits[index]
            timeout = min(cap, budget - (time.time() - _START) - sum(m for _, m in limits[index + 1:]))
            if timeout < least:
                rows.append({"group": name, "variant": "(group)", "note": f"skipped: {timeout:.0f} s left for it"})
                _log(f"{name}: skipped")
                continue
            group_meta, group_rows = _run_group(name, table[name], timeout, args, Path(workdir))
            meta = meta or group_meta
            rows += group_rows
            _add_ratios(rows)
            _write(args.out, meta, rows, mode, budget)
    print(_markdown(meta, rows, mode, budget), flush=True)


if __name__ == "__main__":
    main()
