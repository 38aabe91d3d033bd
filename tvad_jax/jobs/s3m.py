"""S3M as a job: per-object track sequences -> S3M trained on normal tracks -> frame scores.

VLAVAD (paper 004 §3.3) trains S3M, on normal videos only, to predict an object's next L_f
embeddings from its last L_p; the prediction error at test time is the object's temporal
anomaly score and a frame scores the max over its objects. This job is the named box-track
baseline: the simulator's own object tracks (every object's per-frame boxes in the video's
sidecar `{name}.json`) stand in for the detector + tracker and the per-frame embedding is the
object's box geometry and motion (`data.track_windows`); VLAVAD itself, on the answers'
embeddings, is `jobs.vlavad`. The model is `models.predictors.TrackPredictor`: it embeds the
features linearly to S3M's width, runs S3M and reads the predicted change back out, added to
the last observed step (an untrained model predicts "nothing changes"). Scores: `eval.s3m`.
Gaussian smoothing (`sigma`, frames) is applied per video by `eval.metrics.frame_auc`, exactly
as for the frame-difference baseline beside it.

    tvad train s3m [--config NAME] [--run-dir DIR] [key=value ...]   -> run folder
    tvad eval run RUN_DIR [--split test] [--plot]                     -> eval_<split>.json/.md

Run folder: config.json, s3m_stats.json (feature statistics of the training split and the
error scale), metrics.jsonl, tensorboard/, checkpoints/<step>/, summary.json; after
`tvad eval run`: eval_<split>.json, eval_<split>.md (roc_<split>.png).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.data.files import check_output_dir
from tvad_jax.data.track_windows import (FEATURES, NUM_FEATURES, feature_stats, make_dataset,
                                         make_windows, read_sidecars, sequences)
from tvad_jax.errors import DataError
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.metrics import frame_auc, micro_roc_curve
from tvad_jax.eval.report import plot_roc, write_summary
from tvad_jax.eval.s3m import anomaly_types, score_videos, window_errors
from tvad_jax.jobs.common import Report, ensure_benchmark_once, finish_run, start_run
from tvad_jax.jobs.config import Config, S3MJobConfig
from tvad_jax.models import s3m
from tvad_jax.models.predictors import TrackPredictor
from tvad_jax.train import distributed
from tvad_jax.train.loop import StageSpec, restore_params, train
from tvad_jax.train.state import merge_params

STATS_FILE = "s3m_stats.json"


def make_spec(job: S3MJobConfig) -> tuple[TrackPredictor, StageSpec]:
    """(model, training stage) of the S3M job."""
    model = TrackPredictor(job.model, NUM_FEATURES)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, job.model.past, NUM_FEATURES), jnp.float32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        del rng  # no dropout
        pred = model.apply({"params": merge_params(trainable, frozen)}, batch["past"])
        loss = s3m.mse_loss(pred, batch["future"])
        # Reference: the error of predicting that nothing changes (the untrained model).
        copy_last = s3m.mse_loss(batch["past"][:, -1:], batch["future"])
        return loss, {"copy_last_mse": copy_last}

    return model, StageSpec(job.train, init_fn, loss_fn)


# ----------------------------------------------------------------------------- train


def train_s3m(cfg: Config, run_dir: str | Path | None = None, report: Report = print) -> Path:
    """Train S3M on `cfg.s3m.train_split` and return the run folder.

    Without `run_dir` a new one is made under `cfg.runs_dir`; with one, training resumes from
    its latest checkpoint if it has any. Feature statistics and the error scale are written
    to `s3m_stats.json` once training ends.
    """
    job = cfg.s3m
    check_output_dir(run_dir or cfg.runs_dir)
    distributed.initialize(job.train.distributed)
    ensure_benchmark_once(cfg, report)
    seqs = sequences(read_sidecars(cfg, job.train_split))
    if not seqs.items:
        raise DataError(cfg.prepare_source, f"split {job.train_split!r} has no object tracks")
    mean, std = feature_stats(seqs)
    windows = make_windows(seqs, mean, std, job.model.past, job.model.future)
    if not len(windows):
        raise DataError(cfg.prepare_source,
                        f"split {job.train_split!r} has no track of at least "
                        f"{job.model.past + job.model.future + 1} frames (L_p + L_f + 1)")
    run_dir = start_run("s3m", cfg, run_dir)
    report(f"[tvad] S3M: {len(windows)} training windows from {len(seqs.items)} track "
           f"segments of {len(seqs.videos)} videos ({job.train_split})")
    model, spec = make_spec(job)
    data = iter(make_dataset(windows, job.batch_size, job.data_seed))
    result = train(spec, data=data, run_dir=run_dir)
    params = merge_params(result.state.params, result.frozen)
    errors = window_errors(model, params, windows, job.score_batch)
    stats = {
        "features": list(FEATURES),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "error_ref": float(np.median(errors)),
        "train_error_mean": float(errors.mean()),
        "train_windows": len(windows),
        "train_segments": len(seqs.items),
        "train_videos": len(seqs.videos),
        "train_split": job.train_split,
    }
    finish_run(run_dir, STATS_FILE, stats)
    return run_dir


# ----------------------------------------------------------------------------- evaluate


@dataclasses.dataclass
class S3MRun:
    """A finished run, loaded: its config, model, params, statistics, checkpoint step."""

    path: Path
    config: Config
    model: TrackPredictor
    params: Any
    stats: dict
    step: int


def load_run(run_dir: str | Path) -> S3MRun:
    """Load a run folder of `tvad train s3m`; bad folders raise a DataError naming the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run folder not found")
    config_path, stats_path = run_dir / "config.json", run_dir / STATS_FILE
    ckpt_dir = run_dir / "checkpoints"
    if not config_path.is_file():
        raise DataError(config_path, "missing: not a run folder of `tvad train s3m`")
    if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise DataError(ckpt_dir, "no checkpoint: not a finished run of `tvad train s3m`")
    if not stats_path.is_file():
        raise DataError(stats_path, "missing: the run did not finish training (the feature "
                                    "statistics are written at its end)")
    try:
        cfg = config_lib.load(Config, config_path)
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(config_path, f"not a config of this version ({err})") from err
    stats = json.loads(stats_path.read_text())
    job = cfg.s3m
    model, spec = make_spec(job)
    try:
        params, step = restore_params(spec, ckpt_dir, which="latest")
    except FileNotFoundError:
        raise DataError(ckpt_dir, "no complete checkpoint") from None
    return S3MRun(run_dir, cfg, model, params, stats, step)


