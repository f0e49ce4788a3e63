"""Silence the aftermath of a failed Orbax restore: reports from reads still in flight on a closed event loop.

Orbax runs each restore on a fresh event loop (`orbax.checkpoint._src.asyncio_utils.run_sync`)
and closes that loop as soon as one TensorStore read fails, while the others are still in
flight. When they finish, TensorStore calls `loop.call_soon_threadsafe` on the closed loop
from its own threads, which Python reports through `sys.unraisablehook` as
`RuntimeError: Event loop is closed` (about a thousand tracebacks for the smallest network);
and tasks that had failed before the loop closed are logged by asyncio as "Task exception was
never retrieved" when they are collected. Neither can be acted on: the restore has already
raised, and the checkpoint is reported as unreadable.

`install()` adds, once per process, a `sys.unraisablehook` that drops exactly those reports
and a filter on the `asyncio` logger that drops exactly those records; everything else passes
to the previous hook and handlers.
"""

from __future__ import annotations

import logging
import sys
import traceback

NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")


def install() -> None:
    """Install the hook and the filter (a second call does nothing)."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets_failed_restores", False):
        return

    def hook(unraisable) -> None:
        if not is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook.quiets_failed_restores = True  # type: ignore[attr-defined]  # a marker on the function
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_drop_never_retrieved_reads)


def is_closed_loop_callback(unraisable) -> bool:
    """Whether an unraisable exception is `call_soon_threadsafe` on a closed event loop (no object involved)."""
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and unraisable.object is None and any(frame.name == "call_soon_threadsafe" for frame in frames))


def _drop_never_retrieved_reads(record: logging.LogRecord) -> bool:
    """False (drop) for asyncio's "... exception was never retrieved" about a failed TensorStore read."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None or not record.getMessage().startswith(NEVER_RETRIEVED):
        return True
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    from_reader = "tensorstore" in str(error) or any("/orbax/" in frame.filename for frame in frames)
    return not from_reader
