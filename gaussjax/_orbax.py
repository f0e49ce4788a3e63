"""Orbax's chatter that a loader does not want its users to see."""

from __future__ import annotations

import contextlib
import logging

READ_ONLY_NOTICE = "Given directory is read only"  # Orbax's warning for a directory opened read-only (as asked)


@contextlib.contextmanager
def without_read_only_notice():
    """Drop Orbax's "Given directory is read only" warning: loaders open checkpoints read-only on purpose.

    Filters the `absl` logger (Orbax logs there) and the root logger (where absl's records end
    up when absl logging is not initialised) for the duration of the block.
    """

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(READ_ONLY_NOTICE)

    loggers = [logging.getLogger("absl"), logging.getLogger()]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)
