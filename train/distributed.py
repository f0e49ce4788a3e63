"""One training job over several JAX processes: joining it, and what its processes agree on.

`python -m train --coordinator HOST:PORT --num-processes N --process-id I` (the same command on
every process, `I` = 0 ... N-1) joins a job of N processes (`jax.distributed.initialize`);
`--distributed` lets JAX detect the job from the cluster's environment instead: SLURM (`srun`), Open
MPI (`mpirun`), Cloud TPU VMs and pods, and Kubernetes where the `kubernetes` package is installed.
Without any of them the trainer is one process, and `jax.distributed` is never called.

Every process reads the training set, builds the same network and runs the same program over one
mesh of every process's devices. Process 0 (the *primary*) alone takes the run directory's lock and
writes its files (config.json, network.json, loss.csv, probes.csv, analytic_models.npz) and the log;
Orbax checkpoints are written by every process (each its shards). Wherever one process decides for
all (the run directory refused, a checkpoint unreadable), the decision is shared (`agree`), so every
process raises the same error.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils

import gaussjax.runs
from gaussjax.checks import InputError, InputFileNotFoundError, InputKeyError, InputTypeError, InputValueError
from train.errors import RunDirectoryInUseError, TrainingError

DEFAULT_TIMEOUT = 300  # seconds: joining, a dead or silent process, the end of the job


def parse_coordinator(address: str) -> str:
    """`HOST:PORT` (port 1-65535) as given, or `InputValueError` naming `--coordinator`."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputValueError(f"`--coordinator` must be HOST:PORT (a port 1-65535), got {address!r}")
    return address


def check_job(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
              detect: bool = False, timeout: int = DEFAULT_TIMEOUT) -> bool:
    """Whether the options ask for a job of several processes (see `join`); `InputValueError` naming the option
    for an incomplete or invalid one. Calls nothing."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if not detect and all(value is None for value in given.values()):
        return False
    if not detect and any(value is None for value in given.values()):
        missing = ", ".join(name for name, value in given.items() if value is None)
        raise InputValueError(f"--coordinator, --num-processes and --process-id go together (missing: {missing}); "
                              "or give --distributed to detect the job from the cluster (SLURM, Open MPI, TPU pods)")
    if coordinator is not None:
        parse_coordinator(coordinator)
    if num_processes is not None and num_processes < 1:
        raise InputValueError(f"`--num-processes` must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise InputValueError(f"`--process-id` must be in 0 ... {num_processes - 1} (--num-processes "
                              f"{num_processes}), got {process_id}")
    if timeout < 1:
        raise InputValueError(f"`--distributed-timeout` must be >= 1 second, got {timeout}")
    return True


def join(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
         detect: bool = False, timeout: int = DEFAULT_TIMEOUT) -> bool:
    """Join a multi-process JAX job (before any other use of JAX); returns whether this process is in one.

    Args:
        coordinator, num_processes, process_id: the job, given together (`--coordinator HOST:PORT
            --num-processes N --process-id I`); process 0 runs the coordinator at `HOST:PORT`.
        detect: let `jax.distributed.initialize` detect what is not given from the cluster's
            environment (SLURM, Open MPI, Cloud TPU, Kubernetes; `--distributed`).
        timeout: seconds that every wait on the other processes may last: joining the job
            (`initialization_timeout`), the heartbeat after which a silent process counts as dead
            (`heartbeat_timeout_seconds`), and the wait for all to finish at the end
            (`shutdown_timeout_seconds`).

    With none of them (and `detect=False`), nothing is called: a single process. Raises
    `InputValueError` naming the option for an incomplete or invalid job (`check_job`), and
    `InputValueError` if `detect` finds no cluster. A process that cannot reach the others within
    `timeout` is ended by JAX's runtime (`train.failures`).
    """
    if not check_job(coordinator, num_processes, process_id, detect=detect, timeout=timeout):
        return False
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout)
    except ValueError as error:  # what auto-detection could not find (coordinator_address, number of processes)
        if not detect:
            raise
        raise InputValueError(f"--distributed: JAX detected no cluster (SLURM, Open MPI, Cloud TPU, Kubernetes) "
                              f"that gives the job ({error}); give --coordinator, --num-processes and "
                              "--process-id") from None
    return True


def is_primary() -> bool:
    """Whether this is process 0, the one that writes the run's files and the log."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has arrived here (nothing in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


# The errors a process may raise for all: the first class that an error is an instance of travels.
SHARED_ERRORS = (RunDirectoryInUseError, TrainingError, InputFileNotFoundError, InputTypeError, InputKeyError,
                 InputValueError, InputError, FileNotFoundError, PermissionError, OSError)


def agree(error: Exception | None) -> None:
    """Raise on every process the error of the first process (by index) that has one, if any has.

    `error` is this process's verdict (None: nothing to object), one of `SHARED_ERRORS`. A collective
    (`gaussjax.runs.agree`); in a single process it raises `error`.
    """
    shared = gaussjax.runs.agree(error, SHARED_ERRORS)
    if shared is not None:
        raise shared
