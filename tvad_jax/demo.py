"""The main job on the embedded default: synthesize the benchmark if absent, prepare shards
and text annotations, and evaluate every available detector on the open-set test split into
one report folder.

Today the detectors are the model-free baselines; the T-VAD stages join this report as they
land (see the README's "not done yet").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tvad_jax.data.prepare import prepare
from tvad_jax.data.readers import iter_records, make_reader
from tvad_jax.data.synthetic.generate import is_complete, synthesize
from tvad_jax.eval.baselines import frame_difference_scores
from tvad_jax.eval.metrics import frame_auc, micro_roc_curve
from tvad_jax.eval.report import markdown_table, plot_roc
from tvad_jax.runs import new_run_dir, progress


def run_demo(cfg, report=print) -> Path:
    """Run the whole default job and return the report folder."""
    run_dir = new_run_dir("demo", cfg, cfg.runs_dir)
    if is_complete(cfg.synth):
        report(f"[tvad] synthetic benchmark up to date in {cfg.synth.out_dir}")
    else:
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))
    prepared = prepare(cfg, report)
    report(f"[tvad] prepared shards in {prepared}")
    results, curves = {}, {}
    scores, labels = baseline_scores(cfg, "test", report)
    for sigma in (0.0, 3.0):
        name = f"frame_difference_sigma{sigma:g}"
        result = frame_auc(scores, labels, sigma)
        results[name] = {"micro_auc": result.micro_auc, "macro_auc": result.macro_auc,
                         "frames": result.num_frames}
        fpr, tpr = micro_roc_curve(scores, labels, sigma)
        curves[name] = (fpr, tpr, result.micro_auc)
    results["dataset"] = dataset_summary(cfg.synth.out_dir)
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, title="Open-set test split (synthetic benchmark)")
    (run_dir / "report.md").write_text(table)
    plot_roc(curves, run_dir / "roc_test.png")
    report(table)
    report(f"[tvad] demo report in {run_dir}")
    return run_dir


def baseline_scores(cfg, split: str, report=print):
    """Frame-difference scores and frame labels of every video of a split."""
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    scores, labels = {}, {}
    records = iter_records(reader, split, cfg.prepare.skip_bad, report)
    for record in progress(records, f"frame difference ({split})",
                           len(reader.video_names(split)), "video"):
        scores[record.name] = frame_difference_scores(record.frames)
        labels[record.name] = record.labels.astype(np.int64)
    return scores, labels


def dataset_summary(root: str) -> dict:
    """Videos, abnormal videos, abnormal frame share and anomaly types per split."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    frames = manifest["config"]["num_frames"]
    summary = {}
    for split in sorted({v["split"] for v in manifest["videos"]}):
        videos = [v for v in manifest["videos"] if v["split"] == split]
        abnormal = [v for v in videos if v["anomaly_types"]]
        summary[split] = {
            "videos": len(videos), "abnormal_videos": len(abnormal),
            "abnormal_frame_share": sum(v["abnormal_frames"] for v in videos) /
            (frames * len(videos)),
            "anomaly_types": ",".join(sorted({t for v in abnormal for t in v["anomaly_types"]})),
        }
    return summary
