"""Plumbing every job shares: the benchmark and its shards, the run folder, the report line.

    use_kernels(cfg)                      # the config's attention and weight-gradient forms
    ensure_prepared(cfg, report)          # render the benchmark if missing, prepare shards
    run_dir = start_run("tvad-full", cfg, run_dir)   # given or new folder, with config.json
    run_dir, cfg, stats = finished_run(run_dir, "local_stats.json", "local-patterns")
    results = frame_auc_rows(cfg, {"local_patterns": scores, "frame_difference": base},
                             labels, sigma, typed="local_patterns")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.data.files import write_text_atomic
from tvad_jax.data.prepare import prepare
from tvad_jax.data.readers import source_reader
from tvad_jax.data.synthetic.generate import is_complete, synthesize
from tvad_jax.errors import DataError
from tvad_jax.eval.metrics import auc_by_type, frame_auc
from tvad_jax.eval.s3m import anomaly_types
from tvad_jax.jobs.config import Config
from tvad_jax.models import attention, layers
from tvad_jax.runs import new_run_dir, progress, write_run_files
from tvad_jax.train import distributed

Report = Callable[[str], None]


def use_kernels(cfg: Config) -> None:
    """Make the config's kernel choices the process's: the attention implementation and how
    linear layers differentiate their kernels."""
    attention.set_default(cfg.attention)
    layers.set_weight_grad(cfg.weight_grad)


def ensure_benchmark(cfg: Config, report: Report = print) -> None:
    """Render the synthetic benchmark if the config reads it and it is missing."""
    if cfg.prepare.layout != "synthetic" or cfg.prepare.source:
        return
    if not is_complete(cfg.synth):
        report(f"[tvad] synthesizing the benchmark into {cfg.synth.out_dir}")
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))


def ensure_benchmark_once(cfg: Config, report: Report = print) -> None:
    """`ensure_benchmark` by process 0 alone while the others wait (one process: the same)."""
    if jax.process_index() == 0:
        ensure_benchmark(cfg, report)
    distributed.barrier("benchmark")


def ensure_prepared(cfg: Config, report: Report = print) -> Path:
    """The benchmark (rendered if missing) prepared into shards (reused when they exist);
    returns the builder folder."""
    ensure_benchmark(cfg, report)
    return prepare(cfg, report)


def ensure_prepared_once(cfg: Config, report: Report = print) -> None:
    """`ensure_prepared` by process 0 alone while the others wait (one process: the same)."""
    if jax.process_index() == 0:
        ensure_prepared(cfg, report)
    distributed.barrier("prepared")


def start_run(kind: str, cfg: Config, run_dir: str | Path | None = None) -> Path:
    """`run_dir` (created if needed) or a new `<runs_dir>/<kind>-<time>` folder, holding the
    resolved config.json and environment.json either way. In a multi-process job process 0
    writes them, and the folder must be named (the processes cannot agree on a new one's time
    stamp)."""
    if not run_dir:
        if jax.process_count() > 1:
            raise ConfigError(f"a {jax.process_count()}-process {kind} run needs its run "
                              "folder named (--run-dir)")
        return new_run_dir(kind, cfg, cfg.runs_dir)
    run_dir = Path(run_dir)
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_files(run_dir, cfg)
    distributed.barrier(f"run-started-{kind}")
    return run_dir


def finish_run(run_dir: Path, stats_file: str, stats: dict) -> None:
    """Write the run's statistics file, last and whole (process 0), and wait until every
    process gets here: when this returns, the run is finished for all of them."""
    if jax.process_index() == 0:
        write_text_atomic(run_dir / stats_file, json.dumps(stats, indent=2) + "\n")
    distributed.barrier(f"finished-{stats_file}")


def finished_run(run_dir: str | Path, stats_file: str, command: str
                 ) -> tuple[Path, Config, dict]:
    """(folder, config, statistics) of a run of `tvad train <command>` whose statistics file
    (written last) exists; a DataError naming the missing file otherwise."""
    run_dir = Path(run_dir)
    stats_path = run_dir / stats_file
    if not stats_path.is_file():
        raise DataError(stats_path, f"missing: not a finished run of `tvad train {command}`")
    cfg = config_lib.load(Config, run_dir / "config.json")
    return run_dir, cfg, json.loads(stats_path.read_text())


def frame_auc_rows(cfg: Config, methods: Mapping[str, Mapping[str, np.ndarray]],
                   labels: Mapping[str, np.ndarray], sigma: float, typed: str
                   ) -> dict[str, Any]:
    """{method: {"micro_auc", "macro_auc"}} of every method's frame scores (smoothed by
    sigma), and "per_anomaly_type": the micro AUC of `methods[typed]` per anomaly type of the
    split's videos (their sidecars say which)."""
    results: dict[str, Any] = {}
    for method, scores in methods.items():
        auc = frame_auc(scores, labels, sigma)
        results[method] = {"micro_auc": auc.micro_auc, "macro_auc": auc.macro_auc}
    reader = source_reader(cfg)
    names = sorted(labels)
    types = [",".join(sorted(anomaly_types(reader.read_sidecar(n)))) for n in names]
    results["per_anomaly_type"] = auc_by_type([methods[typed][n] for n in names],
                                              [labels[n] for n in names], types, sigma)
    return results
