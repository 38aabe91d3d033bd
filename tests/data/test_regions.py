"""Heatmap -> scored regions -> tracks, checked on hand-drawn heatmaps."""
import numpy as np
import pytest

from tvad_jax.data import regions, track_files
from tvad_jax.errors import EvalInputError
from tvad_jax.eval import rbdc


def hand_heatmap():
    heat = np.zeros((3, 6, 8))
    heat[0, 1:3, 1:3] = 0.8      # a 2x2 blob
    heat[0, 3, 3] = 0.5          # touches the blob diagonally: same component; 0.5 is "on"
    heat[0, 4, 6] = 0.6          # a separate pixel
    heat[0, 0, 7] = 0.49         # below the threshold
    heat[1, 1:3, 1:3] = 0.9      # same place next frame: a new component (no time links)
    heat[1, 1, 1] = 0.6
    return heat


def test_components_boxes_and_scores():
    found = regions.heatmap_regions(hand_heatmap())
    np.testing.assert_allclose(found, [[0, 1, 1, 3, 3, 0.8],
                                       [0, 6, 4, 6, 4, 0.6],
                                       [1, 1, 1, 2, 2, 0.9]])
    mean = regions.heatmap_regions(hand_heatmap(), score="mean")
    np.testing.assert_allclose(mean[:, 5], [(4 * 0.8 + 0.5) / 5, 0.6, (3 * 0.9 + 0.6) / 4])
    assert regions.heatmap_regions(hand_heatmap(), threshold=0.85).shape == (1, 6)
    assert regions.heatmap_regions(np.zeros((2, 4, 4))).shape == (0, 6)


def test_boxes_scale_to_frame_pixels():
    # Heatmap 6x8 cells onto 12x32 frames: a cell is 2 px high and 4 px wide.
    found = regions.heatmap_regions(hand_heatmap(), frame_size=(12, 32))
    # Blob cells x 1..3, y 1..3 -> pixels x 4..15, y 2..7.
    np.testing.assert_allclose(found[0, 1:5], [4, 2, 15, 7])
    np.testing.assert_allclose(found[1, 1:5], [24, 8, 27, 9])


def test_bad_heatmaps():
    with pytest.raises(EvalInputError, match=r"\[T, H, W\]"):
        regions.heatmap_regions(np.zeros((4, 4)))
    with pytest.raises(EvalInputError, match="NaN"):
        regions.heatmap_regions(np.full((1, 2, 2), np.nan))
    with pytest.raises(EvalInputError, match="'max' or 'mean'"):
        regions.heatmap_regions(np.zeros((1, 2, 2)), score="median")


def test_link_regions_greedy_best_iou_and_gaps():
    rows = np.array([
        [0, 0, 0, 9, 9, 1], [0, 30, 0, 39, 9, 1],        # two objects in frame 0
        [1, 31, 0, 40, 9, 1], [1, 1, 0, 10, 9, 1],        # both moved by 1 px, listed swapped
        [1, 60, 60, 69, 69, 1],                           # new object
        [4, 5, 0, 14, 9, 1],                              # frame 3 missing: a new track
        [2, 5, 0, 14, 9, 1],                              # IoU 6x10/(140) = 0.43 with [1,0,10,9]
    ])
    np.testing.assert_array_equal(regions.link_regions(rows), [0, 1, 1, 0, 2, 3, 0])
    # The better of two candidates wins: [0,0,9,9] overlaps [0,0,9,9] (1.0) over [2,0,11,9].
    rows = np.array([[0, 2, 0, 11, 9, 1], [0, 0, 0, 9, 9, 1], [1, 0, 0, 9, 9, 1]])
    np.testing.assert_array_equal(regions.link_regions(rows), [0, 1, 1])
    # Below link IoU: 5x10 / 150 = 0.33 linked at 0.1 but not at 0.5.
    rows = np.array([[0, 0, 0, 9, 9, 1], [1, 5, 0, 14, 9, 1]])
    np.testing.assert_array_equal(regions.link_regions(rows, 0.1), [0, 0])
    np.testing.assert_array_equal(regions.link_regions(rows, 0.5), [0, 1])


def test_heatmap_of_ground_truth_masks_scores_rbdc_one(tmp_path):
    heat = np.zeros((20, 30, 40))
    heat[5:15, 4:10, 5:12] = 0.9     # object 0, frames 5..14
    heat[8:12, 20:25, 30:36] = 0.7   # object 1, frames 8..11
    heat[16, 0:3, 0:3] = 0.6         # a false alarm
    found = regions.heatmap_regions(heat)
    track_ids = regions.link_regions(found)
    assert len(np.unique(track_ids)) == 3
    gt = np.r_[[[0, f, 5, 4, 11, 9] for f in range(5, 15)],
               [[1, f, 30, 20, 35, 24] for f in range(8, 12)]]
    track_files.write_tracks(tmp_path / "tracks.txt", gt)
    track_files.write_detections(tmp_path / "det.txt", found)
    tracks = track_files.read_tracks_file(tmp_path / "tracks.txt")
    result = rbdc.rbdc_tbdc(rbdc.tracks_from_rows([tracks]),
                            rbdc.detections_from_rows([track_files.read_detections_file(tmp_path /
                                                                                 "det.txt")]),
                            num_frames=20)
    # The false alarm scores lowest: all 14 regions first, then 1/20 FP, held to FPR 1.
    assert result.rbdc == pytest.approx(1.0) and result.tbdc == pytest.approx(1.0)


def test_a_heatmap_without_regions_gives_no_tracks():
    found = regions.heatmap_regions(np.zeros((3, 4, 4)))
    assert found.shape == (0, 6)
    assert regions.link_regions(found).shape == (0,)


def test_scale_boxes_covers_the_same_pixels_on_another_grid():
    boxes = np.array([[1, 2, 3, 4], [0, 0, 0, 0]])
    np.testing.assert_allclose(regions.scale_boxes(boxes, (8, 8), (16, 32)),
                               [[4, 4, 15, 9], [0, 0, 3, 1]])
    np.testing.assert_allclose(regions.scale_boxes(np.array([[10, 20, 11, 21]]), (96, 96),
                                                   (48, 48)), [[5, 10, 5, 10]])
    np.testing.assert_allclose(regions.scale_boxes(boxes, (8, 8), (8, 8)), boxes)
