"""`python -m analysis score-agreement` at the paper's CIFAR-10 size: wall time and peak memory, per stage.

    python bench/cifar_scale.py                     # build the inputs in a temporary directory, measure both
    python bench/cifar_scale.py --work /tmp/cifar   # keep (and reuse) the inputs there
    python bench/cifar_scale.py --work /tmp/cifar --only stages   # or --only cli

Issue 23, item 4. The inputs are built here, without torch or downloads:

- `cifar.zip`: 50,000 32x32x3 PNGs in NVlabs/edm's `dataset_tool.py` layout (`00000/img00000000.png`, ...,
  stored uncompressed) with 10 class labels in `dataset.json`; the images are a low-rank Gaussian (64 smooth
  directions with a power-law spectrum, a mean per class) plus pixel noise, rounded to uint8, so the
  covariance spectrum and the clusters are those of natural images in kind;
- `ddpmpp.safetensors`: EDM's CIFAR-10 config F network (`SongUNet`, DDPM++: model_channels 128, channel_mult
  (2, 2, 2), 4 blocks, attention at 16, dropout 0.13, augment_dim 9; 55.7M parameters) in `EDMPrecond`,
  with its random initial weights, written by `gaussjax.nn.save_safetensors`.

Then two measurements, each in a fresh process:

- `cli`: the command itself, `python -m analysis score-agreement --network ddpmpp.safetensors --dataset edm-zip
  --data-dir cifar.zip --num-queries 16`: wall time and peak resident memory (`os.wait4`'s `ru_maxrss`);
- `stages`: the same work in the same order, one stage at a time, under a tracer of wall time and peak
  resident memory (the kernel's high-water mark, reset at each stage's start through `/proc/self/clear_refs`):
  loading the data, the network, each reference model (`fit_references` one name at a time: isotropic,
  gaussian, gmm5, gmm10, gmm-class, delta), and per query set the candidates' outputs and the network's.

The issue's targets for the command: <= 240 s and <= 4 GiB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

NUM_IMAGES, RESOLUTION, CHANNELS, NUM_CLASSES = 50_000, 32, 3, 10
RANK, NOISE = 64, 6.0  # low-rank directions; pixel noise (uint8 units)
NUM_QUERIES = 16
CONFIG_F = {  # NVlabs/edm train.py --arch=ddpmpp (CIFAR-10 config F), augment_dim 9 from --augment 0.12
    "img_resolution": RESOLUTION, "in_channels": CHANNELS, "out_channels": CHANNELS, "augment_dim": 9,
    "model_channels": 128, "channel_mult": (2, 2, 2), "num_blocks": 4, "attn_resolutions": (16,),
    "dropout": 0.13, "embedding_type": "positional", "encoder_type": "standard", "decoder_type": "standard",
    "channel_mult_noise": 1, "resample_filter": (1, 1),
}
GIB = 2**30
ROOT = Path(__file__).resolve().parent.parent  # the repository (`analysis` is imported from it)


# -- inputs --------------------------------------------------------------------------------------------------


def smooth_basis(rng: np.random.Generator, rank: int) -> np.ndarray:
    """`(rank, D)` orthonormal directions of smooth images (random 8x8 fields, upsampled bilinearly)."""
    coarse = rng.standard_normal((rank, 8, 8, CHANNELS))
    grid = (np.arange(RESOLUTION) + 0.5) / RESOLUTION * 8 - 0.5
    low = np.clip(np.floor(grid).astype(int), 0, 7)
    high = np.clip(low + 1, 0, 7)
    frac = np.clip(grid - low, 0, 1)
    rows = coarse[:, low] * (1 - frac)[None, :, None, None] + coarse[:, high] * frac[None, :, None, None]
    fine = rows[:, :, low] * (1 - frac)[None, None, :, None] + rows[:, :, high] * frac[None, None, :, None]
    basis, _ = np.linalg.qr(fine.reshape(rank, -1).T)
    return basis.T


def make_images(num: int, seed: int = 0, chunk: int = 5000):
    """Yield `(uint8 images (n, 32, 32, 3), labels (n,))` chunks of a low-rank-plus-noise image distribution."""
    rng = np.random.default_rng(seed)
    basis = smooth_basis(rng, RANK)  # (RANK, D)
    scales = 2000.0 * np.arange(1, RANK + 1) ** -0.75  # standard deviations (uint8 units): pixel std ~ 55
    class_means = 127.5 + 300.0 * rng.standard_normal((NUM_CLASSES, RANK)) @ basis
    for start in range(0, num, chunk):
        n = min(chunk, num - start)
        labels = rng.integers(0, NUM_CLASSES, n)
        coefficients = rng.standard_normal((n, RANK)) * scales
        flat = class_means[labels] + coefficients @ basis + NOISE * rng.standard_normal((n, basis.shape[1]))
        yield np.clip(np.rint(flat), 0, 255).astype(np.uint8).reshape(n, RESOLUTION, RESOLUTION, CHANNELS), labels


def write_dataset_zip(path: Path, num: int) -> None:
    """EDM's `dataset_tool.py` layout: `{i // 1000:05d}/img{i:08d}.png`, stored, and `dataset.json` labels."""
    from PIL import Image

    temporary = path.with_suffix(".tmp")
    labels, index = [], 0
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
        for images, classes in make_images(num):
            for image, label in zip(images, classes, strict=True):
                name = f"{index // 1000:05d}/img{index:08d}.png"
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="png", compress_level=0, optimize=False)
                archive.writestr(name, buffer.getvalue())
                labels.append([name, int(label)])
                index += 1
        archive.writestr("dataset.json", json.dumps({"labels": labels}))
    temporary.replace(path)


