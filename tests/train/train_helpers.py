"""Helpers for the engine tests: toy runs in subprocesses with a chosen CPU device count.

Subprocesses get their own XLA_FLAGS, so the device count of this pytest process (whatever
other test folders set) does not matter, and a single-device reference run is shared by the
tests that compare against it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")


def subprocess_env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("TVAD_COORDINATOR_ADDRESS", "TVAD_NUM_PROCESSES", "TVAD_PROCESS_ID"):
        env.pop(key, None)
    return env


def toy_command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tvad_jax.cli", "train", "toy", "--run-dir", str(run_dir),
            *args]


def run_toy(run_dir: Path, *args: str, devices: int = 1, timeout: float = 120) -> dict:
    """Run the toy trainer to completion; returns its summary.json."""
    proc = subprocess.run(toy_command(run_dir, *args), env=subprocess_env(devices), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((run_dir / "summary.json").read_text())


def train_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s]
    return [d for d in lines if "train/loss" in d]


def load_params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
