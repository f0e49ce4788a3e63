"""An exclusive lock on a run directory: two trainers never write one run."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from train.errors import RunDirectoryInUseError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `run_dir/.lock` (which must exist) for the block, writing this pid into it.

    Raises `RunDirectoryInUseError` (naming the holder's pid) if another process holds it; nothing
    else is written then. The kernel drops the lock when its holder exits or is killed, so the
    file left behind never blocks a later run. Where the file system cannot lock, a warning says
    that concurrent trainers go undetected.
    """
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirectoryInUseError(
                f"run directory {run_dir} is in use by another training process (pid {pid}); "
                "wait for it to end or choose another --out"
            ) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(f"cannot lock {path} ({error.strerror}): a second trainer on this run directory "
                          "would go undetected", stacklevel=3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
