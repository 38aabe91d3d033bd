"""Where the project's shared community data lives: `$TVAD_SHARED_DIR/data` when set, else
`../shared/data` beside the repository (as on every developer machine and in CI), else beside
the repository a local clone was made from (`git clone . /tmp/x` keeps finding it)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    if "TVAD_SHARED_DIR" in os.environ:
        return Path(os.environ["TVAD_SHARED_DIR"]) / "data"
    beside = REPO.parent / "shared" / "data"
    origin = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if beside.is_dir() or not origin or not Path(origin).is_dir():
        return beside
    return Path(origin).resolve().parent / "shared" / "data"


def shanghaitech_tracks_dir() -> Path:
    """The 107 ShanghaiTech test-set track files used for RBDC/TBDC (read, never copied)."""
    return shared_data_dir() / "shanghaitech-tracks"


def qwen_tiny_dir() -> Path:
    """A tiny random Qwen2.5-VL checkpoint (`model/`) and transformers' outputs on it
    (`golden.npz`; read, never copied)."""
    return shared_data_dir() / "qwen2_5_vl-tiny"
