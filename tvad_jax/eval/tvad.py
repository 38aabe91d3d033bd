"""Evaluation of T-VAD models on a prepared split (paper 000 §4.1's protocol).

Heatmap metrics (variants with an AHD): frame scores = the max of each tubelet's heatmap over
the patch grid, micro/macro frame AUC; heatmaps upsampled to frame size, binarized at 0.5 into
regions (`data.regions`) scored by their max heat -> RBDC/TBDC (alpha 0.1, IoU 0.1) against
the split's ground-truth tracks. Text metrics (variants with a decoder that was
asked): the four-turn dialogue of every video (one KV cache per batch); Yes/No accuracy and
balanced accuracy of the judgment turn (the generated answer normalized to yes/no: no
threshold anywhere), BLEU-4 (best reference, macro over videos) of the target and trajectory
answers of abnormal videos, and the time answers kept in the transcript.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from tvad_jax.data.annotate import (APPEARANCE_QUESTION, JUDGMENT_QUESTION, TIME_QUESTION,
                                    TRAJECTORY_QUESTION)
from tvad_jax.data.dialogues import question_length, read_annotations
from tvad_jax.data.pipeline import open_split, scatter_clips, split_names
from tvad_jax.data.regions import heatmap_regions, scale_boxes
from tvad_jax.eval import rbdc as rbdc_lib
from tvad_jax.eval.metrics import frame_auc, micro_roc_curve
from tvad_jax.eval.report import plot_heatmap_overlay, plot_roc
from tvad_jax.eval.text_metrics import text_scores
from tvad_jax.infer.dialogue import Dialogue
from tvad_jax.infer.features import FeatureCache, feature_cache
from tvad_jax.infer.heatmaps import decoder_view, video_heatmaps
from tvad_jax.models.ahd import upsample
from tvad_jax.models.tvad import TVADModel


def frame_labels(cache: FeatureCache, lengths) -> list[np.ndarray]:
    """Per-video frame labels from the cached clip labels."""
    labels = cache.column("labels").astype(np.float32)                 # C, T
    view = cache.meta["view"]
    return scatter_clips(labels, cache.column("video_index"), cache.column("start"), lengths,
                         tubelet=1, frame_step=view["frame_step"], reduce="max")


def heatmap_auc(maps: list[np.ndarray], cache: FeatureCache) -> tuple[dict, list[np.ndarray]]:
    """({micro_auc, macro_auc}, per-video frame scores) of per-video heatmaps, a frame's
    score being its max heat over the patch grid."""
    scores = [m.reshape(len(m), -1).max(axis=1) for m in maps]
    labels = frame_labels(cache, cache.meta["lengths"])
    keys = [str(i) for i in range(len(maps))]
    result = frame_auc(dict(zip(keys, scores)), dict(zip(keys, labels)), sigma=0.0)
    return {"micro_auc": result.micro_auc, "macro_auc": result.macro_auc}, scores


# (answer type in the references, question) in the paper's order
QUESTIONS = (("yes_no", JUDGMENT_QUESTION), ("target", APPEARANCE_QUESTION),
             ("trajectory", TRAJECTORY_QUESTION), ("time", TIME_QUESTION))
_TURN_TYPE = {"judgment": "yes_no", "target": "target", "trajectory": "trajectory",
              "time": "time"}


# The keys of `HeatmapResult.metrics`.
HEATMAP_METRICS = ("micro_auc", "macro_auc", "rbdc", "tbdc", "detections", "gt_tracks")


@dataclasses.dataclass
class HeatmapResult:
    metrics: dict
    scores: list[np.ndarray]      # per video [n] frame scores
    maps: list[np.ndarray]        # per video [n, h, w] patch heatmaps


class RegionScorer:
    """RBDC/TBDC of per-video patch heatmaps of a prepared split, binarized at 0.5 after
    upsampling to frame size, against the split's ground-truth tracks (one per annotated
    anomalous object, as the datasets' track files give them; read once, boxes scaled from
    the source videos to the prepared frames)."""

    def __init__(self, prepared_dir: str | Path, split: str, lengths: list[int]):
        source, _ = open_split(prepared_dir, split)
        self.tracks, self.sizes = [], []
        for v in range(len(lengths)):
            record = source[v]
            size = tuple(np.asarray(record["masks"]).shape[1:])           # prepared H, W
            rows = np.asarray(record["tracks"], np.float64).reshape(-1, 6)
            rows[:, 2:] = scale_boxes(rows[:, 2:], tuple(record["source_size"]), size)
            self.tracks.append(rows)
            self.sizes.append(size)
        self.num_frames = int(sum(lengths))
        self._resize = jax.jit(upsample, static_argnums=1)

    def __call__(self, maps: list[np.ndarray]) -> rbdc_lib.RbdcTbdcResult:
        detections = [heatmap_regions(np.asarray(self._resize(m, size)), threshold=0.5)
                      for m, size in zip(maps, self.sizes)]
        return rbdc_lib.rbdc_tbdc(rbdc_lib.tracks_from_rows(self.tracks),
                                  rbdc_lib.detections_from_rows(detections), self.num_frames)


def heatmap_metrics(model: TVADModel, cfg, split: str, cache: FeatureCache,
                    report: Callable[[str], None] = print) -> HeatmapResult:
    """Frame AUC (micro, macro) and RBDC/TBDC of the model's AHD on a cached split; scores
    and maps in the split's video order. cfg: the root config (`cfg.prepared_dir`)."""
    maps = video_heatmaps(model.cfg, model.params["ahd"], model.params["text"], cache)
    auc, scores = heatmap_auc(maps, cache)
    result = RegionScorer(cfg.prepared_dir, split, cache.meta["lengths"])(maps)
    metrics = {**auc, "rbdc": result.rbdc,
               "tbdc": result.tbdc, "detections": result.num_detections,
               "gt_tracks": result.num_tracks}
    report(f"[tvad] heatmaps ({model.cfg.variant}, {split}): " + json.dumps(
        {k: round(v, 4) for k, v in metrics.items()}))
    return HeatmapResult(metrics, scores, maps)


