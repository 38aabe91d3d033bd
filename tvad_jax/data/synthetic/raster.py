"""A tiny supersampled rasterizer: convex polygons and discs into a colour + object-id canvas.

Coordinates are in output pixels (x right, y down). The canvas is rendered at `scale` times
the output size and box-filtered down, which anti-aliases edges; the id map takes, per output
pixel, the object covering at least half of its sub-samples (else background 0).
"""
from __future__ import annotations

import numpy as np


class Canvas:
    """Colour [H*s, W*s, 3] float32 in [0, 1] and object ids [H*s, W*s] uint8."""

    def __init__(self, background: np.ndarray, scale: int = 2):
        self.scale = scale
        self.color = np.repeat(np.repeat(background, scale, axis=0), scale, axis=1).copy()
        self.ids = np.zeros(self.color.shape[:2], np.uint8)

    def _window(self, xmin: float, ymin: float, xmax: float, ymax: float):
        """Sub-sample index window covering a box, plus the sub-sample centres inside it."""
        s = self.scale
        h, w = self.ids.shape
        x0, x1 = max(int(np.floor(xmin * s)), 0), min(int(np.ceil(xmax * s)) + 1, w)
        y0, y1 = max(int(np.floor(ymin * s)), 0), min(int(np.ceil(ymax * s)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        xs = (np.arange(x0, x1) + 0.5) / s
        ys = (np.arange(y0, y1) + 0.5) / s
        return (slice(y0, y1), slice(x0, x1)), xs[None, :], ys[:, None]

    def _paint(self, window, inside: np.ndarray, color, obj_id: int) -> None:
        region, _, _ = window
        self.color[region][inside] = color
        self.ids[region][inside] = obj_id

    def polygon(self, points: np.ndarray, color, obj_id: int = 0) -> None:
        """Fill a convex polygon given as [K, 2] (x, y) vertices in either winding order."""
        points = np.asarray(points, np.float32)
        window = self._window(*points.min(0), *points.max(0))
        if window is None:
            return
        _, xs, ys = window
        edges = np.roll(points, -1, axis=0) - points
        # Cross product of each edge with (sample - edge start): one sign inside.
        cross = edges[:, 0, None, None] * (ys - points[:, 1, None, None]) - \
            edges[:, 1, None, None] * (xs - points[:, 0, None, None])
        inside = np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0)
        self._paint(window, inside, color, obj_id)

    def disc(self, cx: float, cy: float, radius: float, color, obj_id: int = 0) -> None:
        window = self._window(cx - radius, cy - radius, cx + radius, cy + radius)
        if window is None:
            return
        _, xs, ys = window
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
        self._paint(window, inside, color, obj_id)

    def segment(self, p0, p1, width: float, color, obj_id: int = 0) -> None:
        """A thick line segment as a quad (limbs, poles, bicycle frames)."""
        p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
        direction = p1 - p0
        normal = np.array([-direction[1], direction[0]]) / (np.hypot(*direction) + 1e-6)
        offset = normal * width / 2
        self.polygon(np.stack([p0 + offset, p1 + offset, p1 - offset, p0 - offset]), color,
                     obj_id)

    def resolve(self) -> tuple[np.ndarray, np.ndarray]:
        """Box-filter to output size: colour [H, W, 3] float32 and ids [H, W] uint8."""
        s = self.scale
        h, w = self.ids.shape[0] // s, self.ids.shape[1] // s
        # Explicit element-wise sums: numpy's SIMD reductions may round differently with
        # memory alignment, which would make the same seed give different files.
        blocks = self.color.reshape(h, s, w, s, 3)
        color = sum(blocks[:, i, :, j] for i in range(s) for j in range(s)) / (s * s)
        samples = [self.ids.reshape(h, s, w, s)[:, i, :, j] for i in range(s) for j in range(s)]
        ids = np.zeros((h, w), np.uint8)
        best = np.zeros((h, w), np.uint8)   # sub-samples agreeing with the chosen id
        for sample in samples:
            count = sum((sample == other).view(np.uint8) for other in samples)
            better = count > best
            ids[better], best[better] = sample[better], count[better]
        return color, np.where(best * 2 >= s * s, ids, 0).astype(np.uint8)


def rotate(points: np.ndarray, angle_deg: float, pivot=(0.0, 0.0)) -> np.ndarray:
    """Rotate [K, 2] points by `angle_deg` (clockwise on screen) about `pivot`."""
    theta = np.deg2rad(angle_deg)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    pivot = np.asarray(pivot, np.float32)
    dx, dy = (np.asarray(points, np.float32) - pivot).T
    return np.stack([cos * dx - sin * dy, sin * dx + cos * dy], axis=1) + pivot
