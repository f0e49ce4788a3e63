"""Loading an NVlabs/edm snapshot pickle: `gaussjax.nn.load_edm_pickle` vs `pickle.load` with torch and EDM's code.

    python bench/load_edm_pickle.py --pickle /tmp/edm-cifar10-size.pkl \
        [--torch-python /work/torchref/.venv/bin/python --edm-src /work/torchref/edm] [--repeats 5]

Issue 12's targets: the released CIFAR-10 network (56M parameters, ~220 MB) loads in
<= 10 s on 2 cores with peak memory <= 3x the file size. Make a file of that
configuration with random weights with `tests/nn/data/make_edm_pickles.py --cifar10-size`
(it needs torch and EDM's sources). Each trial runs in a fresh process (so peak memory
is the load's own): gaussjax's loader, then, when `--torch-python` is given, EDM's own
loading (torch + `pickle.load`, which runs the file's embedded code) alternately; the
table quotes medians and the ratio. Memory is the growth of the peak resident set
during the load (imports excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# Each snippet prints {"seconds": ..., "peak_mib": ...}: the load's time and peak RSS growth.
MEASURE = """
import json, resource, sys, time
{imports}
path = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
{load}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_mib": (peak - before) / 1024}}))
"""
GAUSSJAX = MEASURE.format(
    imports="import jax, numpy\nfrom gaussjax.nn import load_edm_pickle",
    load="net = load_edm_pickle(path)\njax.block_until_ready(net.params)",
)
TORCH = MEASURE.format(
    imports="import pickle, torch\nsys.path.insert(0, sys.argv[2])\nimport dnnlib, torch_utils, training.networks",
    load="net = pickle.load(open(path, 'rb'))['ema']",
)


def trial(python: str, code: str, *args: str) -> dict:
    result = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{python} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pickle", type=Path, required=True, help="an EDM snapshot pickle")
    parser.add_argument("--torch-python", default=None, help="a Python with torch (the baseline)")
    parser.add_argument("--edm-src", default=None, help="NVlabs/edm's repository (for the baseline)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    size_mib = args.pickle.stat().st_size / 2**20
    runs = {"gaussjax": [], "torch+EDM": []}
    for _ in range(args.repeats):
        runs["gaussjax"].append(trial(sys.executable, GAUSSJAX, str(args.pickle)))
        if args.torch_python:
            runs["torch+EDM"].append(trial(args.torch_python, TORCH, str(args.pickle), args.edm_src or "."))
    print(f"{args.pickle.name}: {size_mib:.0f} MiB; medians of {args.repeats} fresh processes")
    print(f"{'loader':<11} {'seconds':>8} {'peak MiB':>9} {'x file':>7}")
    medians = {}
    for name, values in runs.items():
        if not values:
            continue
        seconds = statistics.median(v["seconds"] for v in values)
        peak = statistics.median(v["peak_mib"] for v in values)
        medians[name] = seconds
        print(f"{name:<11} {seconds:>8.2f} {peak:>9.0f} {peak / size_mib:>7.2f}")
    if len(medians) == 2:
        print(f"gaussjax / torch+EDM time: {medians['gaussjax'] / medians['torch+EDM']:.2f}x")


if __name__ == "__main__":
    main()
