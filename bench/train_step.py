"""CPU training throughput of the EDM train step (`train.step.make_train_step`: loss, gradients, Adam, EMA).

One run prints one table. Each XLA flag setting runs in its own subprocess (XLA reads
`XLA_FLAGS` once per process); inside a process the variants run in alternation
(`bench._timing.time_alternating`, medians), and the achieved FLOP/s (XLA cost analysis
of one step) is set against a float32 matmul timed in the same alternation.

Variants, each doing K optimizer steps per timed call:
- `conv`: the 3x3 convolutions as `lax.conv_general_dilated` ('xla') or im2col + one
  product ('matmul'): `SongUNet(conv_impl=...)`;
- `dispatch`: `loop` = K jitted one-step calls (what `python -m train` does,
  `train.step.make_train_loop`); `scan` = one call of a rolled `lax.fori_loop` over K
  steps; `unrolled` = the same loop unrolled. Every variant returns the final state (and
  donates the previous one), so none can skip work a trainer needs (the last step's Adam
  update, the EMA) as dead code;
- `precision`: float32, or a trailing `/bf16` (`TrainConfig(precision="bf16")`: bfloat16
  activations on float32 weights, loss, Adam and EMA), e.g. `xla/loop/bf16`;
- `XLA flags`: the default; YNNPACK fusions off (`ynn-off`: `--xla_cpu_experimental_ynn_fusion_type=`,
  XLA:CPU's Eigen kernels instead; `python -m train` sets this); `2dev`: also two CPU devices
  with single-threaded kernels, the batch split over them (`--xla_force_host_platform_device_count=2
  --xla_cpu_multi_thread_eigen=false`); `tcmalloc`: ynn-off with gperftools' tcmalloc preloaded
  (`LD_PRELOAD`), whose allocator keeps freed pages where glibc's returns XLA's per-call
  buffers to the kernel (about 40,000 page faults per digits step at batch 256).

Networks, each built from a `train.configs` config (architecture and dropout exactly as that
config trains it): `digits-715k`, the `digits` config's network (715,201 parameters) at batch
256; `mnist`, the `mnist` config's (the paper's mini-EDM net, 32x32x1, 1,000,801 parameters) at
its batch 128; `digits`, the `digits` config at its own batch size (what `python -m train`
runs by default).

The PyTorch baseline runs in the same alternation: with `--torch-python PYTHON --edm-src EDM`
(a Python with torch, and a checkout of NVlabs/edm), each worker also starts
`bench/_edm_torch_step.py`, EDM's own `EDMPrecond(SongUNet)`, `EDMLoss` and Adam step with the
same network arguments and batch, and times it as one more variant (`pytorch/edm`); the
`vs PyTorch` column is the ratio to it. Without them there is no PyTorch column: no reference
numbers are hard-coded (they would belong to another machine).

    python bench/train_step.py --networks digits-715k,mnist --variants xla/loop,xla/unrolled,xla/loop/bf16 \
        --flags ynn-off,2dev \
        --torch-python /work/torchref/.venv/bin/python --edm-src /work/torchref/edm
    python bench/train_step.py                          # all networks and variants (~40 min: xla/scan is slow)
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> the config whose network is timed, its image shape, and the batch (None: the config's own)
NETWORKS = {
    "digits-715k": {"config": "digits", "image_shape": (8, 8, 1), "batch": 256},
    "mnist": {"config": "mnist", "image_shape": (32, 32, 1), "batch": None},
    "digits": {"config": "digits", "image_shape": (8, 8, 1), "batch": None},
}
TORCH_VARIANT = "pytorch/edm"
VARIANTS = ("xla/loop", "matmul/loop", "xla/scan", "matmul/scan", "xla/unrolled", "matmul/unrolled")
# a variant may end in "/bf16": the same with `TrainConfig(precision="bf16")` (e.g. "xla/loop/bf16")
FLAG_SETTINGS = {
    "default": "",
    "ynn-off": "--xla_cpu_experimental_ynn_fusion_type=",
    # one CPU device per core, each running its ops on one thread; the batch split over them
    "2dev": "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=2 "
            "--xla_cpu_multi_thread_eigen=false",
    # ynn-off with gperftools' tcmalloc preloaded (LD_PRELOAD) instead of glibc's malloc
    "tcmalloc": "--xla_cpu_experimental_ynn_fusion_type=",
}
PRELOADS = {"tcmalloc": "tcmalloc_minimal"}  # setting -> library preloaded in its worker (ctypes.util.find_library)


def _edm_step(torch_python: str, edm_src: str, kwargs: dict, shape, batch: int, steps: int, lr: float):
    """A call that runs `steps` of EDM's PyTorch train step in a companion process and waits for it."""
    command = [torch_python, str(ROOT / "bench" / "_edm_torch_step.py"), "--edm-src", edm_src,
               "--network", json.dumps(kwargs), "--image-shape", ",".join(map(str, shape)), "--batch", str(batch),
               "--steps", str(steps), "--lr", str(lr)]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # the stock PyTorch step, whatever the setting
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    info = json.loads(process.stdout.readline())

    def run():
        process.stdin.write("run\n")
        process.stdin.flush()
        return float(process.stdout.readline())

    return run, info, process


