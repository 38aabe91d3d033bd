"""Model-free baselines on the synthetic benchmark: how far raw motion energy gets.

    .venv/bin/python -m experiments.baselines [--config default] [--split test] [key=value ...]

Sweeps the temporal smoothing sigma of the frame-difference score and prints one JSON object
(micro/macro frame AUC per sigma) and a markdown table; the results are also written to a run
folder under `runs_dir`. The synthetic benchmark is built first if it is missing.
"""
from __future__ import annotations

import argparse
import json
import sys

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.metrics import frame_auc
from tvad_jax.eval.report import write_summary
from tvad_jax.jobs.common import ensure_benchmark
from tvad_jax.jobs.config import Config
from tvad_jax.runs import new_run_dir

SIGMAS = (0.0, 3.0, 10.0)


def sweep(cfg: Config, split: str) -> dict:
    """Frame AUC of the frame-difference baseline for each smoothing sigma."""
    ensure_benchmark(cfg, report=lambda m: print(m, file=sys.stderr))
    scores, labels = baseline_scores(cfg, split, report=lambda m: print(m, file=sys.stderr))
    results = {}
    for sigma in SIGMAS:
        result = frame_auc(scores, labels, sigma)
        results[f"frame_difference_sigma{sigma:g}"] = {
            "micro_auc": result.micro_auc, "macro_auc": result.macro_auc,
            "frames": result.num_frames, "videos": len(scores)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--split", default="test")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    results = sweep(cfg, args.split)
    run_dir = new_run_dir("baselines", cfg, cfg.runs_dir)
    write_summary(run_dir, f"frame_difference_{args.split}", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
