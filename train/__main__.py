"""`python -m train`: train an EDM network and probe its score structure at checkpoints.

    python -m train                                   # the default: digits, ~10 minutes on a 2-core CPU
    python -m train --config mnist --data-dir ~/data/mnist
    python -m train --config digits --steps 500 --out runs/short

Compiled programs are cached in RUN_DIR/.jax_cache (unless $JAX_COMPILATION_CACHE_DIR or JAX's
configuration already names a cache), so a resumed run does not compile again.

Exit status: 0 done; 1 the loss became NaN or infinite (the run stopped, its last good checkpoint kept);
2 refused (invalid options, missing data, a run directory in use or holding another configuration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.xla_flags import prefer_eigen_kernels


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
    parser.add_argument("--precision", default=None, choices=("float32", "bf16"),
                        help="bf16: bfloat16 activations on float32 weights, loss, Adam and EMA (default float32)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="checkpoint every K steps (default: log-spaced)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def use_compilation_cache(run_dir: Path) -> None:
    """Keep JAX's persistent compilation cache in `run_dir/.jax_cache`, unless one is configured already.

    Process-wide JAX configuration: set here, by the command-line entry point, never by `train.run.train`.
    """
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(run_dir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str] | None = None) -> int:
    if "jax" not in sys.modules:  # XLA reads its flags once, when JAX starts (the parser imports it)
        prefer_eigen_kernels()
    args = build_parser().parse_args(argv)
    from gaussjax import InputError
    from gaussjax.runs import NonFiniteError
    from train.configs import get_config, with_overrides
    from train.errors import TrainingError

    try:
        config = with_overrides(
            get_config(args.config), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            checkpoint_every=args.checkpoint_every, precision=args.precision,
        )
        import jax

        config.validate(jax.local_device_count())
        if args.dry_run:
            print(config.to_json())
            return 0
        from train.run import train

        run_dir = args.out or Path("runs") / config.name
        use_compilation_cache(run_dir.absolute())
        train(config, run_dir, data_dir=args.data_dir, progress=not args.no_progress)
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (InputError, TrainingError, OSError) as error:  # the user's options, files and paths; not bugs
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
