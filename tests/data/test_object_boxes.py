"""Object boxes on the patch grid, crops around them."""
import numpy as np

from tvad_jax.data.object_boxes import box_coverage, box_velocity, crop_box, crop_frames


def test_box_coverage_counts_patch_fractions_per_tubelet():
    boxes = np.full((1, 4, 4), np.nan)
    boxes[0, 0] = [0, 0, 7, 7]          # all of patch (0, 0) in frame 0
    boxes[0, 1] = [0, 0, 7, 3]          # its top half in frame 1
    boxes[0, 2] = [8, 8, 11, 15]        # the left half of patch (1, 1) in frame 2; frame 3 absent
    cover = box_coverage(boxes, size=16, patch=8, tubelet=2)      # [1, 2, 2, 2]
    np.testing.assert_allclose(cover[0, 0], [[0.75, 0], [0, 0]])  # mean of 1 and 0.5
    np.testing.assert_allclose(cover[0, 1], [[0, 0], [0, 0.25]])  # mean of 0.5 and absent


def test_box_velocity_averages_centre_steps_per_tubelet():
    boxes = np.full((2, 6, 4), np.nan)
    for t in range(4):                  # object 0 moves 2 px right, 1 px up per frame
        boxes[0, t] = [10 + 2 * t, 20 - t, 14 + 2 * t, 24 - t]
    boxes[1, 2] = [0, 0, 3, 3]          # object 1 is seen in one frame only
    v = box_velocity(boxes, tubelet=2)                            # [2, 3, 2]
    np.testing.assert_allclose(v[0, :2], [[2, -1], [2, -1]])
    assert np.isnan(v[0, 2]).all() and np.isnan(v[1]).all()
    boxes[0, 4] = boxes[0, 3] + [5, 0, 5, 0]                     # a jump into the last tubelet
    v = box_velocity(boxes, tubelet=2)
    np.testing.assert_allclose(v[0, 1], [(2 + (2 + 5) / 2) / 2, -0.5 - 0.25])
    np.testing.assert_allclose(v[0, 2], [5, 0])


def test_crop_box_is_a_square_in_the_frame_around_the_object():
    boxes = np.array([[10, 20, 15, 31], [12, 22, 17, 33], [np.nan] * 4])
    x0, y0, side, _ = crop_box(boxes, width=96, height=96)
    assert side == 2 * (34 - 20)                      # twice the larger extent
    assert x0 <= 10 and y0 <= 20 and x0 + side >= 18 and y0 + side >= 34
    x0, y0, side, _ = crop_box(np.array([[90, 90, 95, 95]]), width=96, height=96)
    assert side == 24 and x0 + side <= 96 and y0 + side <= 96      # min side, shifted in


def test_crop_box_of_an_aspect_keeps_it_and_fits_the_frame():
    """aspect 2 (a 16:8 tower): the height as the square's (its width's half counts), the width
    twice it; shrunk at the same aspect where the frame is too small."""
    boxes = np.array([[10, 20, 15, 31], [12, 22, 17, 33]])
    x0, y0, w, h = crop_box(boxes, width=96, height=64, aspect=2.0)
    assert (w, h) == (56, 28) and x0 <= 10 and y0 <= 20 and x0 + w >= 18 and y0 + h >= 34
    x0, y0, w, h = crop_box(np.array([[0, 0, 59, 9]]), width=96, height=64, aspect=2.0)
    assert (w, h) == (96, 48) and (x0, y0) == (0, 0)         # 120 x 60 shrunk to the width


def test_crop_frames_resizes_the_crop_to_the_frame():
    frames = np.zeros((2, 32, 32, 3), np.float32)
    frames[:, 8:16, 8:16] = 1.0                       # the crop holds only this square
    out = crop_frames(frames, np.array([8, 8, 8, 8], np.float32))
    assert out.shape == frames.shape and out.dtype == frames.dtype
    np.testing.assert_allclose(out, 1.0)
