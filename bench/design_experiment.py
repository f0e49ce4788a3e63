"""The paper's Sec. 8 design experiment (issue 25): plain training against each design option and all three.

    PYTHONPATH=. python3 bench/design_experiment.py --out DIR                 # 5 variants x 3 seeds, digits
    PYTHONPATH=. python3 bench/design_experiment.py --out DIR --seeds 0 --steps 40 --config digits-tiny \
        --sigmas 0.05,0.5,5                                                    # a smoke run, minutes

Trains, with `python -m train --config CONFIG` (the named recipe, unchanged apart from the option), one run
per variant and seed:

    plain       no option
    bypass      --bypass
    whiten      --whiten EPS          (default EPS 0.01)
    warm        --warm-start SIGMA    (default 1.92: `auto_sigma_skip`'s sigma_skip for a short plain run,
                                       `python -m analysis teleport --run RUN --step 342` on plain seed 0)
    all         --bypass --whiten EPS --warm-start SIGMA

`--parallel` runs at a time (each its own process; on one GPU they share it), then compares them with
`python -m analysis compare-runs`: first the plain runs alone (`DIR/compare_plain/`), whose median final FD
is the target, then every run with `--target-fd` that median (`DIR/compare/`, plain seed 0 first; the
feature net trained by the first pass is reused). Run directories are `DIR/runs/<variant>-s<seed>`, logs
`DIR/logs/`. A run whose directory already holds its final checkpoint is not started again (an unfinished
one resumes, as `python -m train` does). Prints the command lines and `compare-runs`' summaries; exits
non-zero if a training or a comparison failed (naming it).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from analysis.teleport import FEATURE_NET
from train.configs import get_config

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "bypass", "whiten", "warm", "all")


def variant_options(variant: str, whiten: float, warm_start: float) -> list[str]:
    """The `python -m train` options of a variant."""
    options = {
        "plain": [],
        "bypass": ["--bypass"],
        "whiten": ["--whiten", str(whiten)],
        "warm": ["--warm-start", str(warm_start)],
        "all": ["--bypass", "--whiten", str(whiten), "--warm-start", str(warm_start)],
    }
    return options[variant]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train_all(jobs: list[tuple[str, list[str]]], logs: Path, parallel: int) -> list[str]:
    """Run the `(name, command)` jobs, `parallel` at a time; the names of those that failed."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=str(ROOT))
    pending, running, failed = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            name, command = pending.pop(0)
            log(f"start {name}: {' '.join(command)}")
            with open(logs / f"{name}.log", "w") as out:
                running[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                log(f"done {name}: exit {process.returncode}")
                if process.returncode != 0:
                    failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--config", default="digits", help="the training config (default digits)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per variant (default 0 1 2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--whiten", type=float, default=0.01, help="EPS of --whiten (default 0.01)")
    parser.add_argument("--warm-start", type=float, default=1.92, help="SIGMA of --warm-start (default 1.92)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--parallel", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="trainings at a time (default: CPU cores - 1)")
    parser.add_argument("--analytic-models", type=Path, default=None,
                        help="an analytic_models.npz of a run of the same config, copied into every run directory "
                             "(python -m train then reuses it instead of fitting the probes' models again)")
    parser.add_argument("--num-samples", type=int, default=256, help="compare-runs --num-samples (default 256)")
    parser.add_argument("--sigmas", default="0.2,1.21,4",
                        help="compare-runs --sigmas: the probe levels of the FUV metrics (default 0.2,1.21,4)")
    args = parser.parse_args(argv)
    if "plain" not in args.variants:
        parser.error("--variants must include plain (the reference)")
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)

    final = args.steps if args.steps is not None else get_config(args.config).steps
    names, jobs = [], []
    for seed in args.seeds:  # seed-major: a cut-short experiment has whole seeds of every variant
        for variant in args.variants:
            name = f"{variant}-s{seed}"
            names.append(name)
            if (args.out / "runs" / name / "checkpoints" / str(final)).is_dir():
                continue  # trained
            if args.analytic_models is not None and not (args.out / "runs" / name / "analytic_models.npz").exists():
                (args.out / "runs" / name).mkdir(exist_ok=True)
                shutil.copyfile(args.analytic_models, args.out / "runs" / name / "analytic_models.npz")
            command = [sys.executable, "-m", "train", "--config", args.config, "--seed", str(seed), "--no-progress",
                       "--out", str(args.out / "runs" / name), *variant_options(variant, args.whiten, args.warm_start)]
            if args.steps is not None:
                command += ["--steps", str(args.steps)]
            jobs.append((name, command))
    start = time.perf_counter()
    failed = train_all(jobs, args.out / "logs", args.parallel)
    log(f"trained {len(jobs) - len(failed)} of {len(jobs)} runs in {time.perf_counter() - start:.0f} s")
    if failed:
        for name in failed:
            tail = (args.out / "logs" / f"{name}.log").read_text().splitlines()[-5:]
            print(f"error: training {name} failed:\n  " + "\n  ".join(tail), file=sys.stderr)
        return 1
    plain = [name for name in names if name.startswith("plain-")]
    code = compare(args, plain, args.out / "compare_plain")
    if code != 0:
        return code
    with open(args.out / "compare_plain" / "compare_runs_summary.csv", newline="") as file:
        target = float(np.median([float(row["final_fd"]) for row in csv.DictReader(file)]))
    log(f"target FD: the median final FD of the plain runs, {target:.4g}")
    feature_net = args.out / "compare" / FEATURE_NET
    if not feature_net.exists():
        shutil.copytree(args.out / "compare_plain" / FEATURE_NET, feature_net)
    return compare(args, names, args.out / "compare", "--target-fd", repr(target))


def compare(args: argparse.Namespace, names: list[str], out: Path, *options: str) -> int:
    """`python -m analysis compare-runs` of the runs `names` (labelled by variant) into `out`; its exit status."""
    labels = ",".join(name.rsplit("-s", 1)[0] for name in names)
    command = [sys.executable, "-m", "analysis", "compare-runs", *(str(args.out / "runs" / n) for n in names),
               "--label", labels, "--num-samples", str(args.num_samples), "--sigmas", args.sigmas, "--out", str(out),
               *options]
    log(f"compare: {' '.join(command)}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log(f"compare-runs exit {done.returncode} in {time.perf_counter() - start:.0f} s")
    if done.returncode != 0:
        print(f"error: compare-runs into {out} failed (exit {done.returncode})", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
