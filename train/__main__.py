"""`python -m train`: train an EDM network and probe its score structure at checkpoints.

    python -m train                                   # the default: digits, ~10 minutes on a 2-core CPU
    python -m train --config mnist --data-dir ~/data/mnist
    python -m train --config digits --steps 500 --out runs/short
    python -m train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # and --process-id 1
                                                      # on the other host: one job over both (docs/scaling.md)

Compiled programs are cached in RUN_DIR/.jax_cache (unless $JAX_COMPILATION_CACHE_DIR or JAX's
configuration already names a cache), so a resumed run does not compile again.

Exit status: 0 done; 1 the loss became NaN or infinite (the run stopped, its last good checkpoint kept);
2 refused (invalid options, missing data, a run directory in use or holding another configuration);
3 another process of a multi-process job died or stopped responding (rerun the same commands to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.xla_flags import prefer_eigen_kernels


def build_parser() -> argparse.ArgumentParser:
    from train.configs import CONFIGS
    from train.distributed import DEFAULT_TIMEOUT

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
    design = parser.add_argument_group("the paper's Sec. 8 design options (docs/training.md)")
    design.add_argument("--bypass", action="store_true", default=None,
                        help="the network learns only the residual of the training set's Gaussian denoiser")
    design.add_argument("--whiten", type=float, metavar="EPS", default=None,
                        help="train on whitened data, W = (Sigma + EPS max(lambda) I)^(-1/2); EPS > 0")
    design.add_argument("--warm-start", type=float, metavar="SIGMA", default=None,
                        help="draw training noise levels only up to SIGMA (EDM's log-normal truncated)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    job = parser.add_argument_group("a job of several processes (docs/scaling.md)")
    job.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                     help="process 0's address and a free port, the same for every process")
    job.add_argument("--num-processes", type=int, metavar="N", default=None, help="processes in the job")
    job.add_argument("--process-id", type=int, metavar="I", default=None, help="this process: 0 ... N-1")
    job.add_argument("--distributed", action="store_true",
                     help="detect the job from the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes)")
    job.add_argument("--distributed-timeout", type=int, metavar="SECONDS", default=DEFAULT_TIMEOUT,
                     help="the longest wait on another process: to join, a silent process's heartbeat, "
                          f"the end (default {DEFAULT_TIMEOUT})")
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
    from train import distributed, failures
    from train.configs import get_config, with_overrides
    from train.errors import TrainingError

    in_job = False
    job = dict(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
               detect=args.distributed, timeout=args.distributed_timeout)
    try:
        if distributed.check_job(**job):
            failures.watch_fatal_errors(args.process_id, args.num_processes, args.distributed_timeout)
        # Before any other use of JAX: a job's devices are known once every process has joined.
        in_job = distributed.join(**job)
        config = with_overrides(
            get_config(args.config), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            checkpoint_every=args.checkpoint_every, precision=args.precision, bypass=args.bypass,
            whiten=args.whiten, warm_start=args.warm_start,
        )
        import jax

        config.validate(jax.device_count())
        if args.dry_run:
            if distributed.is_primary():
                print(config.to_json())
            return 0
        from train.run import train

        run_dir = args.out or Path("runs") / config.name
        use_compilation_cache(run_dir.absolute())
        train(config, run_dir, data_dir=args.data_dir, progress=not args.no_progress)
    except NonFiniteError as error:  # every process of a job sees the same loss
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (InputError, TrainingError) as error:  # the user's options and files (a job's processes agree)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # paths and files; in a job, perhaps this process's alone
        print(f"error: {error}", file=sys.stderr)
        if in_job:
            failures.leave(2)
        return 2
    except Exception as error:
        if not in_job:
            raise  # a bug: its traceback
        failures.leave_after(error)  # a lost process (one line, status 3), else the traceback (status 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
