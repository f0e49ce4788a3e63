"""Run a script as several JAX processes on localhost: a free port, gloo on CPU, bounded waits, peers killed.

Each process gets `GJ_COORDINATOR` (`127.0.0.1:PORT`), `GJ_NUM_PROCESSES`, `GJ_PROCESS_ID`, `JAX_PLATFORMS=cpu`
and `JAX_NUM_CPU_DEVICES` in its environment; a script starts with `exec(INIT)` (or calls
`jax.distributed.initialize` with those values itself). `run_processes` returns when every process has
exited, or raises `TimeoutError` after killing all of them; when one process fails, the others get
`peer_grace` seconds to exit on their own before they are killed, so a test never hangs on a dead peer.
Each process writes its output to files beside the script (not pipes, which a chatty process could fill
and block on), read back when it has exited.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The first lines of a process script: join the job described by the environment (bounded wait for the peers).
INIT = """
import os
import jax
jax.distributed.initialize(os.environ["GJ_COORDINATOR"], int(os.environ["GJ_NUM_PROCESSES"]),
                           int(os.environ["GJ_PROCESS_ID"]), initialization_timeout=60)
"""


@dataclasses.dataclass(frozen=True)
class Finished:
    """One process's exit: its status (negative: killed by that signal), output, and seconds since the start."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process(subprocess.Popen):
    """A process of `start_processes`: `logs` are the files that hold its standard output and error."""

    logs: tuple[Path, Path]

    def output(self) -> tuple[str, str]:
        """`(stdout, stderr)` so far."""
        return tuple(path.read_bytes().decode(errors="replace") for path in self.logs)


def start_processes(script: str, num_processes: int, *, devices: int = 1, env: dict | None = None,
                    args: tuple[str, ...] = ()) -> list[Process]:
    """Start `python SCRIPT ARGS` `num_processes` times as one JAX job (see the module docstring)."""
    port = free_port()
    path = Path(tempfile.mkdtemp(prefix="gaussjax-mp-")) / "process.py"
    path.write_text(script)
    processes = []
    for index in range(num_processes):
        environment = {**os.environ, **(env or {}), "GJ_COORDINATOR": f"127.0.0.1:{port}",
                       "GJ_NUM_PROCESSES": str(num_processes), "GJ_PROCESS_ID": str(index),
                       "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with open(path.with_name(f"{index}.out"), "wb") as out, open(path.with_name(f"{index}.err"), "wb") as err:
            processes.append(Process([sys.executable, str(path), *args], cwd=ROOT, env=environment, stdout=out,
                                     stderr=err, start_new_session=True))
            processes[-1].logs = (Path(out.name), Path(err.name))
    return processes


def wait_processes(processes: list[Process], *, timeout: float, peer_grace: float = 30.0) -> list[Finished]:
    """Wait for every process; on a failure give the others `peer_grace` s; past `timeout` kill all, raise."""
    start, deadline, outputs = time.monotonic(), time.monotonic() + timeout, {}
    ended: dict[int, float] = {}
    try:
        while len(ended) < len(processes):
            for index, process in enumerate(processes):
                if index not in ended and process.poll() is not None:
                    ended[index] = time.monotonic() - start
            failed = any(processes[i].returncode != 0 for i in ended)
            if failed:
                deadline = min(deadline, start + max(ended.values()) + peer_grace)
            if time.monotonic() > deadline and len(ended) < len(processes):
                raise TimeoutError(f"{len(processes) - len(ended)} of {len(processes)} processes still running after "
                                   f"{time.monotonic() - start:.0f} s; killed")
            time.sleep(0.05)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for index, process in enumerate(processes):
            process.wait(timeout=30)  # killed above if it was running
            outputs[index] = process.output()
    return [Finished(p.returncode, *outputs[i], ended.get(i, float("nan"))) for i, p in enumerate(processes)]


def run_processes(script: str, num_processes: int, *, timeout: float, **kwargs) -> list[Finished]:
    """`start_processes` then `wait_processes` (every wait bounded by `timeout`)."""
    return wait_processes(start_processes(script, num_processes, **kwargs), timeout=timeout)


def check_all_succeeded(finished: list[Finished]) -> None:
    """Fail with every process's output unless all exited with status 0."""
    if any(f.returncode != 0 for f in finished):
        raise AssertionError("\n\n".join(f"process {i}: exit {f.returncode}\n{f.stdout}\n{f.stderr[-4000:]}"
                                         for i, f in enumerate(finished)))
