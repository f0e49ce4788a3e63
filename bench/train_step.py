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
  steps; `unrolled` = the same loop unrolled;
- `XLA flags`: the default, and YNNPACK fusions off (`--xla_cpu_experimental_ynn_fusion_type=`,
  XLA:CPU's Eigen kernels instead; `python -m train` sets this).

Networks, each built from a `train.configs` config (architecture and dropout exactly as that
config trains it): `digits-715k`, the `digits` config's network (715,201 parameters: the size
of the PyTorch/EDM reference in the task) at batch 256; `mnist`, the `mnist` config's (the
paper's mini-EDM net, 32x32x1, 1,000,801 parameters) at its batch 128; `digits`, the `digits`
config at its own batch size (what `python -m train` runs by default).

    python bench/train_step.py                          # all networks and variants (~40 min: xla/scan is slow)
    python bench/train_step.py --networks digits --variants xla/loop --flags ynn-off
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> the config whose network is timed, its image shape, the batch (None: the config's own), and
# `pytorch`: images/s of NVlabs/edm on "this machine class" as quoted in the task (measured on a 2-core
# machine, the same PyTorch code gives less: see docs/training.md, "Performance notes").
NETWORKS = {
    "digits-715k": {"config": "digits", "image_shape": (8, 8, 1), "batch": 256, "pytorch": 1900.0},
    "mnist": {"config": "mnist", "image_shape": (32, 32, 1), "batch": None, "pytorch": 240.0},
    "digits": {"config": "digits", "image_shape": (8, 8, 1), "batch": None, "pytorch": None},
}
VARIANTS = ("xla/loop", "matmul/loop", "xla/scan", "matmul/scan", "xla/unrolled", "matmul/unrolled")
FLAG_SETTINGS = {"default": "", "ynn-off": "--xla_cpu_experimental_ynn_fusion_type="}


def _worker(network: str, variants: list[str], steps: int, repeats: int) -> None:
    """Time the variants of one network under this process's XLA_FLAGS; print JSON lines."""
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bench._timing import time_alternating
    from gaussjax.nn import EDMPrecond, SongUNet
    from train.configs import get_config
    from train.step import init_state, make_optimizer, make_train_loop, make_train_step, zero_metrics

    spec = NETWORKS[network]
    config = get_config(spec["config"])
    if spec["batch"] is not None:
        config = config.replace(batch_size=spec["batch"])
    shape = spec["image_shape"]
    kwargs = config.network.for_images(shape).kwargs()  # exactly the network `python -m train` trains
    data = jax.random.uniform(jax.random.key(1), (2048, *shape), minval=-1, maxval=1)
    optimizer = make_optimizer(config)

    functions, info = {}, {}
    for variant in variants:
        conv_impl, dispatch = variant.split("/")
        precond = EDMPrecond(SongUNet(**kwargs, conv_impl=conv_impl), sigma_data=config.sigma_data)
        state = init_state(config, precond, shape, optimizer)
        info["parameters"] = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
        step = make_train_step(config, precond, optimizer, None)
        cost = jax.jit(step).lower(state, data, zero_metrics()).compile().cost_analysis()
        info["flops"] = (cost if isinstance(cost, dict) else cost[0])["flops"]  # of one step
        if dispatch == "loop":
            loop, holder = make_train_loop(config, precond, optimizer, None), {"state": state}

            def run(loop=loop, holder=holder):  # the state is donated: carry it forward
                holder["state"], metrics = loop(holder["state"], data, steps)
                return metrics.loss
        else:
            many = jax.jit(lambda s, step=step, unroll=dispatch == "unrolled": jax.lax.fori_loop(
                0, steps, lambda _, c: step(c[0], data, c[1]), (s, zero_metrics()), unroll=unroll)[1].loss)
            run = lambda many=many, state=state: many(state)  # noqa: E731
        functions[variant] = run

    a = jax.random.normal(jax.random.key(3), (4096, 1024))
    b = jax.random.normal(jax.random.key(4), (1024, 1024))
    matmul = jax.jit(jnp.matmul)
    functions["matmul"] = lambda: matmul(a, b)
    times = time_alternating(functions, repeats=repeats)
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.variants.split(","), args.steps, args.repeats)
        return

    rows = []
    for network in args.networks.split(","):
        for flag_name in args.flags.split(","):
            env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FLAG_SETTINGS[flag_name]).strip())
            command = [sys.executable, __file__, "--worker", network, "--variants", args.variants,
                       "--steps", str(args.steps), "--repeats", str(args.repeats)]
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
        pytorch = NETWORKS[network]["pytorch"]
        for r in mine:
            versus = f"{r['images_per_s'] / pytorch:>9.2f}x" if pytorch else f"{'':>10}"
            print(f"{network:<12} {r['parameters']:>9,} {r['batch']:>5} {r['flags']:<9} {r['variant']:<16} "
                  f"{r['images_per_s']:>9.1f} {r['images_per_s'] / mine[0]['images_per_s']:>7.2f}x {versus} "
                  f"{r['flops_per_s'] / 1e9:>8.1f} {r['flops_per_s'] / r['matmul_flops_per_s']:>8.0%}")
        reference = f"; PyTorch/EDM reference {pytorch:.0f} images/s" if pytorch else ""
        print(f"{'':<12} the `{NETWORKS[network]['config']}` config's network; "
              f"{mine[0]['gflop_per_image']:.3f} GFLOP per image and step; float32 matmul "
              f"{mine[0]['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s{reference}")


if __name__ == "__main__":
    main()