def ahd_frame_scores(model: TVADModel, cfg, split: str, report: Callable[[str], None] = print
                     ) -> dict[str, np.ndarray]:
    """The AHD's frame scores ({video: [T]}, a frame's max heat) on a prepared split."""
    cache = feature_cache(cfg, model.backbone, split, model.clip_view, report)
    maps = video_heatmaps(model.cfg, model.params["ahd"], model.params["text"], cache)
    _, scores = heatmap_auc(maps, cache)
    return dict(zip(split_names(cfg.prepared_dir, split), scores))


def references(annotations: list[dict]) -> dict[str, dict]:
    """{video: {answer type: [reference answers]}} of the dialogue turns scored."""
    out = {}
    for row in annotations:
        refs = {}
        for turn in row["dialogue"]:
            kind = _TURN_TYPE[turn["type"]]
            if kind == "yes_no":
                refs[kind] = turn["answers"][0]
            elif kind in ("target", "trajectory"):
                refs[kind] = list(turn["answers"])
        out[row["video"]] = refs
    return out


def dialogue_answers(model: TVADModel, cache, batch_size: int,
                     max_new_tokens: int, example: tuple | None = None) -> list[dict]:
    """The four-turn dialogue with every video of a (one clip per video) `decoder_view`, in
    order."""
    if len(cache) != len(cache.meta["lengths"]):
        raise ValueError(f"{cache.meta['split']}: dialogue needs one clip per video")
    tokenizer = model.backbone.tokenizer
    question_len = max(question_length(tokenizer, q) for _, q in QUESTIONS)
    answers: list[dict] = []
    for lo in range(0, len(cache), batch_size):
        rows = [cache[i] for i in range(lo, min(lo + batch_size, len(cache)))]
        n = len(rows)
        rows += [rows[-1]] * (batch_size - n)     # one compiled shape; extra rows dropped
        visual = np.stack([r["visual"] for r in rows])
        maps = np.stack([r["maps"] for r in rows]) if model.cfg.anomaly_prompts else None
        chat = Dialogue(model, visual, maps, example=example, max_turns=len(QUESTIONS),
                        max_new_tokens=max_new_tokens, question_len=question_len)
        per_turn = {kind: chat.ask(question) for kind, question in QUESTIONS}
        answers += [{kind: per_turn[kind][i] for kind in per_turn} for i in range(n)]
    return answers


def one_shot_example(model: TVADModel, cfg, report: Callable[[str], None] = print) -> tuple:
    """The in-context example: the first abnormal video of the training split with its
    reference dialogue."""
    job = cfg.tvad
    cache = decoder_view(model, cfg, job.train_split, report)
    annotations = read_annotations(cfg.prepared_dir, job.train_split)
    row = next(i for i, a in enumerate(annotations) if a["abnormal"])
    clip = cache[row]
    maps = clip["maps"] if model.cfg.anomaly_prompts else None
    return clip["visual"], maps, annotations[row]["dialogue"]


