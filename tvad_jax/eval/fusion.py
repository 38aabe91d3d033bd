"""Object scores to frame scores, and fusing detectors' frame scores (paper 004 §3.4).

A frame's score is the max over the objects scored in it (papers 003 and 004); an object
scored at frame t speaks for the `span` frames up to t (its crop or clip stride), and frames
no object covers score 0.

    A_s = frame_max(videos, lengths, video, frame, object_scores, span=4)  # objects -> frames
    fused = fuse({"spa": A_s, "s3m": A_t}, {"spa": 1.0, "s3m": 0.1}, per="video")
    weights, auc = choose_weights(parts, labels, per="video")   # on a validation split

VLAVAD's final score is A = Gauss_sigma(A_s + lambda A_t) with both parts min-max normalized
per video; the Gaussian is the evaluation's (`metrics.frame_auc(sigma=...)`), so that every
row of a table is smoothed the same way. `per="split"` normalizes each part over all videos of
the split instead, which keeps the videos comparable for the micro AUC (per-video
normalization makes every video's highest frame score 1, normal videos included). The sum is
divided by the sum of the weights so that fused scores stay in [0, 1], where the macro AUC's
padding expects them (a positive scale: no ranking changes).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from tvad_jax.eval.metrics import frame_auc

NORMALIZATIONS = ("video", "split")
# The split an ensemble's weights are chosen on: the synthetic benchmark's `val`, whose anomaly
# types are neither the training nor the test types.
ENSEMBLE_VALIDATION = "val"


def frame_max(videos: list[str], lengths: Mapping[str, int], video: np.ndarray,
              frame: np.ndarray, values: np.ndarray, span: int) -> dict[str, np.ndarray]:
    """Per-video frame scores [T]: the max of `values` [K] over the rows covering each frame
    (row k, of video `videos[video[k]]`, covers frames frame[k] - span + 1 .. frame[k]);
    0 where no row does."""
    out = {}
    for v, name in enumerate(videos):
        scores = np.zeros(lengths[name], np.float64)
        rows = video == v
        for shift in range(span):
            np.maximum.at(scores, np.maximum(frame[rows] - shift, 0), values[rows])
        out[name] = scores
    return out


def minmax(scores: Mapping[str, np.ndarray], per: str) -> dict[str, np.ndarray]:
    """Per-video frame scores mapped to [0, 1] by their min and max over each video
    (`per="video"`) or over all videos (`per="split"`); a constant range maps to 0."""
    if per not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {per!r}")
    if per == "video":
        return {name: _unit(np.asarray(s, np.float64), np.min(s), np.max(s))
                for name, s in scores.items()}
    values = np.concatenate([np.asarray(s, np.float64) for s in scores.values()])
    lo, hi = values.min(), values.max()
    return {name: _unit(np.asarray(s, np.float64), lo, hi) for name, s in scores.items()}


def _unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def fuse(parts: Mapping[str, Mapping[str, np.ndarray]], weights: Mapping[str, float],
         per: str) -> dict[str, np.ndarray]:
    """sum_p w_p minmax(parts[p]) / sum_p w_p per video; every part must score the same
    videos with the same frame counts."""
    if set(parts) != set(weights):
        raise ValueError(f"parts {sorted(parts)} and weights {sorted(weights)} differ")
    total = float(sum(weights.values()))
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(weights)}")
    names = [set(p) for p in parts.values()]
    if any(n != names[0] for n in names):
        raise ValueError("the parts score different videos")
    normalized = {key: minmax(p, per) for key, p in parts.items()}
    out = {}
    for video in sorted(names[0]):
        shapes = {normalized[k][video].shape for k in parts}
        if len(shapes) != 1:
            raise ValueError(f"{video}: the parts have different frame counts {shapes}")
        out[video] = sum(weights[k] * normalized[k][video] for k in parts) / total
    return out


def choose_weights(parts: Mapping[str, Mapping[str, np.ndarray]],
                   labels: Mapping[str, np.ndarray], per: str, step: float = 0.1,
                   sigma: float = 0.0) -> tuple[dict[str, float], float]:
    """The weights of `fuse` on the simplex grid (multiples of `step` summing to 1) with the
    best frame micro AUC against `labels` (smoothed by `sigma`), and that AUC; of equal AUCs
    the most even weights (largest smallest weight) win."""
    units = round(1 / step)
    if units < 1 or abs(units * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1, got {step}")
    keys = sorted(parts)
    grid = [c for c in itertools.product(range(units + 1), repeat=len(keys)) if sum(c) == units]
    rank = {}
    for counts in grid:
        weights = dict(zip(keys, np.asarray(counts) / units))
        rank[counts] = (frame_auc(fuse(parts, weights, per), labels, sigma).micro_auc,
                        min(counts))
    best = max(grid, key=rank.__getitem__)
    return {k: c / units for k, c in zip(keys, best)}, rank[best][0]
