"""`python -m train`: train an EDM network and probe its score structure at checkpoints.

    python -m train                                   # the default: digits, ~10 minutes on a 2-core CPU
    python -m train --config mnist --data-dir ~/data/mnist
    python -m train --config digits --steps 2000 --out runs/short
"""

from __future__ import annotations

import argparse
import importlib.util
import mmap
import os
import sys
from pathlib import Path

# XLA:CPU's YNNPACK fusions run this U-Net's train step ~1.7x slower than its Eigen kernels
# (bench/train_step.py); `python -m train` switches them off unless XLA_FLAGS already decides.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def jaxlib_knows_flag(flag: str) -> bool:
    """Whether the installed jaxlib's binaries mention `flag` (XLA aborts on unknown flags)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    needle = flag.lstrip("-").encode()
    for location in spec.submodule_search_locations:
        for library in Path(location).glob("*.so"):
            if library.stat().st_size == 0:
                continue
            with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data.find(needle) >= 0:
                    return True
    return False


def prefer_eigen_kernels(environ=os.environ) -> None:
    """Add `--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS (before JAX starts), if jaxlib knows it."""
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FLAG.lstrip("-") not in flags and jaxlib_knows_flag(YNN_FLAG):
        environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()


def build_parser() -> argparse.ArgumentParser:
    from train.configs import CONFIGS

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="digits", help=f"one of: {', '.join(CONFIGS)} (default: digits)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config>)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step, over all devices")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="where the dataset files are (mnist, cifar10)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every K steps (default: log-spaced)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "jax" not in sys.modules:  # XLA reads its flags once, when JAX starts
        prefer_eigen_kernels()
    from train.configs import get_config, with_overrides

    try:
        config = with_overrides(
            get_config(args.config), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            checkpoint_every=args.checkpoint_every,
        )
        import jax

        config.validate(jax.local_device_count())
        if args.dry_run:
            print(config.to_json())
            return 0
        from train.run import train

        train(config, args.out or Path("runs") / config.name, data_dir=args.data_dir, progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
