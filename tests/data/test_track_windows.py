"""Track windows: box features by hand and against real sidecar boxes, windows, clips."""
import numpy as np
import pytest

from tvad_jax.data import track_windows as tw


def test_box_features_by_hand():
    # Frames 0-2 visible, 3-4 hidden, 5-6 visible, 9 alone; rows out of order; W=100, H=50.
    boxes = [[6, 48, 20, 57, 29], [1, 2, 1, 11, 10], [9, 0, 0, 4, 4], [0, 0, 0, 9, 9],
             [5, 50, 20, 59, 29], [2, 4, 2, 15, 13]]
    segments = tw.box_features(boxes, width=100, height=50)
    assert len(segments) == 2  # the single-frame segment has no velocity and is dropped
    (f1, x1), (f2, x2) = segments
    np.testing.assert_array_equal(f1, [1, 2])
    np.testing.assert_array_equal(f2, [6])
    # frame 0: cx = (0+9+1)/200 = .05, cy = (0+9+1)/100 = .1, w = 10/100, h = 10/50
    # frame 1: cx = 14/200 = .07, cy = 12/100 = .12, w = .1, h = .2, v = (.02, .02)
    # frame 2: cx = 20/200 = .10, cy = 16/100 = .16, w = .12, h = .24, v = (.03, .04)
    np.testing.assert_allclose(x1, [[0.07, 0.12, 0.10, 0.20, 0.02, 0.02],
                                    [0.10, 0.16, 0.12, 0.24, 0.03, 0.04]], atol=1e-7)
    # frame 5: cx = 110/200 = .55; frame 6: cx = 106/200 = .53, cy = 50/100 = .5
    np.testing.assert_allclose(x2, [[0.53, 0.50, 0.10, 0.20, -0.02, 0.0]], atol=1e-7)


def test_features_agree_with_real_sidecar_boxes(tiny_synth):
    cfg, _ = tiny_synth
    sidecars = tw.read_sidecars(cfg, "train_normal")
    seqs = tw.sequences(sidecars)
    checked = 0
    for v, obj_id, frames, feats in seqs.items:
        sidecar = sidecars[v][1]
        W, H = sidecar["width"], sidecar["height"]
        obj = next(o for o in sidecar["objects"] if o["id"] == obj_id)
        box_at = {row[0]: row[1:] for row in obj["boxes"]}
        for t, (cx, cy, w, h, vx, vy) in zip(frames, feats):
            x0, y0, x1, y1 = box_at[t]
            assert t - 1 in box_at  # every step has its previous frame visible
            px0, py0, px1, py1 = box_at[t - 1]
            # invert the features back to the inclusive pixel box
            assert round((cx - w / 2) * W) == x0 and round((cx + w / 2) * W) - 1 == x1
            assert round((cy - h / 2) * H) == y0 and round((cy + h / 2) * H) - 1 == y1
            assert vx == pytest.approx(((x0 + x1) - (px0 + px1)) / (2 * W), abs=1e-6)
            assert vy == pytest.approx(((y0 + y1) - (py0 + py1)) / (2 * H), abs=1e-6)
            checked += 1
    # every visible frame with a visible predecessor is a step, nothing else
    expected = sum(sum(1 for row in o["boxes"] if row[0] - 1 in {r[0] for r in o["boxes"]})
                   for _, sc in sidecars for o in sc["objects"])
    assert checked == expected > 0


def test_windows_shapes_and_values():
    rng = np.random.default_rng(0)
    lengths = [20, 5, 13]
    items = [(v, 1, np.arange(n) + 3, rng.normal(size=(n, 6)).astype(np.float32))
             for v, n in enumerate(lengths)]
    seqs = tw.Sequences(["a", "b", "c"], [30, 30, 30], items)
    mean, std = tw.feature_stats(seqs)
    allf = np.concatenate([f for *_, f in items]).astype(np.float64)
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-6)
    win = tw.make_windows(seqs, mean, std, past=10, future=2)
    assert len(win) == (20 - 12 + 1) + 0 + (13 - 12 + 1)
    assert win.past.shape == (11, 10, 6) and win.future.shape == (11, 2, 6)
    assert win.frames.shape == (11, 2) and win.past.dtype == np.float32
    np.testing.assert_array_equal(win.video, [0] * 9 + [2] * 2)
    feats = (items[0][3] - mean) / std
    np.testing.assert_allclose(win.past[4], feats[4:14], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(win.future[4], feats[14:16], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(win.frames[4], [17, 18])  # frames start at 3
    np.testing.assert_array_equal(win.frames[-1], [3 + 11, 3 + 12])

    it = iter(tw.make_dataset(win, batch_size=4, seed=1))
    first = next(it)
    assert first["past"].shape == (4, 10, 6) and first["future"].shape == (4, 2, 6)
    state = it.get_state()
    after = [next(it) for _ in range(5)]  # crosses an epoch boundary (11 windows)
    it.set_state(state)
    for batch in after:
        np.testing.assert_array_equal(next(it)["past"], batch["past"])


def test_clips_windows():
    track = np.arange(9)[:, None] * np.ones((1, 2))
    x, y = tw.clips(track, past=4, future=2)
    assert x.shape == (4, 4, 2) and y.shape == (4, 2, 2)
    np.testing.assert_array_equal(x[1, :, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(y[1, :, 0], [5, 6])
    assert tw.clips(track[:5], 4, 2)[0].shape[0] == 0
