"""Object boxes on the patch grid and crops around them (host-side, numpy).

    box_coverage(boxes [K, T, 4], size, patch, tubelet) -> [K, T', g, g]  patch fractions
    box_velocity(boxes [K, T, 4], tubelet) -> [K, T', 2]                   centre motion
    crop_box(boxes [T, 4], width, height[, aspect]) -> (x0, y0, w, h)      crop (square)
    crop_frames(frames [T, H, W, 3], box[, size]) -> [T, H, W, 3]          the crop, resized

Boxes are (x0, y0, x1, y1) inclusive pixels; NaN rows mark frames where the object is absent.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def box_coverage(boxes: np.ndarray, size: int, patch: int, tubelet: int) -> np.ndarray:
    """Fraction of every patch covered by each box, averaged over each tubelet's frames.

    boxes [K, T, 4] (inclusive pixels, NaN rows absent) -> [K, T / tubelet, g, g] with
    g = size / patch."""
    edges = np.arange(0, size + 1, patch, dtype=np.float32)
    lo, hi = edges[:-1], edges[1:]
    present = ~np.isnan(boxes[..., :1])
    b = np.nan_to_num(boxes)

    def overlap(a0, a1):                                                 # [K, T, g]
        return np.clip(np.minimum(a1[..., None] + 1, hi) - np.maximum(a0[..., None], lo),
                       0, None) / patch

    rows, cols = overlap(b[..., 1], b[..., 3]), overlap(b[..., 0], b[..., 2])
    cover = rows[..., :, None] * cols[..., None, :]
    cover *= present[..., None]                                          # [K, T, g, g]
    k, t, g, _ = cover.shape
    return cover.reshape(k, t // tubelet, tubelet, g, g).mean(axis=2).astype(np.float32)


def box_velocity(boxes: np.ndarray, tubelet: int) -> np.ndarray:
    """Mean velocity (dx, dy) of each box's centre over each tubelet, in pixels per frame.

    boxes [K, T, 4] (NaN rows absent) -> [K, T / tubelet, 2]. A frame's velocity is the mean of
    its defined centre differences to the previous and the next frame; a tubelet's is the mean
    over its frames that have one; NaN where none has (the object is absent, or seen in one
    frame only)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2                      # [K, T, 2]
    step = centre[:, 1:] - centre[:, :-1]                               # [K, T-1, 2]
    gap = np.full_like(step[:, :1], np.nan)
    both = np.stack([np.concatenate([gap, step], 1), np.concatenate([step, gap], 1)])
    per_frame = _nanmean(both, axis=0)                                  # [K, T, 2]
    k, t, _ = per_frame.shape
    return _nanmean(per_frame.reshape(k, t // tubelet, tubelet, 2), axis=2).astype(np.float32)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning on all-NaN slices (they stay NaN)."""
    count = (~np.isnan(x)).sum(axis)
    total = np.nansum(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def crop_frames(frames: np.ndarray, box: np.ndarray,
                size: int | tuple[int, int] | None = None) -> np.ndarray:
    """frames [T, H, W, 3] -> the `box` (x0, y0, w, h) resized back to [T, H, W, 3], or to
    `size` (a side, or (height, width); bilinear)."""
    x0, y0, bw, bh = (int(v) for v in box)
    crop = frames[:, y0:y0 + bh, x0:x0 + bw]
    h, w = frames.shape[1:3] if size is None else sides(size)
    return ndimage.zoom(crop, (1, h / bh, w / bw, 1), order=1, grid_mode=True,
                        mode="nearest").astype(frames.dtype)


def sides(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a size given as a side or as (height, width)."""
    return (size, size) if isinstance(size, int) else tuple(size)


def crop_box(boxes: np.ndarray, width: int, height: int, min_side: int = 24,
             aspect: float = 1.0) -> np.ndarray:
    """A crop (x0, y0, w, h) of w / h = `aspect` (square by default; the tower's frame aspect,
    so that resizing to its frames keeps the object's shape) around an object's boxes over a
    clip ([T, 4], NaN rows absent), expanded by half the object's size on each side, at least
    `min_side` high, shrunk to fit the frame and shifted into it."""
    x0, y0 = np.nanmin(boxes[:, 0]), np.nanmin(boxes[:, 1])
    x1, y1 = np.nanmax(boxes[:, 2]) + 1, np.nanmax(boxes[:, 3]) + 1
    side = int(min(max(2 * max((x1 - x0) / aspect, y1 - y0), min_side), height, width / aspect))
    across = side if aspect == 1 else min(int(round(side * aspect)), width)
    left = int(np.clip(round((x0 + x1 - across) / 2), 0, width - across))
    top = int(np.clip(round((y0 + y1 - side) / 2), 0, height - side))
    return np.asarray([left, top, across, side], np.float32)
