"""One run per run directory: an OS-level lock held for the run's life.

Two runs writing one directory would share ``last.pt.tmp`` and ``metrics.csv`` and corrupt each other silently.
``RunDirLock`` takes ``fcntl.flock`` on ``<run_dir>/.lock``; the OS drops it when the process exits, however it dies,
so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds ``run_dir/.lock`` exclusively, or raises ``RunDirLocked`` at once.

    The file records the holder's pid, host and start time, so the error can say who holds it.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise RunDirLocked(
                f"{self.path.parent} is in use by another run ({holder}): wait for it to finish, stop it, "
                "or pass another hydra.run.dir=..."
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays: deleting it would let a third process lock a different inode)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
