"""Fixtures of the engine tests (helpers live in train_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import run_toy


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The default toy run (20 steps, checkpoints every 5) on one CPU device, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_toy(run_dir, "--params-out", str(run_dir / "params.npz"))
    return run_dir
