"""The main job on the embedded default: synthesize the benchmark if absent, prepare shards
and text annotations, train every detector on it, and evaluate them on the open-set `test`
split and the closed-set `test_seen` split into one report folder.

Detectors: the model-free frame-difference baseline; VLAVAD's S3M on object tracks; T-VAD
(paper 000) on the shipped backbone - stage 1 (AHD), stage 2 (RAE + LoRA, phases A and B) -
with the ablations of its Table 4 (w/o RAE: heatmaps only; w/o AHD: stage 2 without anomaly
prompts) and the plain backbone zero-shot and one-shot (Table 3's protocol, on the open-set
split only); and `demo_detectors`: paper 003's local patterns by default and, on request
(`demo_detectors=local-patterns,vlavad`; longer than the rest of the demo), paper 004's
VLAVAD with its two halves. With both, an ensemble row fuses the three papers' detectors (the
AHD's heatmaps, local patterns, VLAVAD): per-video min-max normalized frame scores summed with
the weights (multiples of 0.1) that give the best unsmoothed frame micro AUC on `val`, whose
anomaly types are neither the training nor the test types (the `ensemble` sweep's rule, at the
demo's sigma 0); its row in metrics.json names the weights.

Report folder: report.md (one comparison table per split and the run facts), metrics.json
(`{"splits": {split: {method: {metric: value}}}, ...}`), ROC curves and heatmap overlays
(tvad-full/), the dialogue transcripts (dialogue_<variant>_<split>.json) and
dialogue_<split>.md (the full model's conversation about the first abnormal videos).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tvad_jax.data.dialogues import read_annotations
from tvad_jax.data.files import check_output_dir
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.fusion import ENSEMBLE_VALIDATION, choose_weights, fuse
from tvad_jax.eval.metrics import frame_auc
from tvad_jax.eval.report import comparison_table
from tvad_jax.eval.tvad import HEATMAP_METRICS, QUESTIONS, ahd_frame_scores, evaluate_model
from tvad_jax.jobs.common import Report, ensure_prepared, start_run
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.local_patterns import local_patterns_scores, train_local_patterns
from tvad_jax.jobs.s3m import evaluate_run, train_s3m
from tvad_jax.jobs.tvad import train_tvad
from tvad_jax.jobs.vlavad import train_vlavad, vlavad_scores
from tvad_jax.models.tvad import load_frozen_backbone, load_model, plain_model
from tvad_jax.runs import environment, machine_summary

# The open-set test split (unseen anomaly types) and the closed-set one (training types).
SPLITS = ("test", "test_seen")
ENSEMBLE = "Ensemble (000 + 003 + 004)"
TITLES = {"test": "Open-set `test` split (anomaly types unseen in training)",
          "test_seen": "Closed-set `test_seen` split (unseen videos of the training types)"}
COLUMNS = (("micro_auc", "micro AUC"), ("macro_auc", "macro AUC"), ("rbdc", "RBDC"),
           ("tbdc", "TBDC"), ("yes_no_accuracy", "Yes/No acc"),
           ("yes_no_balanced_accuracy", "Yes/No bAcc"), ("bleu4_target", "BLEU-4 target"),
           ("bleu4_trajectory", "BLEU-4 trajectory"))
PERCENT = {k: 100.0 for k, _ in COLUMNS if k.startswith(("yes_no_acc", "yes_no_bal"))}


def run_demo(cfg: Config, report: Report = print) -> Path:
    """Run the whole default job and return the report folder."""
    start = time.perf_counter()
    check_output_dir(cfg.runs_dir)
    report(f"[tvad] prepared shards in {ensure_prepared(cfg, report)}")
    run_dir = start_run("demo", cfg)
    s3m_dir = train_s3m(cfg, run_dir / "s3m", report)
    extra_dirs = {name: DETECTORS[name][0](cfg, run_dir / name, report=report)
                  for name in cfg.demo_detectors}
    full = load_model(train_tvad(_variant(cfg, "full"), run_dir / "tvad-full", report=report))
    no_ahd = load_model(train_tvad(_variant(cfg, "no_ahd"), run_dir / "tvad-no_ahd",
                                   report=report))
    # the frozen backbone: `full.backbone` holds the decoder stage 2 adapted
    plain = plain_model(load_frozen_backbone(cfg.tvad.backbone), cfg.tvad.model,
                        cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    variants = (("T-VAD", full, False, run_dir / "tvad-full"),
                ("T-VAD w/o AHD", no_ahd, False, None),
                ("backbone zero-shot (w/o AHD & RAE)", plain, False, None),
                ("backbone one-shot", plain, True, None))
    fused = set(ENSEMBLE_MEMBERS) <= set(extra_dirs)
    if fused:
        val = {name: DETECTORS[name][1](extra_dirs[name], ENSEMBLE_VALIDATION, report)
               for name in ENSEMBLE_MEMBERS}
        parts = ensemble_parts(cfg, full, val, ENSEMBLE_VALIDATION, report)
        weights, val_auc = choose_weights(
            parts, baseline_scores(cfg, ENSEMBLE_VALIDATION, report)[1], per="video")
        report(f"[tvad] ensemble weights (micro AUC {val_auc:.3f} on {ENSEMBLE_VALIDATION}): "
               f"{weights}")
    splits = {}
    for split in SPLITS:
        base, labels = baseline_scores(cfg, split, report)
        s3m = evaluate_run(s3m_dir, split, plot=True, report=report, baseline=(base, labels))
        diff = frame_auc(base, labels)
        rows = {"frame difference": {"micro_auc": diff.micro_auc, "macro_auc": diff.macro_auc},
                "S3M on box tracks": s3m["s3m_sigma0"]}
        scores = {name: DETECTORS[name][1](folder, split, report)
                  for name, folder in extra_dirs.items()}
        for name, detector_scores in scores.items():
            rows.update(extra_rows(name, detector_scores, labels))
        if fused:
            parts = ensemble_parts(cfg, full, scores, split, report)
            auc = frame_auc(fuse(parts, weights, "video"), labels)
            rows[ENSEMBLE] = {"micro_auc": auc.micro_auc, "macro_auc": auc.macro_auc,
                              "weights": weights, f"{ENSEMBLE_VALIDATION}_micro_auc": val_auc}
        for name, model, one_shot, plots in variants:
            if model is plain and split != SPLITS[0]:
                continue      # Table 3's backbone baselines: the open-set split only
            report(f"[tvad] evaluating {name} on {split}")
            rows[name] = evaluate_model(model, cfg, split, one_shot, run_dir, report,
                                        plot_dir=plots, baseline=base)
            if model is full:   # w/o RAE is the full model's AHD alone: the same heatmaps
                rows["T-VAD w/o RAE"] = {"variant": "no_rae",
                                         **{k: rows[name][k] for k in HEATMAP_METRICS}}
        splits[split] = rows
    results = {"splits": splits, "dataset": dataset_summary(cfg.synth.out_dir),
               "wall_s": round(time.perf_counter() - start, 1)}
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    tables = [comparison_table(rows, COLUMNS, title=f"{TITLES.get(split, split)} (synthetic "
                                                    "benchmark)", scale=PERCENT)
              for split, rows in splits.items()]
    notes = ("\nFrame AUC without smoothing; RBDC/TBDC of heatmaps binarized at 0.5; Yes/No "
             "accuracies in %, BLEU-4 on sacrebleu's 0-100 scale (best reference, macro over "
             f"abnormal videos); – = not applicable. Wall time {results['wall_s']:.0f} s on "
             f"{machine_summary(environment())} (environment.json).\n")
    (run_dir / "report.md").write_text("\n\n".join(tables) + notes)
    for split in SPLITS:
        write_dialogue_markdown(run_dir, cfg, split)
    report("\n\n".join(tables))
    report(f"[tvad] demo report in {run_dir}")
    return run_dir


def _local_patterns_scores(run_dir: Path, split: str, report: Report) -> dict:
    return {"local_patterns": local_patterns_scores(run_dir, split, report)[0]}


def _vlavad_scores(run_dir: Path, split: str, report: Report) -> dict:
    return vlavad_scores(run_dir, split, report)[0]


# Per optional detector: its trainer, its scores ({score: {video: [T]}}) and its demo rows
# (row name -> score).
DETECTORS = {
    "local-patterns": (train_local_patterns, _local_patterns_scores,
                       {"Local patterns (003)": "local_patterns"}),
    "vlavad": (train_vlavad, _vlavad_scores,
               {"VLAVAD (SPA + S3M)": "vlavad", "VLAVAD: SPA": "spa",
                "VLAVAD: S3M on answers": "s3m_answers"}),
}


# The ensemble's members beside the AHD: optional detectors, each by its first row (its
# whole method).
ENSEMBLE_MEMBERS = ("local-patterns", "vlavad")


def ensemble_parts(cfg: Config, full, scores: dict, split: str, report: Report) -> dict:
    """{member: {video: [T]}} of a split: the full model's AHD (its heatmaps' frame maxima)
    and the ENSEMBLE_MEMBERS' scores, from `scores` ({detector: its scorer's output})."""
    parts = {"T-VAD (AHD)": ahd_frame_scores(full, cfg, split, report)}
    for name in ENSEMBLE_MEMBERS:
        row, key = next(iter(DETECTORS[name][2].items()))
        parts[row] = scores[name][key]
    return parts


def extra_rows(name: str, scores: dict, labels: dict) -> dict:
    """The demo rows (unsmoothed micro/macro frame AUC) of an optional detector's scores
    (its scorer's output on a split)."""
    aucs = {row: frame_auc(scores[key], labels) for row, key in DETECTORS[name][2].items()}
    return {row: {"micro_auc": a.micro_auc, "macro_auc": a.macro_auc}
            for row, a in aucs.items()}


def _variant(cfg: Config, variant: str) -> Config:
    return dataclasses.replace(cfg, tvad=dataclasses.replace(
        cfg.tvad, model=dataclasses.replace(cfg.tvad.model, variant=variant)))


def write_dialogue_markdown(run_dir: Path, cfg: Config, split: str, count: int = 3) -> Path:
    """dialogue_<split>.md: the full model's answers beside the references, for the first `count`
    abnormal videos of the split (from dialogue_full_<split>.json)."""
    transcript = json.loads((run_dir / f"dialogue_full_{split}.json").read_text())
    abnormal = [row for row in read_annotations(cfg.prepared_dir, split) if row["abnormal"]]
    lines = [f"### T-VAD dialogue transcript ({split})", ""]
    for row in abnormal[:count]:
        lines.append(f"**{row['video']}**")
        for turn, (kind, _) in zip(row["dialogue"], QUESTIONS):
            lines += [f"- Q: {turn['question']}",
                      f"  - T-VAD: {transcript[row['video']][kind]}",
                      f"  - reference: {turn['answers'][0]}"]
        lines.append("")
    path = run_dir / f"dialogue_{split}.md"
    path.write_text("\n".join(lines))
    return path


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