def text_metrics(model: TVADModel, cfg, split: str, one_shot: bool = False,
                 report: Callable[[str], None] = print) -> tuple[dict, dict]:
    """(scores, transcript {video: {answer type: answer}}) of the dialogue on a split."""
    job = cfg.tvad
    cache = decoder_view(model, cfg, split, report)
    example = one_shot_example(model, cfg, report) if one_shot else None
    answers = dialogue_answers(model, cache, job.eval_batch, job.max_new_tokens, example)
    names = split_names(cfg.prepared_dir, split)
    transcript = dict(zip(names, answers))
    refs = references(read_annotations(cfg.prepared_dir, split))
    predictions = {v: {k: transcript[v][k] for k in refs[v]} for v in refs}
    scores = text_scores(predictions, refs)
    flat = {"yes_no_accuracy": scores["yes_no"]["accuracy"],
            "yes_no_balanced_accuracy": scores["yes_no"]["balanced_accuracy"],
            "yes_no_unparsed": scores["yes_no"]["unparsed"],
            "yes_no_confusion": scores["yes_no"]["confusion"],
            "bleu4_target": scores.get("target", {}).get("bleu4"),
            "bleu4_trajectory": scores.get("trajectory", {}).get("bleu4")}
    report(f"[tvad] dialogue ({model.cfg.variant}{', one-shot' if one_shot else ''}, "
           f"{split}): " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in flat.items()}))
    return flat, transcript


def evaluate_model(model: TVADModel, cfg, split: str, one_shot: bool = False,
                   out_dir: Path | None = None, report: Callable[[str], None] = print,
                   plot_dir: Path | None = None, baseline: dict | None = None) -> dict:
    """Every metric the variant supports; with `out_dir`, also the transcript JSON there;
    with `plot_dir`, the ROC (beside `baseline` frame scores, if given) and overlays."""
    results: dict = {"variant": model.cfg.variant + ("_one_shot" if one_shot else "")}
    if model.cfg.has_ahd:
        cache = feature_cache(cfg, model.backbone, split, model.clip_view, report)
        heat = heatmap_metrics(model, cfg, split, cache, report)
        results.update(heat.metrics)
        if plot_dir is not None:
            write_figures(Path(plot_dir), cfg, split, heat, baseline)
    if model.cfg.variant != "no_rae":
        scores, transcript = text_metrics(model, cfg, split, one_shot, report)
        results.update(scores)
        if out_dir is not None:
            path = Path(out_dir) / f"dialogue_{results['variant']}_{split}.json"
            path.write_text(json.dumps(transcript, indent=2) + "\n")
    return results


# ---------------------------------------------------------------------------------------------
# A finished `tvad train tvad` run

def write_figures(out_dir: Path, cfg, split: str, result: HeatmapResult, base: dict | None,
                  count: int = 3) -> list[Path]:
    """ROC curves (AHD vs frame difference) and heatmap overlays of the `count` abnormal
    frames with the most anomalous pixels, one per video."""

    names = split_names(cfg.prepared_dir, split)
    source, _ = open_split(cfg.prepared_dir, split)
    labels = {n: np.asarray(source[v]["labels"]) for v, n in enumerate(names)}
    scores = dict(zip(names, result.scores))
    curves = {"AHD": (*micro_roc_curve(scores, labels), result.metrics["micro_auc"])}
    if base is not None:
        curves["frame difference"] = (*micro_roc_curve(base, labels),
                                      frame_auc(base, labels).micro_auc)
    paths = [plot_roc(curves, out_dir / f"roc_{split}.png", title=f"Frame-level ROC ({split})")]
    area = [(int(np.asarray(source[v]["masks"]).reshape(len(labels[n]), -1).sum(1).max()), v)
            for v, n in enumerate(names)]
    for _, v in sorted(area, reverse=True)[:count]:
        record = source[v]
        masks = np.asarray(record["masks"])
        t = int(masks.reshape(len(masks), -1).sum(1).argmax())
        paths.append(plot_heatmap_overlay(
            np.asarray(record["frames"][t]), masks[t], result.maps[v][t],
            out_dir / f"heatmap_{names[v]}_{t}.png", title=f"{names[v]}, frame {t}"))
    return paths
