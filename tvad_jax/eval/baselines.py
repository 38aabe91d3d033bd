"""Model-free baselines that every learned detector must beat on the same data."""
from __future__ import annotations

import numpy as np

from tvad_jax.data.readers import iter_records, source_reader
from tvad_jax.runs import progress

# ITU-R BT.601 luma weights.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


def frame_difference_scores(frames: np.ndarray) -> np.ndarray:
    """Motion energy: mean absolute luma change from the previous frame, [T, H, W, 3] -> [T].

    The first frame has no predecessor and takes the second frame's score.
    """
    luma = frames.astype(np.float32) @ _LUMA                         # [T, H, W]
    if len(luma) < 2:
        return np.zeros(len(luma), np.float32)
    energy = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2)) / 255.0  # [T-1]
    return np.concatenate([energy[:1], energy])


def baseline_scores(cfg, split: str, report=print):
    """Frame-difference scores and frame labels ({video: [T]} each) of a split of the
    configured dataset, read through its reader (full-resolution frames)."""
    reader = source_reader(cfg)
    scores, labels = {}, {}
    records = iter_records(reader, split, cfg.prepare.skip_bad, report)
    for record in progress(records, f"frame difference ({split})",
                           len(reader.video_names(split)), "video"):
        scores[record.name] = frame_difference_scores(record.frames)
        labels[record.name] = record.labels.astype(np.int64)
    return scores, labels
