"""Frame-level AUC: hand-computed cases, scikit-learn on random data, smoothing, bad input."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve as sk_roc_curve

from tvad_jax.errors import EvalInputError, InputError
from tvad_jax.eval import metrics


def test_auc_hand_cases():
    # Pairs (positive, negative): 0.35 loses to 0.4, the other three win -> 3/4.
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    # A tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4.
    assert metrics.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == 0.875


def test_judgment_scores_read_the_sign_as_the_answer():
    abnormal = np.array([True, True, True, False, False])
    gap = np.array([2.0, -0.5, 0.1, -1.0, 0.3])       # "Yes" to two of three abnormal, one of two
    scores = metrics.judgment_scores(abnormal, gap)
    assert scores["yes_rate_abnormal"] == pytest.approx(2 / 3)
    assert scores["yes_rate_normal"] == pytest.approx(1 / 2)
    assert scores["yes_no_logit_balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores["yes_no_logit_auc"] == pytest.approx(roc_auc_score(abnormal, gap))
    # a gap of exactly 0 counts as "No": only a positive gap is "Yes"
    assert metrics.judgment_scores(abnormal, np.zeros(5))["yes_rate_abnormal"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_micro_auc_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 400, size=12)
    labels = {f"v{i}": (rng.random(n) < 0.3).astype(int) for i, n in enumerate(lengths)}
    labels["v0"][:1] = 1  # both classes present overall
    labels["v1"][:1] = 0
    # Rounded scores make many ties.
    scores = {k: np.round(rng.random(len(v)), 2) for k, v in labels.items()}
    names = sorted(labels)
    expected = roc_auc_score(np.concatenate([labels[n] for n in names]),
                             np.concatenate([scores[n] for n in names]))
    assert metrics.micro_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(7)
    labels = (rng.random(500) < 0.4).astype(int)
    scores = np.round(rng.random(500), 1)
    fpr, tpr = metrics.roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(labels, scores))


def test_macro_auc_pads_all_normal_and_all_abnormal_videos():
    labels = {"a": np.array([0, 0, 0]), "b": np.array([1, 1]), "c": np.array([0, 1])}
    scores = {"a": np.array([0.2, 0.1, 0.3]), "b": np.array([0.6, 0.0]),
              "c": np.array([0.7, 0.3])}
    # a: the padded abnormal frame (1.0) beats every normal frame -> 1.
    # b: one normal frame (padding, 0.0): 0.6 wins, 0.0 ties, 1.0 wins -> 2.5 / 3.
    # c: positives 0.3 and 1.0 against 0.7 and 0.0 -> (0 + 1 + 1 + 1) / 4.
    result = metrics.frame_auc(scores, labels)
    assert result.per_video == pytest.approx({"a": 1.0, "b": 2.5 / 3, "c": 0.75})
    assert result.macro_auc == pytest.approx((1.0 + 2.5 / 3 + 0.75) / 3)
    assert metrics.macro_auc(scores, labels) == pytest.approx(result.macro_auc)
    # Micro over a, b, c concatenated: positives 0.6, 0.0, 0.3 vs negatives .2 .1 .3 .7:
    # 3 + 0 + 2.5 wins out of 12 pairs.
    assert result.micro_auc == pytest.approx(5.5 / 12)
    assert result.num_frames == 7


def test_smoothing_matches_explicit_gaussian_convolution():
    rng = np.random.default_rng(1)
    scores = rng.random(50)
    sigma = 2.0
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(scores, radius, mode="symmetric")  # scipy's "reflect"
    expected = np.convolve(padded, kernel, mode="valid")
    np.testing.assert_allclose(metrics.smooth_scores(scores, sigma), expected, atol=1e-12)
    np.testing.assert_array_equal(metrics.smooth_scores(scores, 0.0), scores)


def test_smoothing_is_per_video():
    labels = {"a": np.array([0, 0, 1, 1]), "b": np.array([1, 0, 0, 1])}
    scores = {"a": np.array([0.1, 0.2, 0.9, 0.8]), "b": np.array([0.9, 0.1, 0.2, 0.7])}
    result = metrics.frame_auc(scores, labels, sigma=1.0)
    smoothed = {k: metrics.smooth_scores(v, 1.0) for k, v in scores.items()}
    expected = roc_auc_score(np.r_[labels["a"], labels["b"]], np.r_[smoothed["a"], smoothed["b"]])
    assert result.micro_auc == pytest.approx(expected)
    assert result.sigma == 1.0


def test_read_frame_arrays_and_errors(tmp_path):
    scores_dir, labels_dir = tmp_path / "scores", tmp_path / "labels"
    scores_dir.mkdir()
    labels_dir.mkdir()
    np.save(scores_dir / "01_0014.npy", np.array([0.1, 0.9, 0.4]))
    np.save(labels_dir / "01_0014.npy", np.array([0, 1, 0], dtype=np.uint8))
    result = metrics.frame_auc_from_dirs(scores_dir, labels_dir)
    assert result.micro_auc == 1.0 and result.macro_auc == 1.0

    np.save(scores_dir / "01_0015.npy", np.array([0.1, 0.2]))
    with pytest.raises(EvalInputError, match=r"01_0015\.npy: no matching 01_0015\.npy"):
        metrics.read_frame_arrays(scores_dir, labels_dir)
    np.save(labels_dir / "01_0015.npy", np.array([0, 1, 1]))
    with pytest.raises(EvalInputError, match=r"01_0015\.npy.*shape \(3,\).*shape \(2,\)"):
        metrics.read_frame_arrays(scores_dir, labels_dir)
    np.save(scores_dir / "01_0015.npy", np.array([0.1, np.nan, 0.3]))
    with pytest.raises(EvalInputError, match=r"01_0015\.npy.*frame 1 is nan"):
        metrics.read_frame_arrays(scores_dir, labels_dir)
    np.save(scores_dir / "01_0015.npy", np.array([0.1, 0.2, 0.3]))
    np.save(labels_dir / "01_0015.npy", np.array([0, 2, 1]))
    with pytest.raises(EvalInputError, match=r"01_0015\.npy.*frame 1 is 2, not 0 or 1"):
        metrics.read_frame_arrays(scores_dir, labels_dir)
    np.save(labels_dir / "01_0015.npy", np.zeros((3, 2)))
    with pytest.raises(EvalInputError, match=r"labels/01_0015\.npy: expected one value per"):
        metrics.read_frame_arrays(scores_dir, labels_dir)


def test_api_errors():
    with pytest.raises(EvalInputError, match="both normal and abnormal"):
        metrics.roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(EvalInputError, match="shape"):
        metrics.roc_auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(EvalInputError, match=r"\['b'\]"):
        metrics.micro_auc({"a": np.array([0.5])}, {"a": np.array([1]), "b": np.array([0])})
    with pytest.raises(EvalInputError, match="sigma"):
        metrics.smooth_scores(np.zeros(3), -1.0)


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b""), r"s/v\.npy: not a readable \.npy array"),
    (lambda p: np.save(p, np.array(["0.1", "0.9", "x"])), r"s/v\.npy: expected numbers"),
    (lambda p: np.save(p, np.zeros(0)), r"s/v\.npy: empty array"),
    (lambda p: np.save(p, np.array([0.1, 1.5, 0.2])), r"s/v\.npy: score of frame 1 is 1\.5, "
                                                       r"outside \[0, 1\]"),
    (lambda p: np.save(p, np.array([-0.1, 0.5, 0.2])), r"s/v\.npy: score of frame 0 is -0\.1"),
    (lambda p: np.save(p, np.array([{}, 1, 2], dtype=object)), r"s/v\.npy: not a readable"),
])
def test_bad_score_files_are_named_errors(tmp_path, write, message):
    (tmp_path / "s").mkdir()
    (tmp_path / "l").mkdir()
    np.save(tmp_path / "l" / "v.npy", np.array([0, 1, 0]))
    write(tmp_path / "s" / "v.npy")
    with pytest.raises(InputError, match=message):
        metrics.read_frame_arrays(tmp_path / "s", tmp_path / "l")


def test_nan_sigma_is_refused():
    with pytest.raises(EvalInputError, match="sigma"):
        metrics.smooth_scores(np.zeros(3), float("nan"))


def test_auc_by_type_pools_each_type_with_every_normal_video():
    rng = np.random.default_rng(0)
    lengths = [6, 5, 7, 4, 8]
    types = ["", "running", "", "wrong_way", "running"]
    scores = [rng.random(n).astype(np.float32) for n in lengths]
    labels = [np.zeros(n, np.uint8) if not t else (rng.random(n) < 0.5).astype(np.uint8)
              for n, t in zip(lengths, types)]
    for lab in labels[1::2]:
        lab[:2] = (0, 1)          # both classes in every abnormal video
    out = metrics.auc_by_type(scores, labels, types)
    assert sorted(out) == ["running", "wrong_way"]
    for kind, videos in (("running", [0, 1, 2, 4]), ("wrong_way", [0, 2, 3])):
        expected = roc_auc_score(np.concatenate([labels[v] for v in videos]),
                                 np.concatenate([scores[v] for v in videos]))
        assert abs(out[kind] - expected) < 1e-6, kind
