"""Run folders and progress bars shared by every command.

Every run writes its resolved config and its outputs into one folder
(`<root>/<kind>-<UTC timestamp>[-n]`) and prints where that is.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any, Iterable, TypeVar

from tqdm.auto import tqdm

from tvad_jax import config as config_lib

T = TypeVar("T")


def new_run_dir(kind: str, config: Any, root: str | Path = "runs") -> Path:
    """Create a fresh run folder, write `config.json` into it, print and return its path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / f"{kind}-{stamp}"
    suffix = 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            suffix += 1
            run_dir = root / f"{kind}-{stamp}-{suffix}"
    config_lib.save(config, run_dir / "config.json")
    print(f"[tvad] run folder: {run_dir}", file=sys.stderr)
    return run_dir


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it"):
    """A progress bar with rate and ETA on stderr."""
    return tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)
