"""Plumbing every job shares: the benchmark and its shards, the run folder, the report line.

    ensure_prepared(cfg, report)          # render the benchmark if missing, prepare shards
    run_dir = start_run("tvad-full", cfg, run_dir)   # given or new folder, with config.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tvad_jax import config as config_lib
from tvad_jax.data.prepare import prepare
from tvad_jax.data.synthetic.generate import is_complete, synthesize
from tvad_jax.jobs.config import Config
from tvad_jax.runs import new_run_dir, progress

Report = Callable[[str], None]


def ensure_benchmark(cfg: Config, report: Report = print) -> None:
    """Render the synthetic benchmark if the config reads it and it is missing."""
    if cfg.prepare.layout != "synthetic" or cfg.prepare.source:
        return
    if not is_complete(cfg.synth):
        report(f"[tvad] synthesizing the benchmark into {cfg.synth.out_dir}")
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))


def ensure_prepared(cfg: Config, report: Report = print) -> Path:
    """The benchmark (rendered if missing) prepared into shards (reused when they exist);
    returns the builder folder."""
    ensure_benchmark(cfg, report)
    return prepare(cfg, report)


def start_run(kind: str, cfg: Config, run_dir: str | Path | None = None) -> Path:
    """`run_dir` (created if needed) or a new `<runs_dir>/<kind>-<time>` folder, holding the
    resolved config.json either way."""
    if not run_dir:
        return new_run_dir(kind, cfg, cfg.runs_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, run_dir / "config.json")
    return run_dir
