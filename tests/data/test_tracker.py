"""Noisy detections from exact boxes and the ByteTrack-style tracker that tracks them back."""
import numpy as np
import pytest

from tvad_jax.data.object_crops import sidecar_tracks
from tvad_jax.data.tracker import (DetectionNoise, TrackerConfig, iou, noisy_detections, track,
                                   track_categories, tracks_from_sidecar)
from tvad_jax.errors import DataError

MILD = DetectionNoise(jitter=0.02, drop=0.02, false_rate=0.01)


def linear(t0: int, t1: int, x0: float, y0: float, vx: float, vy: float, w: int, h: int
           ) -> np.ndarray:
    """Rows [n, 5] (t, x0, y0, x1, y1) of a w x h box moving at (vx, vy) px/frame, t0..t1."""
    t = np.arange(t0, t1 + 1)
    x = np.rint(x0 + vx * (t - t0)).astype(np.int64)
    y = np.rint(y0 + vy * (t - t0)).astype(np.int64)
    return np.stack([t, x, y, x + w - 1, y + h - 1], 1)


def detections_of(rows_by_score: list[tuple[np.ndarray, float]], num_frames: int
                  ) -> list[np.ndarray]:
    """Exact per-frame detections [m_t, 5] of track rows, each track at one score."""
    frames = [[] for _ in range(num_frames)]
    for rows, score in rows_by_score:
        for t, *box in rows.tolist():
            frames[t].append([*box, score])
    return [np.asarray(f, np.float32).reshape(-1, 5) for f in frames]


def rows_set(rows: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(r) for r in np.asarray(rows).tolist()}


# --- iou ---------------------------------------------------------------------------------------

def test_iou_by_hand_with_inclusive_pixel_edges():
    a = np.array([[0, 0, 9, 9], [0, 0, 0, 0]])            # 10 x 10 = 100 px; one pixel
    b = np.array([[5, 5, 14, 14],    # 5 x 5 = 25 shared of 100 + 100 - 25 = 175
                  [10, 0, 19, 9],    # touches a[0]'s right edge: no pixel shared
                  [9, 9, 9, 9],      # a[0]'s last pixel: 1 / 100
                  [30, 30, 35, 35],  # far away
                  [0, 0, 9, 9]])     # identical to a[0]; holds a[1]'s pixel: 1 / 100
    expected = [[25 / 175, 0.0, 1 / 100, 0.0, 1.0],
                [0.0, 0.0, 0.0, 0.0, 1 / 100]]
    np.testing.assert_allclose(iou(a, b), expected, rtol=1e-12)
    assert iou(a, np.zeros((0, 4))).shape == (2, 0)
    assert iou(np.zeros((0, 4)), b).shape == (0, 5)


# --- noisy_detections ------------------------------------------------------------------------

def test_noise_validation_names_the_field():
    for kwargs, field in [({"drop": 1.5}, "drop"), ({"jitter": -0.1}, "jitter"),
                          ({"score_low": -0.2}, "score_low"), ({"false_rate": -1}, "false_rate")]:
        with pytest.raises(ValueError, match=field):
            DetectionNoise(**kwargs)


def test_zero_noise_gives_the_exact_boxes_with_true_scores():
    a = linear(0, 5, 10, 20, 2, 0, 8, 16)
    b = linear(3, 8, 60, 40, -1, 1, 12, 6)
    noise = DetectionNoise(jitter=0.0, drop=0.0, false_rate=0.0, score_low=0.7)
    dets = noisy_detections([(1, a), (2, b)], num_frames=10, width=96, height=80, noise=noise,
                            seed=3)
    assert len(dets) == 10
    for t, d in enumerate(dets):
        assert d.dtype == np.float32 and d.shape[1] == 5
        expected = {tuple(r[1:]) for r in np.concatenate([a, b]).tolist() if r[0] == t}
        assert {tuple(r) for r in d[:, :4].astype(int).tolist()} == expected
        assert len(d) == len(expected)
        np.testing.assert_array_equal(d[:, :4], np.rint(d[:, :4]))   # no jitter at all
        assert ((d[:, 4] >= 0.7) & (d[:, 4] <= 1.0)).all()
    assert [len(d) for d in dets] == [1, 1, 1, 2, 2, 2, 1, 1, 1, 0]


