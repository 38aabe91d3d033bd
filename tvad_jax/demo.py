"""The main job on the embedded default: synthesize the benchmark if absent, prepare shards
and text annotations, train every detector that exists on it, and evaluate them on the
open-set test split into one report folder.

Today the detectors are the model-free frame-difference baseline and VLAVAD's S3M on object
tracks; the T-VAD stages join this report as they land (see the README's "not done yet").
"""
from __future__ import annotations

import json
from pathlib import Path

from tvad_jax.data.prepare import prepare
from tvad_jax.data.synthetic.generate import is_complete, synthesize
from tvad_jax.eval.report import markdown_table
from tvad_jax.runs import new_run_dir, progress
from tvad_jax.stages.s3m import evaluate_run, train_s3m


def run_demo(cfg, report=print) -> Path:
    """Run the whole default job and return the report folder."""
    run_dir = new_run_dir("demo", cfg, cfg.runs_dir)
    if is_complete(cfg.synth):
        report(f"[tvad] synthetic benchmark up to date in {cfg.synth.out_dir}")
    else:
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))
    prepared = prepare(cfg, report)
    report(f"[tvad] prepared shards in {prepared}")
    s3m_dir = train_s3m(cfg, run_dir / "s3m", report)
    results = evaluate_run(s3m_dir, "test", plot=True, report=report)
    results["dataset"] = dataset_summary(cfg.synth.out_dir)
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, title="Open-set test split (synthetic benchmark)")
    (run_dir / "report.md").write_text(table)
    report(table)
    report(f"[tvad] demo report in {run_dir}")
    return run_dir


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
