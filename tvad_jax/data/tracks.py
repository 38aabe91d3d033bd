"""Ground-truth tracks from masks, in the RBDC/TBDC row convention
`track_id, frame_id, x_min, y_min, x_max, y_max` (inclusive pixel boxes).

The community file formats (`track_files.py`), box IoU and region linking (`regions.py`) are
shared with the evaluation, so there is one implementation of each.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from tvad_jax.data.regions import heatmap_regions, link_regions

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive box of the largest 8-connected component of a 2-D mask (UBnormal's
    largest-contour rule for RBDC/TBDC boxes), or None for an empty mask."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    return xs.start, ys.start, xs.stop - 1, ys.stop - 1


def tracks_from_masks(masks: np.ndarray, link_iou: float = 0.1) -> np.ndarray:
    """GT track rows int64 [R, 6] from binary anomaly masks [T, H, W]: each frame's connected
    components become regions, linked across consecutive frames by IoU."""
    regions = heatmap_regions(masks.astype(np.float32), threshold=0.5)
    track_ids = link_regions(regions, link_iou)
    return np.column_stack([track_ids, regions[:, :5]]).astype(np.int64).reshape(-1, 6)
