"""Where the project's shared community data lives: `../shared/data` beside the repository
(as on every developer machine and in CI), or `$TVAD_SHARED_DIR/data` when set."""
from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    return Path(os.environ.get("TVAD_SHARED_DIR", Path(__file__).parents[1] / ".." / "shared")) \
        / "data"


def shanghaitech_tracks_dir() -> Path:
    """The 107 ShanghaiTech test-set track files used for RBDC/TBDC (read, never copied)."""
    return shared_data_dir() / "shanghaitech-tracks"


def qwen_tiny_dir() -> Path:
    """A tiny random Qwen2.5-VL checkpoint (`model/`) and transformers' outputs on it
    (`golden.npz`; read, never copied)."""
    return shared_data_dir() / "qwen2_5_vl-tiny"
