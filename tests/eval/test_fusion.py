"""Object scores to frame scores, min-max normalization and the weighted fusion of detectors."""
import numpy as np
import pytest

from tvad_jax.eval.fusion import choose_weights, frame_max, fuse, minmax
from tvad_jax.eval.metrics import frame_auc


def test_frame_max_covers_the_span_up_to_each_row_and_takes_the_max():
    video = np.array([0, 0, 1])
    frame = np.array([3, 5, 1])
    values = np.array([0.2, 0.7, 0.4])
    out = frame_max(["a", "b"], {"a": 8, "b": 3}, video, frame, values, span=2)
    np.testing.assert_allclose(out["a"], [0, 0, 0.2, 0.2, 0.7, 0.7, 0, 0])
    np.testing.assert_allclose(out["b"], [0.4, 0.4, 0])


def test_minmax_per_video_and_per_split():
    scores = {"a": np.array([1.0, 3.0]), "b": np.array([2.0, 2.0, 5.0])}
    per_video = minmax(scores, "video")
    np.testing.assert_allclose(per_video["a"], [0, 1])
    np.testing.assert_allclose(per_video["b"], [0, 0, 1])
    per_split = minmax(scores, "split")                    # over 1 .. 5
    np.testing.assert_allclose(per_split["a"], [0, 0.5])
    np.testing.assert_allclose(per_split["b"], [0.25, 0.25, 1])
    np.testing.assert_allclose(minmax({"c": np.array([4.0, 4.0])}, "video")["c"], [0, 0])
    with pytest.raises(ValueError, match="normalization"):
        minmax(scores, "frame")


def test_fuse_is_the_weighted_mean_of_the_normalized_parts():
    static = {"a": np.array([0.0, 1.0, 2.0])}
    temporal = {"a": np.array([10.0, 30.0, 20.0])}
    out = fuse({"s": static, "t": temporal}, {"s": 1.0, "t": 0.1}, "video")
    np.testing.assert_allclose(out["a"], (np.array([0, 0.5, 1]) + 0.1 * np.array([0, 1, 0.5]))
                               / 1.1)
    assert out["a"].max() <= 1.0
    with pytest.raises(ValueError, match="different frame counts"):
        fuse({"s": static, "t": {"a": np.zeros(2)}}, {"s": 1, "t": 1}, "video")
    with pytest.raises(ValueError, match="different videos"):
        fuse({"s": static, "t": {"b": np.zeros(3)}}, {"s": 1, "t": 1}, "video")
    with pytest.raises(ValueError, match="weights"):
        fuse({"s": static}, {"s": 0.0}, "video")


def test_choose_weights_finds_the_informative_detector_on_the_simplex_grid():
    rng = np.random.default_rng(0)
    labels = {f"v{i}": (np.arange(40) >= 30 - 5 * i).astype(np.int64) for i in range(4)}
    good = {k: v + 1.5 * rng.random(40) for k, v in labels.items()}     # informative
    noise = {k: rng.random(40) for k in labels}
    other = {k: rng.random(40) for k in labels}
    weights, auc = choose_weights({"good": good, "noise": noise, "other": other}, labels,
                                  per="video", step=0.25)
    assert weights == {"good": 1.0, "noise": 0.0, "other": 0.0}
    assert auc == pytest.approx(frame_auc(minmax(good, "video"), labels).micro_auc)
    assert 0.6 < auc < 1.0
    # Equal AUCs: the most even weights win.
    perfect = {k: v + 0.1 * rng.random(40) for k, v in labels.items()}
    same, auc = choose_weights({"a": perfect, "b": perfect}, labels, per="video", step=0.5)
    assert same == {"a": 0.5, "b": 0.5} and auc == 1.0
    with pytest.raises(ValueError, match="step must divide 1"):
        choose_weights({"a": good}, labels, per="video", step=0.3)
