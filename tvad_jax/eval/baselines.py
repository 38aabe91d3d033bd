"""Model-free baselines that every learned detector must beat on the same data."""
from __future__ import annotations

import numpy as np

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
