"""How a process of a multi-process job ends when another one dies or hangs: one `error:` line, never a hang.

Two things tell a process, within a bounded time, that its job has lost a process:

- a collective operation fails: a peer that died mid-step closes its connections, and the
  operation raises in Python at once (e.g. "Gloo all-reduce failed ... Connection reset by
  peer"); `python -m train` then prints one line and exits with status 3 (`leave_after`), without
  waiting at JAX's shutdown barrier for the dead peer;
- JAX's distributed runtime ends the process itself: its coordination service counts a process
  that sent no heartbeat for `--distributed-timeout` seconds as dead (a killed, stopped or hung
  process, or process 0 and the service with it), and a process that cannot join the job within
  that time fails; the runtime's C++ client then logs a fatal error and aborts the process
  (SIGABRT). That report is many lines of C++ log and stack trace; `watch_fatal_errors` sends the
  process's standard error through a small watcher process that passes everything on unchanged
  but replaces that report with one `error:` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from typing import NoReturn

LOST_PROCESS_STATUS = 3
# What the message of a failed collective or barrier says when a peer is gone (gloo on CPU, NCCL on GPU,
# the coordination service's barriers).
LOST_PROCESS_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "barrier",
                        "coordination service", "heartbeat", "unavailable", "deadline_exceeded", "socket closed")
RESUME_HINT = "rerun the same command on every process to resume from the last complete checkpoint"


def job_name(process_id: int | None, num_processes: int | None) -> str:
    """`process I of N`, as far as they are known."""
    return "this process" if process_id is None else f"process {process_id} of {num_processes}"


def is_lost_process(error: BaseException) -> bool:
    """Whether `error` is a failed collective or barrier of the kind a dead or silent peer causes.

    XLA raises these as `jax.errors.JaxRuntimeError` (a `RuntimeError`) or, for some statuses, as
    `ValueError`; the message names the collective library or the coordination service.
    """
    text = str(error).lower()
    return isinstance(error, (RuntimeError, ValueError)) and any(marker in text for marker in LOST_PROCESS_MARKERS)


def leave(status: int) -> NoReturn:
    """End this process now with `status`, output flushed, skipping the exit handlers.

    In a job, JAX's exit handler waits at a shutdown barrier for every other process; after a
    failure that only this process has seen, that wait would last `--distributed-timeout` seconds
    and end in the runtime's own abort.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def leave_after(error: BaseException) -> NoReturn:
    """End this process after an unexpected `error` in a job: one line and status 3 for a lost process,
    else the traceback and status 1 (a bug)."""
    import jax

    name = job_name(jax.process_index(), jax.process_count())
    if is_lost_process(error):
        summary = " ".join(str(error).split())[:300]
        print(f"error: {name}: a collective operation with the other processes failed ({summary}): another process "
              f"of the job died or stopped responding; {RESUME_HINT}", file=sys.stderr)
        leave(LOST_PROCESS_STATUS)
    traceback.print_exception(error)
    leave(1)


# The watcher (run by `python -c`, argv: the name of this process, the timeout): copies its standard input to
# its standard output as it comes, except the report of a fatal error of JAX's distributed runtime, which it
# replaces with one line. Log lines of the coordination service are held back for up to 2 s, in case that
# report follows them; everything else passes at once (progress bars included).
WATCHER = r"""
import os, re, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the trainer; the watcher passes on its last words
name, timeout = sys.argv[1], sys.argv[2]
LOG = re.compile(rb"^[EWF]\d{4} [\d:.]+ +\d+ coordination_service[\w.]*:\d+\]")
FATAL = re.compile(rb"^F\d{4} [\d:.]+ +\d+ client\.h:\d+\] Terminating process because the JAX distributed service")
out, held, text, fatal, since = sys.stdout.buffer, [], b"", None, None

def write(data):
    try:
        out.write(data); out.flush()
    except OSError:
        pass

def report(lines):
    status = b" ".join(b" ".join(lines).split()).decode(errors="replace")
    status = status.split("absl::Status: ", 1)[-1].split("*** Check failure", 1)[0]
    status = re.sub(r" ?\[type\.googleapis\.com/[^\]]*\]", "", status).strip()[:400]
    write((f"error: {name}: JAX's distributed runtime ended this process ({status}): another process of the job "
           f"died, sent no heartbeat for {timeout} s (--distributed-timeout) or never joined; rerun the same "
           "command on every process to resume from the last complete checkpoint\n").encode())

while True:
    ready = select.select([0], [], [], 0.5)[0]
    chunk = os.read(0, 65536) if ready else None
    if chunk == b"":
        break
    text += chunk or b""
    *lines, text = text.split(b"\n")
    for line in lines:
        if fatal is not None:
            fatal.append(line)
        elif FATAL.match(line):
            fatal, held = [line], []
        elif held or LOG.match(line):
            held.append(line)
            since = since or time.monotonic()
        else:
            write(line + b"\n")
    if fatal is None and held and time.monotonic() - since > 2:
        write(b"\n".join(held) + b"\n"); held, since = [], None
    if fatal is None and not held and text and not LOG.match(text) and not text.startswith((b"E", b"F", b"W")):
        write(text); text = b""  # a partial line (a progress bar's update) passes at once
if fatal is not None:
    report(fatal + [text])
else:
    write(b"\n".join(held + [text]) if held else text)
"""


_watchers: list[subprocess.Popen] = []  # kept, not waited for: each ends after this process


def watch_fatal_errors(process_id: int | None, num_processes: int | None, timeout: int) -> None:
    """Send this process's standard error (file descriptor 2) through the watcher (see the module docstring).

    The watcher outlives this process just long enough to pass on its last output; it ignores
    SIGINT and ends when this process's standard error closes (at its exit, however it ends).
    """
    read_end, write_end = os.pipe()
    _watchers.append(subprocess.Popen(
        [sys.executable, "-c", WATCHER, job_name(process_id, num_processes), str(timeout)],
        stdin=read_end, stdout=sys.stderr.fileno(), stderr=subprocess.DEVNULL, close_fds=True))
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