def write_network(path: Path) -> int:
    """Config F in `EDMPrecond`, randomly initialised (EDM's initialization), saved as safetensors; its size."""
    import jax
    import jax.numpy as jnp

    from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet, save_safetensors

    module = EDMPrecond(SongUNet(**CONFIG_F))
    shape = (1, RESOLUTION, RESOLUTION, CHANNELS)
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros(shape), jnp.ones((1,)))
    save_safetensors(path, NeuralDenoiser(module, params))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def build_inputs(work: Path, num_images: int) -> tuple[Path, Path]:
    """`(zip, network)` in `work`, each built only if missing (a run that reuses `--work` skips it)."""
    zip_path, network = work / "cifar.zip", work / "ddpmpp.safetensors"
    if not zip_path.exists():
        start = time.perf_counter()
        write_dataset_zip(zip_path, num_images)
        print(f"built {zip_path} ({num_images} images, {zip_path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    if not network.exists():
        start = time.perf_counter()
        count = write_network(network)
        print(f"built {network} ({count / 1e6:.2f}M parameters) in {time.perf_counter() - start:.0f} s", flush=True)
    return zip_path, network


# -- measurements --------------------------------------------------------------------------------------------


def run_measured(command: list[str], *, stream: bool = False) -> tuple[float, float, int, str]:
    """`(seconds, peak GiB, exit code, output)` of a child process (peak: its `ru_maxrss` from `wait4`).

    With `stream`, its output goes to this process's as it comes (and `output` is empty).
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        child = subprocess.Popen(command, stdout=None if stream else output, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
    return seconds, usage.ru_maxrss * 1024 / GIB, child.returncode, text


def cli_command(zip_path: Path, network: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "analysis", "score-agreement", "--network", str(network), "--dataset", "edm-zip",
            "--data-dir", str(zip_path), "--num-queries", str(NUM_QUERIES), "--out", str(out)]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class Tracer:
    """Wall time and peak resident memory of each stage (`with tracer("name"): ...`), printed as it ends."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        import jax

        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak below is this stage's
        start = time.perf_counter()
        held: list = []
        yield held
        jax.block_until_ready(held)
        seconds = time.perf_counter() - start
        row = (name, seconds, _status_kib("VmHWM") / 2**20, _status_kib("VmRSS") / 2**20)
        self.rows.append(row)
        print(f"  {name:<28} {seconds:8.1f} s   peak {row[2]:6.2f} GiB   after {row[3]:6.2f} GiB", flush=True)


def stages(zip_path: Path, network: Path) -> None:
    """`score-agreement`'s work, stage by stage, as `analysis.score_agreement.run` does it (its defaults)."""
    import argparse as _argparse

    import jax

    from analysis import score_agreement
    from analysis._common import references, sigma_grid
    from analysis.context import AnalysisContext, load_network_file
    from gaussjax.data import load_dataset
    from gaussjax.evaluation import make_score_probe
    tracer = Tracer()
    print(f"  {'(imports)':<28} {'':>8}     peak {_status_kib('VmHWM') / 2**20:6.2f} GiB", flush=True)
    total = time.perf_counter()
    with tracer("load dataset"):
        train = load_dataset("edm-zip", root=zip_path, split="train")
    context = AnalysisContext(None, train, None, None, None, "ema", Path("."), 0, NUM_QUERIES)
    parser = _argparse.ArgumentParser()
    score_agreement.add_arguments(parser)
    args = parser.parse_args([])
    with tracer("validate"):
        score_agreement.validate(context, args)
    with tracer("load network") as held:
        net = load_network_file(network).with_conv_impl("xla")  # as `score_agreement.run`
        held.append(net.params)
    models = {}
    for name in score_agreement.model_names(context, args):
        with tracer(f"fit {name}") as held:
            models.update(references(context, [name]))
            held.append(models[name])
    sigmas = sigma_grid(args.num_sigmas, args.sigma_min, args.sigma_max)
    for name, distribution in score_agreement.query_sets(context, args.query_sets).items():
        key = jax.random.fold_in(context.key("queries"), score_agreement.QUERY_SETS.index(name))
        with tracer(f"{name}: models' outputs") as held:
            probe = make_score_probe(models, distribution, sigmas, key=key, num_queries=NUM_QUERIES)
            held.append(probe.candidate_outputs)
        with tracer(f"{name}: network vs models"):
            probe(net)
    print(f"  {'total':<28} {time.perf_counter() - total:8.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="where the inputs are built (default: a temp dir)")
    parser.add_argument("--num-images", type=int, default=NUM_IMAGES, help=f"images (default {NUM_IMAGES})")
    parser.add_argument("--only", choices=("cli", "stages", "build"), default=None, help="one measurement only")
    parser.add_argument("--stages-of", type=Path, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages_of is not None:  # the child process of the `stages` measurement
        sys.path.insert(0, str(ROOT))
        stages(*args.stages_of)
        return
    with contextlib.ExitStack() as stack:
        temporary = None if args.work else stack.enter_context(tempfile.TemporaryDirectory(prefix="cifar_scale_"))
        work = Path(temporary) if temporary else args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        zip_path, network = build_inputs(work, args.num_images)
        if args.only in (None, "cli"):
            print("score-agreement command:", " ".join(cli_command(zip_path, network, work / "out")), flush=True)
            seconds, peak, code, text = run_measured(cli_command(zip_path, network, work / "out"))
            print(text[-3000:] if code else "\n".join(text.splitlines()[-6:]))
            print(f"command: {seconds:.1f} s, peak RSS {peak:.2f} GiB, exit {code}", flush=True)
        if args.only in (None, "stages"):
            print("stages (a fresh process):", flush=True)
            seconds, peak, code, _ = run_measured(
                [sys.executable, __file__, "--stages-of", str(zip_path), str(network)], stream=True)
            print(f"stages: {seconds:.1f} s, peak RSS {peak:.2f} GiB, exit {code}", flush=True)


if __name__ == "__main__":
    main()
