"""A time and memory bound for tests that feed hostile inputs to a reader (issue 21).

A reader must refuse a tiny hostile file in time and memory linear in the file's size. `bounded`
checks both: it interrupts Python-level work that runs past `seconds` (SIGALRM; work inside one C
call is only caught when it returns, so the elapsed time is checked again afterwards), and it fails
when the traced peak of Python and NumPy allocations exceeds `megabytes` (NumPy reports its
buffers to `tracemalloc`).

    with bounded(seconds=5, megabytes=50):
        with pytest.raises(ValueError, match="..."):
            read_something(path)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import tracemalloc


class BoundExceeded(AssertionError):
    """The bounded block ran too long or allocated too much."""


@contextlib.contextmanager
def bounded(*, seconds: float = 10.0, megabytes: float = 100.0):
    """Fail the test if the block takes over `seconds` or allocates over `megabytes` at its peak."""
    use_alarm = threading.current_thread() is threading.main_thread()

    def on_alarm(signum, frame):
        raise BoundExceeded(f"the block ran past its bound of {seconds} s")

    if use_alarm:
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline, _ = tracemalloc.get_traced_memory()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - baseline
        if not was_tracing:
            tracemalloc.stop()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if elapsed > seconds:
        raise BoundExceeded(f"the block took {elapsed:.1f} s, over its bound of {seconds} s")
    if peak > megabytes * 2**20:
        raise BoundExceeded(f"the block allocated {peak / 2**20:.0f} MiB at its peak, "
                            f"over its bound of {megabytes} MiB")