def test_noisy_detections_are_deterministic_for_a_seed():
    rows = [(1, linear(0, 29, 10, 10, 1, 0, 10, 20)), (2, linear(5, 29, 70, 50, -1, 0, 8, 8))]
    args = (rows, 30, 96, 96, DetectionNoise(jitter=0.1, drop=0.2, false_rate=0.5))
    first, again, other = (noisy_detections(*args, seed=s) for s in (7, 7, 8))
    for d1, d2 in zip(first, again):
        np.testing.assert_array_equal(d1, d2)
    assert any(d1.shape != d3.shape or not np.array_equal(d1, d3)
               for d1, d3 in zip(first, other))


def test_jitter_is_a_fraction_of_the_box_size_and_stays_in_the_frame():
    # a 40 x 20 box far from the edges: edge shifts have std 0.05 * 40 = 2 px in x, 1 px in y
    rows = linear(0, 1999, 30, 30, 0, 0, 40, 20)
    dets = noisy_detections([(1, rows)], 2000, 100, 100, DetectionNoise(0.05, 0.0, 0.0), seed=0)
    shift = np.concatenate(dets)[:, :4] - rows[:, 1:]
    assert np.abs(shift.mean(0)).max() < 0.15
    np.testing.assert_allclose(shift.std(0), [2.0, 1.0, 2.0, 1.0], rtol=0.1)
    # a box at the frame's corner under heavy jitter: clipped, never inverted
    corner = linear(0, 499, 0, 0, 0, 0, 3, 3)
    boxes = np.concatenate(noisy_detections([(1, corner)], 500, 20, 10,
                                            DetectionNoise(2.0, 0.0, 0.0), seed=1))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 19).all() and (boxes[:, 3] <= 9).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_drop_one_leaves_only_false_boxes():
    rows = linear(0, 199, 20, 20, 0, 0, 10, 30)                   # 10 x 30 true boxes
    none = noisy_detections([(1, rows)], 200, 96, 96, DetectionNoise(0.0, 1.0, 0.0), seed=0)
    assert all(len(d) == 0 for d in none)
    # true boxes would score >= 0.9; false boxes score in [0.05, 0.6], sized 0.7-1.3 x 10 x 30
    noise = DetectionNoise(jitter=0.0, drop=1.0, false_rate=1.0, score_low=0.9)
    false = np.concatenate(noisy_detections([(1, rows)], 200, 96, 96, noise, seed=0))
    assert 150 <= len(false) <= 250                                # Poisson(1) x 200 frames
    assert ((false[:, 4] >= 0.05) & (false[:, 4] <= 0.6)).all()
    w, h = false[:, 2] - false[:, 0] + 1, false[:, 3] - false[:, 1] + 1
    assert ((w >= 7 - 1e-3) & (w <= 13 + 1e-3) & (h >= 21 - 1e-3) & (h <= 39 + 1e-3)).all()
    assert (false[:, :2] >= 0).all() and (false[:, 2:4] <= 95).all()


# --- track -----------------------------------------------------------------------------------

def test_tracker_config_validation_names_the_field():
    for kwargs, field in [({"high": 1.2}, "high"), ({"low": 0.7}, "low"),
                          ({"new_track": 0.4}, "new_track"), ({"match_iou": 0.0}, "match_iou"),
                          ({"nms_iou": 1.5}, "nms_iou"), ({"max_lost": -1}, "max_lost"),
                          ({"min_area": -5.0}, "min_area")]:
        with pytest.raises(ValueError, match=field):
            TrackerConfig(**kwargs)