def evaluate_run(run_dir: str | Path, split: str | None = None, plot: bool = False,
                 report: Report = print, baseline: tuple[dict, dict] | None = None) -> dict:
    """Frame AUC (micro/macro) of a finished run on a split, beside the frame-difference
    baseline on the same videos (`baseline`: its (scores, labels) when already computed);
    written to `eval_<split>.json/.md` in the run folder (and `roc_<split>.png` with `plot`)."""
    run = load_run(run_dir)
    cfg = run.config
    split = split or cfg.s3m.eval_split
    sidecars = read_sidecars(cfg, split)
    scores, windows = score_videos(run.model, run.params, run.stats, sidecars,
                                   cfg.s3m.score_batch)
    base, labels = baseline or baseline_scores(cfg, split, report)
    if set(base) != set(scores):
        raise DataError(cfg.prepare_source, f"split {split!r}: the sidecars and the videos "
                                            "name different sets of videos")
    for name in scores:
        if len(scores[name]) != len(labels[name]):
            raise DataError(cfg.prepare_source, f"{name}: sidecar says {len(scores[name])} "
                                                f"frames, the video has {len(labels[name])}")
    sigmas = sorted({0.0, float(cfg.s3m.sigma)})
    results: dict[str, Any] = {}
    curves = {}
    for method, method_scores in (("s3m", scores), ("frame_difference", base)):
        for sigma in sigmas:
            auc = frame_auc(method_scores, labels, sigma)
            results[f"{method}_sigma{sigma:g}"] = {"micro_auc": auc.micro_auc,
                                                   "macro_auc": auc.macro_auc}
            if plot and sigma == sigmas[-1]:
                fpr, tpr = micro_roc_curve(method_scores, labels, sigma)
                curves[f"{method} (sigma {sigma:g})"] = (fpr, tpr, auc.micro_auc)
    # Per anomaly type: the videos acting it out plus every normal video, micro AUC.
    types = {name: anomaly_types(sidecar) for name, sidecar in sidecars}
    normal = [n for n, t in types.items() if not t]
    sigma = sigmas[-1]
    per_type = {}
    for kind in sorted(set().union(*types.values())):
        subset = normal + [n for n, t in types.items() if kind in t]
        sub_labels = {n: labels[n] for n in subset}
        if not any(sub_labels[n].any() for n in subset) or not normal:
            continue
        per_type[kind] = {
            "videos": len(subset) - len(normal),
            "s3m_micro_auc": frame_auc({n: scores[n] for n in subset}, sub_labels,
                                       sigma).micro_auc,
            "frame_difference_micro_auc": frame_auc({n: base[n] for n in subset}, sub_labels,
                                                    sigma).micro_auc,
        }
    results[f"per_anomaly_type_sigma{sigma:g}"] = per_type
    all_labels = np.concatenate([labels[n] for n in sorted(labels)])
    results.update({
        "split": split,
        "videos": len(labels),
        "frames": int(all_labels.size),
        "abnormal_frames": int(all_labels.sum()),
        "frames_scored_by_s3m": int(sum(int((s > 0).sum()) for s in scores.values())),
        "windows": len(windows),
        "checkpoint_step": run.step,
    })
    write_summary(run.path, f"eval_{split}", results)
    if plot:
        plot_roc(curves, run.path / f"roc_{split}.png", title=f"Frame-level ROC ({split})")
    return results