def _worker(network: str, variants: list[str], steps: int, repeats: int, torch_python=None, edm_src=None) -> None:
    """Time the variants of one network under this process's XLA_FLAGS; print JSON lines."""
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from bench._timing import time_alternating
    from gaussjax.nn import EDMPrecond, SongUNet
    from train.batches import make_mesh
    from train.configs import get_config
    from train.step import init_state, make_optimizer, make_train_loop, make_train_step, replicate, zero_metrics

    spec = NETWORKS[network]
    config = get_config(spec["config"])
    if spec["batch"] is not None:
        config = config.replace(batch_size=spec["batch"])
    shape = spec["image_shape"]
    kwargs = config.network.for_images(shape).kwargs()  # exactly the network `python -m train` trains
    data = jax.random.uniform(jax.random.key(1), (config.batch_size, *shape), minval=-1, maxval=1)  # one batch
    optimizer = make_optimizer(config)
    mesh = make_mesh()  # as `python -m train`: data parallel over all devices, the batch split over them
    if mesh is not None:
        data = jax.device_put(data, NamedSharding(mesh, PartitionSpec("data")))

    functions, info = {}, {}
    for variant in variants:
        conv_impl, dispatch, *precision = variant.split("/")
        config = config.replace(precision=precision[0] if precision else "float32")
        precond = EDMPrecond(SongUNet(**kwargs, conv_impl=conv_impl), sigma_data=config.sigma_data)
        state = init_state(config, precond, shape, optimizer)
        if mesh is not None:  # as `python -m train`: replicated on every device
            state = replicate(state, mesh)
        info["parameters"] = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
        step = make_train_step(config, precond, optimizer, mesh)
        cost = jax.jit(step).lower(state, data, zero_metrics()).compile().cost_analysis()
        info["flops"] = (cost if isinstance(cost, dict) else cost[0])["flops"]  # of one step
        if dispatch == "loop":
            loop = make_train_loop(config, precond, optimizer, mesh)
        else:  # one compiled call of `steps` steps that returns the final state, as a trainer would use it
            loop = jax.jit(lambda s, d, num_steps, step=step, unroll=dispatch == "unrolled": jax.lax.fori_loop(
                0, num_steps, lambda _, c: step(c[0], d, c[1]), (s, zero_metrics()), unroll=unroll),
                static_argnums=2, donate_argnums=0)

        holder = {"state": state}

        def run(loop=loop, holder=holder, dispatch=dispatch):  # the state is donated: carry it forward
            if dispatch == "loop":  # `train.step.make_train_loop`: one step per batch given
                holder["state"], metrics = loop(holder["state"], [data] * steps)
            else:
                holder["state"], metrics = loop(holder["state"], data, steps)
            return metrics.loss

        functions[variant] = run

    torch_process = None
    if torch_python:
        edm_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        functions[TORCH_VARIANT], torch_info, torch_process = _edm_step(
            torch_python, edm_src, edm_kwargs, shape, config.batch_size, steps, config.lr)
        if torch_info["parameters"] != info["parameters"]:
            raise RuntimeError(f"EDM's network has {torch_info['parameters']} parameters, gaussjax's "
                               f"{info['parameters']}")
        functions[TORCH_VARIANT]()  # warm up (first-call allocations)
    a = jax.random.normal(jax.random.key(3), (4096, 1024))
    b = jax.random.normal(jax.random.key(4), (1024, 1024))
    matmul = jax.jit(jnp.matmul)
    functions["matmul"] = lambda: matmul(a, b)
    times = time_alternating(functions, repeats=repeats)
    if torch_process is not None:
        torch_process.stdin.write("quit\n")
        torch_process.stdin.close()
        torch_process.wait()
    matmul_flops = 2 * 4096 * 1024 * 1024 / times.pop("matmul")
    for variant, seconds in times.items():
        print(json.dumps(dict(network=network, variant=variant, batch=config.batch_size,
                              images_per_s=steps * config.batch_size / seconds,
                              flops_per_s=steps * info["flops"] / seconds, matmul_flops_per_s=matmul_flops,
                              parameters=info["parameters"], gflop_per_image=info["flops"] / config.batch_size / 1e9)),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated: " + ", ".join(NETWORKS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--flags", default=",".join(FLAG_SETTINGS), help="comma-separated: " + ", ".join(FLAG_SETTINGS))
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per timed call (K)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-python", default=None, help="a Python with torch: time NVlabs/edm's step beside")
    parser.add_argument("--edm-src", default=None, help="NVlabs/edm checkout (with --torch-python)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if bool(args.torch_python) != bool(args.edm_src):
        parser.error("--torch-python and --edm-src go together")
    if args.worker:
        _worker(args.worker, args.variants.split(","), args.steps, args.repeats, args.torch_python, args.edm_src)
        return

    rows = []
    for network in args.networks.split(","):
        for flag_name in args.flags.split(","):
            env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FLAG_SETTINGS[flag_name]).strip())
            if flag_name in PRELOADS:
                library = ctypes.util.find_library(PRELOADS[flag_name])
                if library is None:
                    parser.error(f"--flags {flag_name}: lib{PRELOADS[flag_name]} is not installed "
                                 "(Debian: apt install libtcmalloc-minimal4)")
                env["LD_PRELOAD"] = library
            command = [sys.executable, __file__, "--worker", network, "--variants", args.variants,
                       "--steps", str(args.steps), "--repeats", str(args.repeats)]
            if args.torch_python:
                command += ["--torch-python", args.torch_python, "--edm-src", args.edm_src]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            rows += [dict(json.loads(line), flags=flag_name) for line in out.splitlines() if line.startswith("{")]
            print(f"... {network} / {flag_name} done", file=sys.stderr, flush=True)

    print(f"EDM train step (edm_loss + grad + Adam + EMA), float32, {args.steps} steps per timed call, "
          f"medians of {args.repeats}, {os.cpu_count()} CPU cores")
    header = (f"{'network':<12} {'params':>9} {'batch':>5} {'XLA flags':<9} {'variant':<16} {'images/s':>9} "
              f"{'vs first':>8} {'vs PyTorch':>10} {'GFLOP/s':>8} {'of matmul':>9}")
    print(header)
    print("-" * len(header))
    for network in args.networks.split(","):
        mine = [r for r in rows if r["network"] == network]
        for r in mine:
            torch_row = next((t for t in mine if t["flags"] == r["flags"] and t["variant"] == TORCH_VARIANT), None)
            versus = f"{r['images_per_s'] / torch_row['images_per_s']:>9.2f}x" if torch_row else f"{'':>10}"
            print(f"{network:<12} {r['parameters']:>9,} {r['batch']:>5} {r['flags']:<9} {r['variant']:<16} "
                  f"{r['images_per_s']:>9.1f} {r['images_per_s'] / mine[0]['images_per_s']:>7.2f}x {versus} "
                  f"{r['flops_per_s'] / 1e9:>8.1f} {r['flops_per_s'] / r['matmul_flops_per_s']:>8.0%}")
        print(f"{'':<12} the `{NETWORKS[network]['config']}` config's network; "
              f"{mine[0]['gflop_per_image']:.3f} GFLOP per image and step; float32 matmul "
              f"{mine[0]['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