def test_crossing_objects_keep_their_identities():
    # A moves right, B left, 4 px lower; at frame 13 B's box sits where A's was at frame 12,
    # closer (IoU 2/3) than A's own next box (IoU 0.6): only motion keeps the identities.
    a = linear(0, 25, 5, 30, 3, 0, 12, 20)
    b = linear(0, 25, 80, 34, -3, 0, 12, 20)
    assert iou(a[12:13, 1:], b[13:14, 1:])[0, 0] > iou(a[12:13, 1:], a[13:14, 1:])[0, 0]
    dets = detections_of([(a, 0.9), (b, 0.8)], 26)
    out = track(dets, TrackerConfig(nms_iou=1.0))   # NMS off: the boxes overlap when crossing
    assert [tid for tid, _ in out] == [1, 2]
    assert sorted(map(frozenset, (rows_set(r) for _, r in out))) == \
        sorted(map(frozenset, (rows_set(a), rows_set(b))))
    for _, rows in out:
        assert rows.dtype == np.int64 and rows.shape == (26, 5)
        np.testing.assert_array_equal(rows[:, 0], np.arange(26))


@pytest.mark.parametrize("gap, tracks", [(3, 1), (4, 2)])
def test_a_track_survives_max_lost_missing_frames_and_ends_after_more(gap, tracks):
    # 2 px/frame on a 10 px box: after the gap only the moving prediction still overlaps it
    rows = linear(0, 19, 10, 10, 2, 0, 10, 10)
    seen = rows[(rows[:, 0] < 8) | (rows[:, 0] >= 8 + gap)]
    out = track(detections_of([(seen, 0.9)], 20), TrackerConfig(max_lost=3))
    assert len(out) == tracks
    assert set().union(*(rows_set(r) for _, r in out)) == rows_set(seen)
    if tracks == 2:
        assert out[0][1][:, 0].tolist() == list(range(8))
        assert out[1][1][:, 0].tolist() == list(range(8 + gap, 20))


def test_low_confidence_detections_only_extend_tracks():
    cfg = TrackerConfig(high=0.5, low=0.1, new_track=0.6)
    a = linear(0, 9, 10, 10, 1, 0, 10, 10)
    # alone, low (0.3) and high-but-below-new_track (0.55) detections start nothing
    assert track(detections_of([(a, 0.3)], 10), cfg) == []
    assert track(detections_of([(a, 0.55)], 10), cfg) == []
    # after two confident frames, low and 0.55 ones extend the track; below `low` they don't
    dets = detections_of([(a[:2], 0.9), (a[2:5], 0.3), (a[5:7], 0.55), (a[7:], 0.05)], 10)
    out = track(dets, cfg)
    assert len(out) == 1
    assert out[0][1].tolist() == a[:7].tolist()


def test_min_area_drops_tiny_boxes_before_anything_else():
    big = linear(0, 5, 10, 10, 0, 0, 10, 10)        # 100 px^2: kept at min_area 100
    tiny = linear(0, 5, 50, 50, 0, 0, 9, 11)        # 99 px^2
    dets = detections_of([(big, 0.9), (tiny, 0.9)], 6)
    out = track(dets, TrackerConfig(min_area=100))
    assert len(out) == 1 and out[0][1].tolist() == big.tolist()
    assert len(track(dets, TrackerConfig(min_area=0))) == 2


def test_nms_keeps_the_best_of_overlapping_boxes():
    best = linear(0, 5, 0, 0, 0, 0, 10, 10)
    close = linear(0, 5, 2, 0, 0, 0, 10, 10)        # IoU 80 / 120 with best: suppressed
    apart = linear(0, 5, 7, 0, 0, 0, 10, 10)        # IoU 30 / 170 with best: kept
    dets = detections_of([(close, 0.8), (best, 0.9), (apart, 0.7)], 6)
    out = track(dets, TrackerConfig(nms_iou=0.3))
    assert sorted(rows_set(r) == rows_set(best) for _, r in out) == [False, True]
    assert any(rows_set(r) == rows_set(apart) for _, r in out)
    assert len(out) == 2
    assert len(track(dets, TrackerConfig(nms_iou=1.0))) == 3      # NMS off: all three


