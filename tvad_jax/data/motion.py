"""Orientation histograms of motion, the inputs of Temporal Motion Estimation (TME).

TME (paper 003 §3.5) describes the dynamics of image region i (an object's box, expanded by
50% on each side by the caller) at frame t by M_i(t): the motion vectors of an encoded video
inside the region, their orientations atan2(y, x) quantized into D_m = 8 equal bins, and the
average magnitude of the vectors of each bin. The paper encodes H.265/HEVC with FFmpeg;
FFmpeg exports motion vectors (`flags2=+export_mvs`) for H.264 and MPEG-2/4 but not HEVC, so
`video_io.motion_field` re-encodes with H.264 (libx264, P-frames only) instead: a deviation.

Conventions: flow [..., 2] is (dx, dy) in pixels per frame, image coordinates (x right, y
down), the motion of each pixel's content since the previous frame. Bin k covers orientations
[-pi + 2 pi k / bins, -pi + 2 pi (k + 1) / bins): with 8 bins, right (0) is bin 4, down
(+pi/2) bin 6, left (pi, same as -pi) bin 0, up (-pi/2) bin 2.

    frames = video_io.read_video(path)                            # [T, H, W, 3] uint8
    flow = video_io.motion_field(frames, source=str(path))        # [T, H, W, 2]
    hist = box_histograms(flow, np.array([[t, x0, y0, x1, y1]]))  # [1, 8]: M_i(t)
"""
from __future__ import annotations

import numpy as np

BINS = 8   # D_m, paper 003 §3.5


def orientation_histogram(flow: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Flow vectors [..., 2] (dx, dy) of a region -> [bins] float32: the mean magnitude of the
    vectors of each orientation bin (see the module docstring), 0 for an empty bin.

    Exactly-zero vectors (blocks without motion, intra blocks, frame 0) are left out: they
    have no orientation, and atan2(0, 0) = 0 would put every static block in the bin of
    angle 0 and drag its mean down."""
    flow = np.asarray(flow, np.float64).reshape(-1, 2)
    flow = flow[(flow != 0).any(-1)]                                          # [N, 2]
    angle = np.arctan2(flow[:, 1], flow[:, 0])                                # [-pi, pi]
    index = np.floor((angle + np.pi) / (2 * np.pi / bins)).astype(np.int64)
    index = np.where(angle >= np.pi, 0, np.minimum(index, bins - 1))  # pi is -pi: bin 0
    count = np.bincount(index, minlength=bins)
    total = np.bincount(index, weights=np.hypot(flow[:, 0], flow[:, 1]), minlength=bins)
    return (total / np.maximum(count, 1)).astype(np.float32)


def box_histograms(flow: np.ndarray, boxes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Flow [T, H, W, 2] and rows [K, 5] (t, x0, y0, x1, y1) -> [K, bins] float32: the
    orientation histogram of the pixels of frame t inside each box.

    Boxes are inclusive pixels, rounded to the nearest pixel and clipped to the frame; a row
    whose frame does not exist or whose box lies entirely outside the frame is a ValueError
    naming the row (an upstream bug, not a region without motion)."""
    flow = np.asarray(flow)
    boxes = np.asarray(boxes, np.float64)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [T, H, W, 2], got {flow.shape}")
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be rows [K, 5] (t, x0, y0, x1, y1), got {boxes.shape}")
    n, height, width = flow.shape[:3]
    out = np.zeros((len(boxes), bins), np.float32)
    for row, box in enumerate(boxes):
        if not np.isfinite(box).all() or box[0] != int(box[0]) or not 0 <= box[0] < n:
            raise ValueError(f"box row {row} {box.tolist()}: frame not in 0..{n - 1}")
        t, x0, y0, x1, y1 = np.rint(box).astype(np.int64)
        if x0 > x1 or y0 > y1 or x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
            raise ValueError(f"box row {row} {box.tolist()}: empty or entirely outside the "
                             f"{width} x {height} frame")
        region = flow[t, max(y0, 0):min(y1, height - 1) + 1, max(x0, 0):min(x1, width - 1) + 1]
        out[row] = orientation_histogram(region, bins)
    return out
