"""Why a training run is refused or stops (`python -m train` prints these as one `error:` line)."""


class TrainingError(RuntimeError):
    """A run refused or stopped for a reason its message explains (no traceback needed)."""


class RunDirectoryInUseError(TrainingError):
    """Another process holds the run directory's lock (`train.lock`)."""

