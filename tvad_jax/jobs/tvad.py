"""`tvad train tvad` and `tvad eval run` for T-VAD runs: the two stages in one run folder, the
exported model, and its evaluation beside the frame-difference baseline.

    model_dir = train_tvad(cfg)              # stage 1, then stage 2; exports <run>/model
    model = load_model(model_dir)            # models.tvad: detection, dialogue, evaluation
    results = evaluate_tvad_run(run_dir, "test")

Run folder: config.json, stage1/ and stage2-{A,B}/ (engine runs: checkpoints, metrics.jsonl,
TensorBoard events, summary.json), model/ (the exported T-VAD model, `models.tvad.save_model`)
and, after evaluation, eval_<split>.json/.md.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.data.files import check_output_dir
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.metrics import frame_auc
from tvad_jax.eval.report import write_summary
from tvad_jax.eval.tvad import evaluate_model
from tvad_jax.jobs.common import Report, ensure_prepared_once, start_run
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.tvad_stages import train_stage1, train_stage2, val_judgment_truth
from tvad_jax.models import backbone_io
from tvad_jax.models.family import LLAVA, family
from tvad_jax.models.tvad import (MODEL_FILE, FrozenBackbone, TVADModel, load_frozen_backbone,
                                  load_model, plain_model, reading_layers, save_model)
from tvad_jax.train import distributed


def check_fits(backbone: FrozenBackbone, cfg: Config) -> None:
    """The backbone must take the prepared frames as they are."""
    (h, w), frames = backbone.cfg.vision.frame_size, (cfg.prepare.height, cfg.prepare.width)
    if frames != (h, w):
        raise ConfigError(f"the backbone {backbone.path} takes {h}x{w} frames (height x "
                          f"width), the prepared data is {frames[0]}x{frames[1]}: set "
                          "tvad.backbone to a matching checkpoint or prepare.height/width")


def tuned_backbone(backbone: FrozenBackbone, vision: dict, directory: Path) -> FrozenBackbone:
    """The backbone with its vision tower replaced, saved as a backbone folder (so that the
    feature caches, the exported model and evaluation all see the tuned tower; by process 0)."""
    params = dict(backbone.params, vision=vision)
    if jax.process_index() == 0:
        backbone_io.save_backbone(directory, backbone.cfg, params, backbone.tokenizer,
                                  text_tokenizer=backbone.text_tokenizer)
    distributed.barrier("tuned-backbone-saved")
    return load_frozen_backbone(directory)


def train_tvad(cfg: Config, run_dir: str | Path | None = None,
               stage1_from: str | Path | None = None, report: Report = print) -> Path:
    """`tvad train tvad`: stage 1 (unless the variant has no AHD, or `stage1_from` names a
    T-VAD model folder whose AHD to reuse), then stage 2 (unless the variant is "no_rae");
    the model is exported to <run>/model. Returns the model folder.

    On several processes (`tvad.stage1.train.distributed` or TVAD_COORDINATOR_ADDRESS & co.)
    every stage trains data-parallel over the global mesh, each process loading its part of
    every batch; process 0 prepares the data and writes the run's files."""
    job = cfg.tvad
    if job.model.variant == "plain":
        raise ConfigError("tvad.model.variant=plain: the plain backbone is not trained; "
                          "evaluate it with `tvad eval backbone`")
    if job.stage1.train_vision and job.stage1.abnormal_repeat != 1:
        raise ConfigError("tvad.stage1.abnormal_repeat oversamples cached clips; with "
                          "tvad.stage1.train_vision=true the clips come from the shards and "
                          "are not oversampled: set abnormal_repeat=1")
    check_output_dir(run_dir or cfg.runs_dir)
    distributed.initialize(job.stage1.train.distributed)
    ensure_prepared_once(cfg, report)
    backbone = reading_layers(load_frozen_backbone(job.backbone),  # inputs checked before
                              job.model.feature_layers)            # any output
    check_fits(backbone, cfg)
    if job.stage1.train_vision and family(backbone.cfg) is not LLAVA:
        raise ConfigError(f"tvad.stage1.train_vision=true needs a ViT backbone; "
                          f"{backbone.path} is {family(backbone.cfg).name}")
    reused = None
    if stage1_from:
        lender = load_model(stage1_from)
        if lender.backbone.cfg.vision.layer_indices != backbone.cfg.vision.layer_indices:
            raise ConfigError(f"{stage1_from}: its AHD reads vision layers "
                              f"{lender.backbone.cfg.vision.layer_indices}, this run's "
                              f"{backbone.cfg.vision.layer_indices} (tvad.model.feature_layers)")
        reused = lender.params
    if job.model.variant != "no_rae":
        val_judgment_truth(cfg)
    run_dir = start_run(f"tvad-{job.model.variant}", cfg, run_dir)
    stage1 = None
    if job.model.has_ahd or job.model.anomaly_prompts:
        if reused is not None:
            stage1 = reused
            report(f"[tvad] stage 1: reusing the AHD of {stage1_from}")
        else:
            stage1 = train_stage1(cfg, backbone, run_dir / "stage1", report)
        if "vision" in stage1:        # the train_vision upper bound: a tuned backbone
            backbone = tuned_backbone(backbone, stage1.pop("vision"), run_dir / "backbone")
            report(f"[tvad] stage 1 tuned the vision tower: backbone saved in {backbone.path}")
    tcfg = job.model.for_backbone(backbone.cfg)
    if tcfg.variant == "no_rae":
        model = TVADModel(tcfg, backbone, {"ahd": stage1["ahd"], "text": stage1["text"]},
                          job.stage1.view, job.stage2.view)
    else:
        model = train_stage2(cfg, backbone, stage1, run_dir, report)
    out = run_dir / "model"
    if jax.process_index() == 0:
        save_model(out, dataclasses.replace(model, resample=cfg.prepare.resample))
    distributed.barrier("model-saved")
    report(f"[tvad] T-VAD model ({tcfg.variant}) in {out}")
    return out


