"""Object crops for paper 003: expanded, clipped boxes cut from frames (t-1, t) and resized."""
import types

import numpy as np
import pytest

from tvad_jax.data.object_crops import (expand_box, record_sidecar, sidecar_tracks, track_clips,
                                        video_crops)
from tvad_jax.errors import DataError


def test_expand_box_grows_by_half_the_size_on_each_side_and_clips():
    # a 10 x 4 box (x 20..29, y 10..13): 5 more on each side in x, 2 in y
    assert expand_box((20, 10, 29, 13), 0.5, 100, 100).tolist() == [15, 8, 34, 15]
    # at the frame's corner the grown box is clipped to the frame
    assert expand_box((0, 0, 3, 3), 0.5, 10, 8).tolist() == [0, 0, 5, 5]
    # entirely outside: empty after clipping
    x0, y0, x1, y1 = expand_box((50, 2, 55, 4), 0.5, 40, 40)
    assert x1 < x0


def test_video_crops_cut_frames_t_minus_1_and_t_every_stride():
    T, H, W = 6, 16, 16
    frames = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        frames[t, 4:8, 4:8] = 10 * (t + 1)        # the object's colour tells the frame
    rows = np.array([[t, 4, 4, 7, 7] for t in range(T)])
    crops = video_crops(frames, [(7, rows)], size=8, stride=2, expand=0.0)
    assert crops.frame.tolist() == [1, 3, 5] and crops.object.tolist() == [7, 7, 7]
    assert crops.pixels.shape == (3, 2, 8, 8, 3)
    # without expansion the crop is the object alone, resized 4 -> 8: constant colour
    for k, t in enumerate(crops.frame):
        assert (crops.pixels[k, 0] == 10 * t).all() and (crops.pixels[k, 1] == 10 * (t + 1)).all()
    assert crops.box.tolist() == [[4, 4, 7, 7]] * 3
    # without pixels (tokens read from whole frames): the same rows, no crop cut
    where = video_crops(frames, [(7, rows)], size=8, stride=2, expand=0.0, pixels=False)
    assert where.pixels.shape == (3, 0)
    for name in ("frame", "object", "box"):
        np.testing.assert_array_equal(getattr(where, name), getattr(crops, name))


def test_video_crops_order_rows_by_frame_then_object():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    tracks = [(5, np.array([[1, 0, 0, 3, 3], [3, 0, 0, 3, 3]])),
              (2, np.array([[3, 4, 4, 7, 7], [1, 4, 4, 7, 7]]))]
    crops = video_crops(frames, tracks, size=4, stride=2)
    assert list(zip(crops.frame.tolist(), crops.object.tolist())) == [(1, 2), (1, 5), (3, 2),
                                                                     (3, 5)]


def test_a_box_outside_the_frame_is_an_error_naming_frame_and_object():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=r"clip\.mp4.*frame 1: object 3's box"):
        video_crops(frames, [(3, np.array([[1, 20, 20, 25, 25]]))], size=4, source="clip.mp4")
    with pytest.raises(DataError, match="object 3: a box at frame 9"):
        video_crops(frames, [(3, np.array([[9, 0, 0, 2, 2]]))], size=4, source="clip.mp4")


def test_sidecar_tracks_are_the_objects_box_rows():
    sidecar = {"objects": [{"id": 4, "boxes": [[0, 1, 2, 3, 4], [1, 2, 2, 4, 4]]},
                           {"id": 9, "boxes": []}]}
    tracks = sidecar_tracks(sidecar)
    assert [obj for obj, _ in tracks] == [4, 9]
    assert tracks[0][1].tolist() == [[0, 1, 2, 3, 4], [1, 2, 2, 4, 4]]
    assert tracks[1][1].shape == (0, 5)


def test_a_record_without_a_sidecar_is_an_error_naming_the_video_and_the_method():
    """Real videos have no simulator tracks: the methods that need boxes say so, naming the
    video, instead of scoring it 0."""
    bare = types.SimpleNamespace(sidecar=None, source="Scene1/clip.avi")
    with pytest.raises(DataError, match=r"Scene1/clip\.avi.*no object tracks: VLAVAD needs"):
        record_sidecar(bare, "VLAVAD")
    sidecar = {"objects": []}
    assert record_sidecar(types.SimpleNamespace(sidecar=sidecar, source="x"), "VLAVAD") is sidecar


def test_track_clips_end_at_each_stride_frame_and_follow_the_object():
    T, H, W = 12, 32, 32
    frames = np.zeros((T, H, W, 3), np.uint8)
    rows = []
    for t in range(T):                       # a 4 x 4 square moving right 1 px per frame
        frames[t, 10:14, t:t + 4] = 10 * (t + 1)
        rows.append([t, t, 10, t + 3, 13])
    clips = track_clips(frames, [(3, np.array(rows))], clip_len=4, stride=4, size=16)
    assert clips.frame.tolist() == [3, 7, 11] and clips.object.tolist() == [3, 3, 3]
    assert clips.pixels.shape == (3, 4, 16, 16, 3)
    assert clips.box.tolist() == [rows[t][1:] for t in (3, 7, 11)]
    for k, t in enumerate(clips.frame):
        for i, f in enumerate(range(t - 3, t + 1)):
            assert clips.pixels[k, i].max() == 10 * (f + 1)   # frames t-3 .. t, in order


def test_track_clips_repeat_frame_0_before_the_video_starts_and_skip_unseen_frames():
    frames = np.zeros((8, 16, 16, 3), np.uint8)
    for t in range(8):
        frames[t, 4:8, 4:8] = 10 * (t + 1)
    rows = np.array([[1, 4, 4, 7, 7], [5, 4, 4, 7, 7]])     # seen at frames 1 and 5 only
    clips = track_clips(frames, [(1, rows)], clip_len=4, stride=2, size=16)
    assert clips.frame.tolist() == [1, 5]
    assert [clips.pixels[0, i].max() for i in range(4)] == [10, 10, 10, 20]   # -2, -1, 0, 1
    empty = track_clips(frames, [(1, rows[:0])], clip_len=4, stride=2, size=16)
    assert len(empty) == 0 and empty.pixels.shape == (0, 4, 16, 16, 3)


def test_track_clips_of_a_height_and_width_cut_at_that_aspect():
    """size (8, 16): a crop twice as wide as high around the object (48 x 24 here), resized
    to 16 x 8 without stretching: a 12 x 12 square becomes 4 x 4, centred."""
    frames = np.zeros((4, 32, 64, 3), np.uint8)
    frames[:, 8:20, 20:32] = 255
    rows = np.array([[t, 20, 8, 31, 19] for t in range(4)])
    clips = track_clips(frames, [(1, rows)], clip_len=2, stride=2, size=(8, 16))
    assert clips.pixels.shape == (2, 2, 8, 16, 3)
    lit = clips.pixels[0, 0, ..., 0] > 127
    np.testing.assert_array_equal(np.argwhere(lit.any(axis=1)).ravel(), [2, 3, 4, 5])
    np.testing.assert_array_equal(np.argwhere(lit.any(axis=0)).ravel(), [6, 7, 8, 9])
