"""Anomaly heatmaps -> scored regions (detections rows) -> predicted tracks.

A heatmap is binarized at a threshold (0.5, paper 000 §4.1: heat >= threshold), its connected
components (8-connected within a frame, never across frames) become inclusive pixel boxes,
each scored by the max or mean heat of its pixels. Regions of consecutive frames are linked
into tracks greedily by IoU (>= link_iou, 0.1 in the paper), best pairs first.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from tvad_jax.errors import EvalInputError


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive pixel boxes [..., 4] (broadcast), widths and heights counted + 1."""
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1,
                      0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1,
                      0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


# Connectivity: the 8 neighbours inside a frame, nothing across time.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def heatmap_regions(heatmap: np.ndarray, threshold: float = 0.5,
                    score: Literal["max", "mean"] = "max",
                    frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Detections rows [K, 6] (frame, x_min, y_min, x_max, y_max, score) of a heatmap [T, H, W].

    With `frame_size` (height, width) the boxes are scaled from heatmap cells to the pixels of
    frames of that size, each box covering every pixel its cells cover.
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 3:
        raise EvalInputError(f"heatmap must be [T, H, W], got shape {heatmap.shape}")
    if score not in ("max", "mean"):
        raise EvalInputError(f"region score must be 'max' or 'mean', got {score!r}")
    if np.isnan(heatmap).any():
        raise EvalInputError("heatmap contains NaN")
    labels, num = ndimage.label(heatmap >= threshold, structure=_STRUCTURE)  # [T, H, W]
    t, y, x = np.nonzero(labels)  # raster order: components appear in label order per frame
    component = labels[t, y, x] - 1
    order = np.argsort(component, kind="stable")
    t, y, x, component = t[order], y[order], x[order], component[order]
    starts = np.searchsorted(component, np.arange(num))  # [K] first pixel of each component
    heat = heatmap[t, y, x]
    if score == "max":
        value = _reduce(np.maximum, heat, starts)  # [K]
    else:
        value = _reduce(np.add, heat, starts) / np.diff(np.r_[starts, len(heat)])
    boxes = np.stack([_reduce(np.minimum, x, starts), _reduce(np.minimum, y, starts),
                      _reduce(np.maximum, x, starts), _reduce(np.maximum, y, starts)],
                     axis=1).astype(np.float64)  # [K, 4]
    if frame_size is not None:
        boxes = scale_boxes(boxes, heatmap.shape[1:], frame_size)
    return np.column_stack([t[starts], boxes, value]).reshape(-1, 6)


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
                ) -> np.ndarray:
    """Inclusive pixel boxes [K, 4] (x_min, y_min, x_max, y_max) on a (height, width) grid ->
    the same boxes on another grid, each covering every pixel its source pixels cover."""
    scale = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]] * 2)
    out = np.asarray(boxes, np.float64) * scale
    out[:, :2] = np.floor(out[:, :2])
    out[:, 2:] = np.ceil(out[:, 2:] + scale[2:]) - 1
    return out


def _reduce(ufunc: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return ufunc.reduceat(values, starts) if len(starts) else np.zeros(0)


def link_regions(regions: np.ndarray, link_iou: float = 0.1) -> np.ndarray:
    """Track ids [K] for detections rows [K, 6], linking regions of consecutive frames.

    In each frame, pairs (previous-frame region, region) are taken best IoU first, each region
    at most once, while IoU >= link_iou; an unlinked region starts a new track.
    """
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 6)
    track = np.full(len(regions), -1, dtype=np.int64)
    if not len(regions):
        return track
    order = np.argsort(regions[:, 0], kind="stable")
    frames = regions[order, 0]
    bounds = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1], True])
    previous, previous_frame, next_id = np.zeros(0, np.int64), None, 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        current = order[start:stop]  # row indices of this frame's regions
        if previous_frame is not None and frames[start] == previous_frame + 1:
            iou = box_iou(regions[previous, None, 1:5], regions[None, current, 1:5])  # [P, C]
            taken = np.zeros(len(previous), dtype=bool)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                p, c = divmod(int(flat), len(current))
                if iou[p, c] < link_iou:
                    break
                if not taken[p] and track[current[c]] < 0:
                    track[current[c]] = track[previous[p]]
                    taken[p] = True
        unlinked = current[track[current] < 0]
        track[unlinked] = next_id + np.arange(len(unlinked))
        next_id += len(unlinked)
        previous, previous_frame = current, frames[start]
    return track