def test_track_rounds_boxes_and_handles_empty_frames():
    dets = [np.zeros((0, 5), np.float32),
            np.array([[10.4, 20.6, 19.5, 29.4, 0.9]], np.float32),
            np.array([[10.6, 20.4, 19.6, 29.6, 0.9]], np.float32)]
    out = track(dets, TrackerConfig())
    assert len(out) == 1 and out[0][0] == 1
    assert out[0][1].tolist() == [[1, 10, 21, 20, 29], [2, 11, 20, 20, 30]]
    assert track([np.zeros((0, 5))] * 3, TrackerConfig()) == []


# --- from a sidecar --------------------------------------------------------------------------

def small_sidecar() -> dict:
    """A 96 x 96, 60-frame sidecar: people and cars of 6-20 px, two pairs crossing, one late,
    one short (8 frames), one object that never appears."""
    objects = [linear(0, 59, 5, 10, 1.2, 0, 8, 18),
               linear(0, 59, 80, 14, -1.2, 0, 8, 18),          # crosses the first
               linear(0, 59, 40, 70, 0.3, -0.2, 7, 16),
               linear(10, 59, 2, 50, 1.5, 0.1, 20, 10),         # a car, from frame 10
               linear(0, 45, 60, 40, 0, 1.0, 12, 9),
               linear(5, 59, 20, 75, 0.8, -0.5, 6, 14),
               linear(30, 37, 70, 70, -1, 0, 8, 16),            # short: not scored
               np.zeros((0, 5), np.int64)]                      # listed, never seen
    return {"num_frames": 60, "width": 96, "height": 96,
            "objects": [{"id": i + 1, "boxes": r.tolist()} for i, r in enumerate(objects)]}


def test_tracks_from_sidecar_without_noise_are_the_sidecars():
    sidecar = small_sidecar()
    out = tracks_from_sidecar(sidecar, "v.json", None, TrackerConfig(), seed=0)
    expected = sidecar_tracks(sidecar)
    assert [i for i, _ in out] == [i for i, _ in expected] == list(range(1, 9))
    for (_, r1), (_, r2) in zip(out, expected):
        np.testing.assert_array_equal(r1, r2)


def test_tracks_from_sidecar_without_objects_is_a_data_error():
    empty = {"num_frames": 5, "width": 10, "height": 10, "objects": []}
    with pytest.raises(DataError, match="empty.json"):
        tracks_from_sidecar(empty, "empty.json", MILD, TrackerConfig(), seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracking_mildly_noisy_detections_recovers_the_objects(seed):
    sidecar = small_sidecar()
    out = tracks_from_sidecar(sidecar, "v.json", MILD, TrackerConfig(), seed=seed)
    assert all(r.dtype == np.int64 and r.shape[1] == 5 for _, r in out)
    assert [i for i, _ in out] == list(range(1, len(out) + 1))
    scored = recovered = 0
    for _, truth in sidecar_tracks(sidecar):
        if len(truth) <= 10:
            continue
        scored += 1
        true_box = {int(r[0]): r[1:] for r in truth}
        best = 0.0
        for _, rows in out:
            hits = sum(iou(r[None, 1:], true_box[int(r[0])][None])[0, 0] >= 0.5
                       for r in rows if int(r[0]) in true_box)
            best = max(best, hits / len(truth))
        recovered += best >= 0.8
    assert scored == 6
    assert recovered >= 0.8 * scored


def test_track_categories_label_each_track_by_the_class_it_overlaps_most():
    sidecar = {"objects": [
        {"id": 1, "class": "car", "boxes": [[t, 10 + t, 10, 20 + t, 16] for t in range(6)]},
        {"id": 2, "class": "person", "boxes": [[t, 40, 5, 43, 14] for t in range(6)]}]}
    tracks = [(7, np.array([[t, 10 + t, 10, 20 + t, 16] for t in range(6)])),
              (8, np.array([[t, 41, 5, 43, 14] for t in range(3)])),      # IoU 0.75
              (9, np.array([[2, 70, 70, 75, 75]]))]                        # overlaps nothing
    assert track_categories(tracks, sidecar) == {7: "car", 8: "person", 9: "object"}
