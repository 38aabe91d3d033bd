import numpy as np
import pytest

from tvad_jax.data import video_io
from tvad_jax.data.motion import BINS, box_histograms, orientation_histogram
from tvad_jax.data.video_io import motion_field
from tvad_jax.errors import DataError


def test_orientation_histogram_is_the_mean_magnitude_per_orientation_bin():
    flow = np.array([[[1, 0], [2, 0], [0, -3]],            # right, right, up (image coords)
                     [[0, 0], [-3, -4], [-2, 0]]], float)  # none, up-left (|5|), left (pi)
    expected = np.zeros(8)
    expected[4] = (1 + 2) / 2            # angle 0: bin [0, pi/4)
    expected[2] = 3                      # angle -pi/2: bin [-pi/2, -pi/4)
    expected[1] = 5                      # atan2(-4, -3) = -2.21: bin [-3pi/4, -pi/2)
    expected[0] = 2                      # angle pi is -pi: bin [-pi, -3pi/4)
    hist = orientation_histogram(flow)
    assert hist.dtype == np.float32 and hist.shape == (BINS,)
    np.testing.assert_allclose(hist, expected, rtol=1e-6)   # the zero vector counts nowhere
    np.testing.assert_array_equal(orientation_histogram(np.zeros((4, 4, 2))), np.zeros(8))
    # a bin's lower edge belongs to it: pi/4 opens bin 5 of 8, pi/2 bin 2 of 4
    assert np.flatnonzero(orientation_histogram(np.array([[1.0, 1.0]]))).tolist() == [5]
    assert orientation_histogram(np.array([[0.0, 2.0]]), bins=4).tolist() == [0, 0, 0, 2]


def test_box_histograms_read_their_frame_and_clip_to_it():
    flow = np.zeros((2, 6, 8, 2), np.float32)
    flow[0, :, :, 0] = 1                           # frame 0: everything moves right
    flow[1, 0:2, 0:2] = (0, 2)                     # frame 1: top-left corner moves down
    flow[1, 4:6, 6:8] = (-1, 0)                    # frame 1: bottom-right corner moves left
    hist = box_histograms(flow, np.array([[0, 0, 0, 7, 5],
                                          [1, -5, -5, 1, 1],      # clipped to the corner
                                          [1, 5, 3, 100, 100],    # clipped; half of it static
                                          [1, 2, 2, 4, 3]]))      # no motion: all zeros
    assert hist.shape == (4, 8) and hist.dtype == np.float32
    assert hist[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert hist[1].tolist() == [0, 0, 0, 0, 0, 0, 2, 0]
    assert hist[2].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert not hist[3].any()
    with pytest.raises(ValueError, match=r"box row 1 \[1.0, 8.0, 0.0, 9.0, 3.0\]: empty or "
                                         r"entirely outside the 8 x 6 frame"):
        box_histograms(flow, np.array([[0, 0, 0, 1, 1], [1, 8, 0, 9, 3]]))
    with pytest.raises(ValueError, match="box row 0 .*: frame not in 0..1"):
        box_histograms(flow, np.array([[2, 0, 0, 1, 1]]))


def _moving_square(vx, vy, t=8, size=64, side=32, start=(12, 14)):
    """Frames [t, size, size, 3] of a noise square moving (vx, vy) px/frame over static noise,
    and its inclusive boxes [t, 4]. The motion is per block (16 x 16 macroblocks and their
    partitions, the blocks on the square's edges often intra-coded as 0): a 32 px square keeps
    whole blocks inside it."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    square = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    frames, boxes = [], []
    for i in range(t):
        x, y = start[0] + vx * i, start[1] + vy * i
        frame = background.copy()
        frame[y:y + side, x:x + side] = square
        frames.append(frame)
        boxes.append((x, y, x + side - 1, y + side - 1))
    return np.stack(frames), np.array(boxes)


@pytest.mark.parametrize("vx, vy", [(2, 0), (-1, 2)])
def test_motion_field_of_a_moving_square(vx, vy):
    frames, boxes = _moving_square(vx, vy)
    flow = motion_field(frames)
    assert flow.shape == (8, 64, 64, 2) and flow.dtype == np.float32
    assert not flow[0].any()
    for t in range(1, 8):
        x0, y0, x1, y1 = boxes[t]
        inside = np.zeros((64, 64), bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        # the content moved (vx, vy) since frame t - 1, x right and y down
        np.testing.assert_allclose(np.median(flow[t][inside], 0), (vx, vy), atol=0.5)
        np.testing.assert_allclose(np.median(flow[t][~inside], 0), (0, 0), atol=0.5)
    if (vx, vy) == (2, 0):
        rows = np.concatenate([np.arange(1, 8)[:, None], boxes[1:]], 1)
        assert (box_histograms(flow, rows).argmax(1) == 4).all()       # right: angle 0


def test_motion_field_of_identical_frames_is_zero_and_no_vectors_otherwise_an_error(
        monkeypatch):
    frames, _ = _moving_square(2, 0, t=3, size=32, side=8, start=(4, 4))
    assert not motion_field(np.repeat(frames[:1], 3, 0)).any()   # no motion is an answer
    assert not motion_field(frames[:1]).any()                    # one frame has no motion
    monkeypatch.setattr(video_io, "_motion_vectors",
                        lambda data, n, source: (np.zeros(0, int), np.zeros(0, [("source", "i4")])))
    with pytest.raises(DataError, match="v.mp4: the H.264 re-encode exports no motion vectors"):
        motion_field(frames, source="v.mp4")
    with pytest.raises(ValueError, match="v.mp4: frames must be uint8 .* H and W even"):
        motion_field(np.zeros((2, 33, 32, 3), np.uint8), source="v.mp4")
