"""Why a training run is refused or stops (`python -m train` prints these as one `error:` line)."""


class TrainingError(RuntimeError):
    """A run refused or stopped for a reason its message explains (no traceback needed)."""


class RunDirectoryInUseError(TrainingError):
    """Another process holds the run directory's lock (`train.lock`)."""


class NonFiniteError(TrainingError):
    """A NaN or infinite loss or training state: the run stops without checkpointing or probing it."""


class UnreadableCheckpointError(TrainingError):
    """A checkpoint that cannot be read back (damaged or partly written); the message names its step and path."""
