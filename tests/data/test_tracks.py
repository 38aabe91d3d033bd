"""Ground-truth boxes and tracks from masks, on hand-drawn masks."""
import numpy as np

from tvad_jax.data.tracks import largest_component_box, tracks_from_masks


def test_largest_component_box_is_the_inclusive_box_of_the_biggest_blob():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True               # 4 pixels
    mask[4:9, 6:11] = True              # 25 pixels
    mask[9, 11] = True                  # touches the big blob diagonally: 8-connected, one blob
    assert largest_component_box(mask) == (6, 4, 11, 9)
    assert largest_component_box(np.zeros((4, 4), bool)) is None


def test_tracks_from_masks_link_overlapping_regions_and_split_distant_ones():
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:6, 2:6] = True           # object A, moving right by one pixel a frame
    masks[1, 2:6, 3:7] = True
    masks[2, 2:6, 4:8] = True
    masks[2, 14:18, 14:18] = True       # object B appears in frame 2 far from A
    rows = tracks_from_masks(masks)
    assert rows.shape == (4, 6) and rows.dtype == np.int64
    by_frame = {(int(r[1]), int(r[2])): r for r in rows}
    a = [by_frame[(0, 2)], by_frame[(1, 3)], by_frame[(2, 4)]]
    assert [r[2:].tolist() for r in a] == [[2, 2, 5, 5], [3, 2, 6, 5], [4, 2, 7, 5]]
    assert len({int(r[0]) for r in a}) == 1                         # one track
    assert int(by_frame[(2, 14)][0]) != int(a[0][0])                # B: a track of its own
    assert tracks_from_masks(np.zeros((2, 5, 5), bool)).shape == (0, 6)
