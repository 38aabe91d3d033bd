"""Run folders and progress bars shared by every command.

Every run writes its resolved config (`config.json`), what it ran on (`environment.json`: the
package versions, the accelerators, the host CPU and its vector extensions, since XLA's CPU
code, and with it a trained model's last digits, can differ between CPU models) and its outputs into
one folder (`<root>/<kind>-<UTC timestamp>[-n]`) and prints where that is.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Iterable, TypeVar

import jax
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
    write_run_files(run_dir, config)
    print(f"[tvad] run folder: {run_dir}", file=sys.stderr)
    return run_dir


def write_run_files(run_dir: Path, config: Any) -> None:
    """`config.json` (the resolved config) and `environment.json` (`environment()`)."""
    config_lib.save(config, run_dir / "config.json")
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it"):
    """A progress bar with rate and ETA on stderr."""
    return tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy")
# CPU features that change which kernels XLA's CPU backend emits (x86 flags, ARM features).
VECTOR_PREFIXES = ("sse4", "avx", "fma", "amx", "asimd", "sve", "neon")


def environment() -> dict:
    """What a run ran on: Python and package versions, JAX's backend and devices, the host."""
    devices = jax.devices()
    return {"python": platform.python_version(),
            "packages": {name: _version(name) for name in PACKAGES},
            "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "devices": len(devices), "processes": jax.process_count(),
            "host": {"system": platform.system(), "machine": platform.machine(),
                     "cpu_count": os.cpu_count(), **host_cpu()}}


def machine_summary(env: dict) -> str:
    """One line for reports: the devices, or on a CPU backend the host CPU, its cores and its
    widest vector extensions, and JAX's version."""
    host = env["host"]
    if env["backend"] != "cpu":
        where = f"{env['devices']} x {env['device_kind']} ({env['backend']})"
    else:
        wide = ", ".join(f for f in ("avx2", "avx512f", "amx_tile", "asimd", "sve")
                         if f in host["vector_extensions"])
        where = f"{host['cpu']} ({host['cpu_count']} cores{'; ' + wide if wide else ''})"
    return f"{where}, jax {env['packages']['jax']}"


def host_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """{"cpu": model name, "vector_extensions": sorted flags} from a Linux cpuinfo file; the
    platform's processor string and no flags where there is none."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {"cpu": platform.processor(), "vector_extensions": []}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())    # the first processor's
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {"cpu": fields.get("model name") or fields.get("CPU part") or platform.processor(),
            "vector_extensions": sorted(f for f in set(flags) if f.startswith(VECTOR_PREFIXES))}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
