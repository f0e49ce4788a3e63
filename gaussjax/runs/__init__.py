"""Run directories of `python -m train`: their configuration files, Orbax checkpoints and networks.

A run directory holds `config.json` (`TrainConfig`), `network.json` (`NetworkConfig`), and
`checkpoints/<step>/` (the training state, written by `Checkpointer`); the training loop also
writes `loss.csv` and `probes.csv` there. This module reads and writes that format, so that
training, analysis and users' own scripts share one reader, e.g.
`denoiser, step = gaussjax.runs.load_checkpoint("runs/digits")`.

Every error about a run directory's files is an `InputError` naming the file (and the field or
the step); a damaged checkpoint is `UnreadableCheckpointError`.
"""

from gaussjax.runs._agree import agree
from gaussjax.runs._checkpoints import (
    Checkpointer,
    LoadedDenoiser,
    NonFiniteError,
    UnreadableCheckpointError,
    load_checkpoint,
    load_denoiser,
    non_finite_leaves,
)
from gaussjax.runs._config import (
    MAX_SEED,
    PRECISIONS,
    PROBE_SIGMAS,
    NetworkConfig,
    TrainConfig,
    read_run_files,
)

__all__ = [
    "Checkpointer",
    "LoadedDenoiser",
    "MAX_SEED",
    "NetworkConfig",
    "NonFiniteError",
    "PRECISIONS",
    "PROBE_SIGMAS",
    "TrainConfig",
    "UnreadableCheckpointError",
    "agree",
    "load_checkpoint",
    "load_denoiser",
    "non_finite_leaves",
    "read_run_files",
]