def is_tvad_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "model" / MODEL_FILE).is_file()


def evaluate_tvad_run(run_dir: str | Path, split: str | None = None, plot: bool = False,
                      report: Report = print, one_shot: bool = False) -> dict:
    """`evaluate_model` on a run's exported model, beside the frame-difference baseline on the
    same videos; writes eval_<split>.json/.md (and roc_<split>.png, heatmap overlays with
    `plot`) into the run folder."""
    run_dir = Path(run_dir)
    cfg = config_lib.load(Config, run_dir / "config.json")
    split = split or cfg.tvad.eval_split
    model = load_model(run_dir / "model")
    base, labels = baseline_scores(cfg, split, report)
    results = evaluate_model(model, cfg, split, one_shot, run_dir, report,
                             plot_dir=run_dir if plot else None, baseline=base)
    auc = frame_auc(base, labels)
    results.update(split=split, frame_difference_micro_auc=auc.micro_auc,
                   frame_difference_macro_auc=auc.macro_auc)
    write_summary(run_dir, f"eval_{split}", results)
    return results


def evaluate_backbone(cfg: Config, split: str, one_shot: bool = False,
                      report: Report = print) -> dict:
    """`tvad eval backbone`: the plain backbone on the dialogue (paper 000 Table 3's zero- or
    one-shot protocol) in a new run folder (eval_<split>.json/.md)."""
    check_output_dir(cfg.runs_dir)
    backbone = load_frozen_backbone(cfg.tvad.backbone)
    check_fits(backbone, cfg)
    run_dir = start_run("eval-backbone", cfg)
    model = plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    summary = evaluate_model(model, cfg, split, one_shot, run_dir, report)
    write_summary(run_dir, f"eval_{split}", summary)
    return summary
