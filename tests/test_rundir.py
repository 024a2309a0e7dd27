"""The run-directory lock: one holder at a time, named in the refusal, released on exit and when the holder dies."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rlfocal.rundir import RunDirLock, RunDirLocked


def test_second_acquirer_fails_at_once_naming_the_holder(tmp_path):
    with RunDirLock(tmp_path / "run"):
        start = time.monotonic()
        with pytest.raises(
            RunDirLocked, match=rf"in use by another run \(pid {os.getpid()} on .*started .*hydra\.run\.dir"
        ):
            RunDirLock(tmp_path / "run").acquire()
        assert time.monotonic() - start < 1.0
    with RunDirLock(tmp_path / "run"):  # released on exit
        pass


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from rlfocal.rundir import RunDirLock; "
            f"RunDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid} "):
            RunDirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunDirLock(tmp_path) as lock:
        assert f"pid {os.getpid()} " in lock.path.read_text()
