import contextlib
import os
import signal
import subprocess
import sys

from train.__main__ import main
from train.lock import lock_run_dir

# Another process holding the run directory's lock the way a trainer does (flock on RUN_DIR/.lock, pid inside).
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def lock_held_by_another_process(lock_file):
    """Another process holding `lock_file` as a trainer does, until the block ends (then SIGKILLed): its Popen."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash leaves the file, but the kernel drops the lock
        holder.wait()
        holder.stdout.close()


def test_a_run_directory_in_use_is_refused_until_its_holder_dies(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with lock_held_by_another_process(run_dir / ".lock") as holder:
        assert main(["--config", "digits-tiny", "--no-progress", "--out", str(run_dir)]) == 2
        assert capsys.readouterr().err == (f"error: run directory {run_dir} is in use by another training process "
                                           f"(pid {holder.pid}); wait for it to end or choose another --out\n")
        assert [path.name for path in run_dir.iterdir()] == [".lock"]  # refused before writing anything
    with lock_run_dir(run_dir):
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"
