"""Killing a subprocess at a chosen moment (the kill -9 resume tests)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str,
              timeout: float = 240.0, poll: float = 0.02) -> None:
    """SIGKILL `proc` (started with stderr=PIPE, text=True) as soon as `ready()` holds; fails
    with its stderr if it exits first, or after `timeout` s naming `what` it never reached."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            assert time.monotonic() < deadline, f"never reached {what}"
            time.sleep(poll)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
