"""Subprocesses in tests: killing one at a chosen moment (the kill -9 resume tests), running
the processes of one multi-process job together."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable

from train_helpers import subprocess_env


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


def job_env(process_id: int, num_processes: int, port: int) -> dict:
    """The environment of one process of a CPU job on 127.0.0.1, one device per process."""
    return dict(subprocess_env(1), TVAD_NUM_PROCESSES=str(num_processes),
                TVAD_PROCESS_ID=str(process_id), TVAD_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")


def run_together(commands: list[tuple[list[str], dict]], cwd, timeout: float) -> list[str]:
    """Start every (command, environment) at once (the processes of one multi-process job),
    wait for all and fail with the output of any that exits non-zero; none outlives it.
    Returns their standard outputs."""
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for cmd, env in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, (out + err)[-4000:]
    return [out for out, _ in outputs]
