"""T-VAD stage 1 (the AHD alone) under different pixel losses: which one localizes.

    .venv/bin/python -m experiments.tvad_stage1 [--config default] \
        [--settings paper,balanced,...] [--splits test,test_seen] [key=value ...]

Abnormal cells are about 0.1-1% of the training cells, so the paper's pixel cross-entropy keeps
the abnormal probability below 0.5 almost everywhere and binarizing at 0.5 finds no region.
Each setting trains stage 1 (`tvad.model.variant=no_rae`) with its `tvad.stage1.*` overrides
on the same feature cache and scores the heatmaps on every split: micro/macro frame AUC and
RBDC/TBDC at the protocol's 0.5, and the micro AUC per anomaly type (each type's abnormal
videos with all normal videos of the split: which types the AHD finds). Prints one markdown
table and writes `stage1.json` and `stage1.md` into a run folder under `runs_dir`; each
setting's T-VAD run sits inside it.
Add `tvad.stage1.train_vision=true` for the upper bound with a trainable vision tower (about
25 minutes at the default size on 2 cores, where the cached features take under a minute).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.pipeline import split_names
from tvad_jax.eval.metrics import auc_by_type
from tvad_jax.eval.tvad import frame_labels, heatmap_metrics
from tvad_jax.infer.features import feature_cache
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.tvad import train_tvad
from tvad_jax.models.tvad import TVADModel, load_model
from tvad_jax.runs import new_run_dir

# name -> `tvad.stage1.*` overrides
SETTINGS = {
    "paper": ["target=area", "abnormal_weight=1", "focal_gamma=0", "abnormal_repeat=1"],
    "max": ["target=max", "abnormal_weight=1", "focal_gamma=0", "abnormal_repeat=1"],
    "balanced": ["target=max", "abnormal_weight=10", "focal_gamma=0", "abnormal_repeat=1"],
    "focal": ["target=max", "abnormal_weight=10", "focal_gamma=2", "abnormal_repeat=1"],
    "frame": ["target=max", "abnormal_weight=10", "focal_gamma=2", "abnormal_repeat=1",
              "frame_weight=1"],
    "oversampled": ["target=max", "abnormal_weight=4", "focal_gamma=0", "abnormal_repeat=4"],
    "balanced-acc2": ["target=max", "abnormal_weight=10", "focal_gamma=0", "abnormal_repeat=1",
                      "train.optim.accumulation_steps=2"],
}
METRICS = ("micro_auc", "macro_auc", "rbdc", "tbdc", "detections")


def run(cfg: Config, settings: list[str], splits: list[str]) -> dict:
    """Train and score one stage-1 run per setting; {setting: {split: metrics}}."""
    report = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    root = new_run_dir("stage1", cfg, cfg.runs_dir)
    results = {}
    for name in settings:
        overrides = ["tvad.model.variant=no_rae"] + [f"tvad.stage1.{o}" for o in SETTINGS[name]]
        model = load_model(train_tvad(config_lib.apply_overrides(cfg, overrides),
                                      root / name, report=report))
        results[name] = {split: score(model, cfg, split, report) for split in splits}
    (root / "stage1.json").write_text(json.dumps(results, indent=2) + "\n")
    (root / "stage1.md").write_text(markdown(results))
    report(f"[tvad] stage-1 study in {root}")
    return results


def score(model: TVADModel, cfg: Config, split: str, report) -> dict:
    """METRICS of the model's heatmaps on a split, and {"auc_by_type": {type: micro AUC}}."""
    cache = feature_cache(cfg, model.backbone, split, model.clip_view, report)
    heat = heatmap_metrics(model, cfg, split, cache, report)
    labels = frame_labels(cache, cache.meta["lengths"])
    return {**{k: heat.metrics[k] for k in METRICS},
            "auc_by_type": auc_by_type(heat.scores, labels, video_types(cfg, split))}


def video_types(cfg: Config, split: str) -> list[str]:
    """Per video of a prepared split (in its order): its anomaly types joined by "+", "" for
    a normal video (from the synthetic benchmark's manifest)."""
    manifest = json.loads((Path(cfg.synth.out_dir) / "manifest.json").read_text())
    types = {v["name"]: "+".join(v["anomaly_types"]) for v in manifest["videos"]}
    return [types[name] for name in split_names(cfg.prepared_dir, split)]


def markdown(results: dict) -> str:
    """The study's table, then one of the micro AUC per anomaly type."""
    splits = list(next(iter(results.values())))
    head = " | ".join(f"{s} {m}" for s in splits for m in METRICS[:4])
    lines = [f"| setting | overrides | {head} |", "|---" * (2 + 4 * len(splits)) + "|"]
    for name, per_split in results.items():
        cells = " | ".join(f"{per_split[s][m]:.3f}" for s in splits for m in METRICS[:4])
        lines.append(f"| {name} | {' '.join(SETTINGS[name])} | {cells} |")
    columns = [(s, t) for s in splits for t in next(iter(results.values()))[s]["auc_by_type"]]
    lines += ["", "| setting | " + " | ".join(f"{s} {t}" for s, t in columns) + " |",
              "|---" * (1 + len(columns)) + "|"]
    for name, per_split in results.items():
        cells = " | ".join(f"{per_split[s]['auc_by_type'][t]:.3f}" for s, t in columns)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--splits", default="test,test_seen")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    settings = [s for s in args.settings.split(",") if s]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    results = run(cfg, settings, [s for s in args.splits.split(",") if s])
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
