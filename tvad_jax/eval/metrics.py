"""Frame-level ROC-AUC, micro and macro, with optional Gaussian temporal smoothing.

Micro AUC scores all frames of all videos as one ranking; macro AUC is the mean of per-video
AUCs, each video padded (UBnormal convention) with one normal frame scored 0 and one abnormal
frame scored 1 so that all-normal and all-abnormal videos are scorable. The padding assumes
scores in [0, 1]. AUCs are rank-based (Mann-Whitney U) with average ranks for ties, which
equals the trapezoidal area under the ROC curve.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
from scipy import ndimage

from tvad_jax.data.files import load_npy
from tvad_jax.errors import EvalInputError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of the metric protocol; defaults follow paper 000 §4.1."""

    smoothing_sigma: float = 0.0  # Gaussian temporal smoothing of frame scores, frames; 0 = off
    alpha: float = 0.1  # TBDC: fraction of a track's regions that must be detected
    beta: float = 0.1  # RBDC: IoU at which a detection matches a ground-truth region
    threshold: float = 0.5  # heatmap binarization threshold
    region_score: Literal["max", "mean"] = "max"  # how a region is scored from its heat
    link_iou: float = 0.1  # IoU linking regions of consecutive frames into predicted tracks


@dataclasses.dataclass(frozen=True)
class FrameAucResult:
    """Micro and macro frame AUC and the per-video (padded) AUCs behind the macro mean."""

    micro_auc: float
    macro_auc: float
    per_video: dict[str, float]
    num_frames: int
    sigma: float

    def summary(self) -> dict:
        """The JSON-ready numbers (per-video AUCs left out)."""
        return {"micro_auc": self.micro_auc, "macro_auc": self.macro_auc,
                "num_videos": len(self.per_video), "num_frames": self.num_frames,
                "sigma": self.sigma}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x` [N], tied values sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    new_group = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # [N]
    starts = np.flatnonzero(new_group)  # [G] 0-based first position of each tie group
    counts = np.diff(np.r_[starts, len(x)])  # [G]
    group_rank = starts + (counts + 1) / 2.0  # [G] mean of ranks start+1 .. start+count
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(new_group) - 1]
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of 0/1 `labels` [N] ranked by `scores` [N]."""
    labels, scores = _check_frames(labels, scores, "frames")
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise EvalInputError("ROC-AUC needs both normal and abnormal frames")
    rank_sum = average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def judgment_scores(abnormal: np.ndarray, gap: np.ndarray) -> dict[str, float]:
    """How a yes/no score per video judges the videos: `gap` [N] > 0 means "Yes" (as
    `infer.judgment.judgment_gap`'s), `abnormal` [N] the truth (both kinds present). The AUC of
    the gap, the balanced accuracy of its sign and the rate of "Yes" among abnormal and among
    normal videos."""
    abnormal, gap = np.asarray(abnormal, bool), np.asarray(gap, np.float64)
    says_yes = gap > 0
    yes_abnormal, yes_normal = float(says_yes[abnormal].mean()), float(says_yes[~abnormal].mean())
    return {"yes_no_logit_auc": roc_auc(abnormal.astype(np.int64), gap),
            "yes_no_logit_balanced_accuracy": (yes_abnormal + 1.0 - yes_normal) / 2,
            "yes_rate_abnormal": yes_abnormal, "yes_rate_normal": yes_normal}


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr [M], tpr [M]) from (0, 0), one per distinct score, descending."""
    labels, scores = _check_frames(labels, scores, "frames")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]  # [N]
    tps = np.cumsum(labels[order])[last_of_group]  # [M-1]
    fps = (np.flatnonzero(last_of_group) + 1) - tps
    n_pos, n_neg = tps[-1], fps[-1]
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.r_[0.0, np.zeros(len(fps))]
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.r_[0.0, np.zeros(len(tps))]
    return fpr, tpr


def smooth_scores(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian temporal smoothing of one video's frame scores [T]; sigma 0 returns them."""
    if not 0 <= sigma < np.inf:   # also refuses NaN
        raise EvalInputError(f"smoothing sigma must be >= 0, got {sigma}")
    scores = np.asarray(scores, dtype=np.float64)
    return ndimage.gaussian_filter1d(scores, sigma) if sigma > 0 else scores


def micro_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> float:
    """AUC over all frames of all videos concatenated (videos in sorted name order)."""
    names = _check_videos(scores, labels)
    return roc_auc(np.concatenate([labels[n] for n in names]),
                   np.concatenate([scores[n] for n in names]))


def micro_roc_curve(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr) of all frames concatenated, each video smoothed first."""
    names = _check_videos(scores, labels)
    return roc_curve(np.concatenate([labels[n] for n in names]),
                     np.concatenate([smooth_scores(scores[n], sigma) for n in names]))


def padded_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """One video's AUC after adding a normal frame scored 0 and an abnormal frame scored 1."""
    return roc_auc(np.r_[labels, 0, 1], np.r_[scores, 0.0, 1.0])


def macro_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> float:
    """Mean over videos of the padded per-video AUC."""
    names = _check_videos(scores, labels)
    return float(np.mean([padded_auc(labels[n], scores[n]) for n in names]))


def frame_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
              sigma: float = 0.0) -> FrameAucResult:
    """Micro and macro AUC of per-video frame scores, smoothed per video first when sigma > 0."""
    names = _check_videos(scores, labels)
    smoothed = {n: smooth_scores(scores[n], sigma) for n in names}
    per_video = {n: padded_auc(labels[n], smoothed[n]) for n in names}
    return FrameAucResult(
        micro_auc=micro_auc(smoothed, labels),
        macro_auc=float(np.mean(list(per_video.values()))),
        per_video=per_video,
        num_frames=int(sum(len(labels[n]) for n in names)),
        sigma=float(sigma),
    )


def read_frame_arrays(scores_dir: str | Path, labels_dir: str | Path
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-video score and label arrays from `<video>.npy` files of two folders, validated:
    numeric, non-empty, one per frame, finite scores in [0, 1] and labels 0 or 1."""
    scores = _read_npy_dir(Path(scores_dir))
    labels = _read_npy_dir(Path(labels_dir))
    unpaired = sorted(set(scores) ^ set(labels))
    if unpaired:
        name = unpaired[0]
        have, lack = (scores_dir, labels_dir) if name in scores else (labels_dir, scores_dir)
        raise EvalInputError(f"{Path(have) / (name + '.npy')}: no matching {name}.npy in {lack}")
    for name in sorted(scores):
        where = f"{Path(scores_dir) / (name + '.npy')} vs {Path(labels_dir) / (name + '.npy')}"
        _check_frames(labels[name], scores[name], where)
        _check_probabilities(scores[name], str(Path(scores_dir) / (name + '.npy')))
    return scores, labels


def auc_by_type(scores: list[np.ndarray], labels: list[np.ndarray], types: list[str],
                sigma: float = 0.0) -> dict[str, float]:
    """Micro frame AUC per anomaly type: the frames of that type's abnormal videos together
    with every normal video's frames (smoothed by `sigma` first). `types`: per video its
    anomaly type, "" if normal."""
    normal = [v for v, kind in enumerate(types) if not kind]
    out = {}
    for kind in sorted(set(types) - {""}):
        keep = normal + [v for v, k in enumerate(types) if k == kind]
        out[kind] = frame_auc({str(v): scores[v] for v in keep},
                              {str(v): labels[v] for v in keep}, sigma).micro_auc
    return out


def frame_auc_from_dirs(scores_dir: str | Path, labels_dir: str | Path,
                        sigma: float = 0.0) -> FrameAucResult:
    """`frame_auc` of the `<video>.npy` files in a scores folder and a labels folder."""
    scores, labels = read_frame_arrays(scores_dir, labels_dir)
    return frame_auc(scores, labels, sigma)


def _read_npy_dir(directory: Path) -> dict[str, np.ndarray]:
    if not directory.is_dir():
        raise EvalInputError(f"{directory}: not a folder")
    arrays = {}
    for path in sorted(directory.glob("*.npy")):
        array = load_npy(path)
        if array.ndim != 1:
            raise EvalInputError(f"{path}: expected one value per frame (1-D), got shape "
                                 f"{array.shape}")
        arrays[path.stem] = array
    if not arrays:
        raise EvalInputError(f"{directory}: no <video>.npy files")
    return arrays


def _check_probabilities(scores: np.ndarray, where: str) -> None:
    """Scores lie in [0, 1], as the macro AUC's padding frames (scored 0 and 1) assume."""
    bad = np.flatnonzero((scores < 0) | (scores > 1))
    if len(bad):
        raise EvalInputError(f"{where}: score of frame {bad[0]} is {scores[bad[0]]}, outside "
                             "[0, 1] (the macro AUC pads each video with scores 0 and 1)")


def _check_videos(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
                  ) -> list[str]:
    """Sorted video names after checking both mappings hold the same videos."""
    if set(scores) != set(labels):
        missing = sorted(set(scores) ^ set(labels))
        raise EvalInputError(f"videos with scores but no labels or labels but no scores: "
                             f"{missing}")
    if not scores:
        raise EvalInputError("no videos to score")
    return sorted(scores)


def _check_frames(labels: np.ndarray, scores: np.ndarray, where: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(labels as int [N], scores as float [N]) after checking lengths, values and NaNs."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1 or len(labels) != len(scores):
        raise EvalInputError(f"{where}: labels of shape {labels.shape} but scores of shape "
                             f"{scores.shape}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise EvalInputError(f"{where}: score of frame {bad[0]} is {scores[bad[0]]} "
                             f"({len(bad)} non-finite scores)")
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise EvalInputError(f"{where}: label of frame {bad[0]} is {labels[bad[0]]}, not 0 or 1")
    return labels.astype(np.int64), scores
