"""Where the project's shared community data lives: `../shared/data` beside the repository
(as on every developer machine and in CI), or `$TVAD_SHARED_DIR/data` when set."""
from __future__ import annotations

import os
from pathlib import Path


def shanghaitech_tracks_dir() -> Path:
    """The 107 ShanghaiTech test-set track files used for RBDC/TBDC (read, never copied)."""
    shared = Path(os.environ.get("TVAD_SHARED_DIR", Path(__file__).parents[1] / ".." / "shared"))
    return shared / "data" / "shanghaitech-tracks"
