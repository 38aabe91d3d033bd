"""The S3M job: track features against the sidecar boxes, windows, train + eval end to end."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tvad_jax.cli import main
from tvad_jax.stages import s3m as stage


def test_box_features_by_hand():
    # Frames 0-2 visible, 3-4 hidden, 5-6 visible, 9 alone; rows out of order; W=100, H=50.
    boxes = [[6, 48, 20, 57, 29], [1, 2, 1, 11, 10], [9, 0, 0, 4, 4], [0, 0, 0, 9, 9],
             [5, 50, 20, 59, 29], [2, 4, 2, 15, 13]]
    segments = stage.box_features(boxes, width=100, height=50)
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
    sidecars = stage.read_sidecars(cfg, "train_normal")
    seqs = stage.sequences(sidecars)
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
    seqs = stage.Sequences(["a", "b", "c"], [30, 30, 30], items)
    mean, std = stage.feature_stats(seqs)
    allf = np.concatenate([f for *_, f in items]).astype(np.float64)
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-6)
    win = stage.make_windows(seqs, mean, std, past=10, future=2)
    assert len(win) == (20 - 12 + 1) + 0 + (13 - 12 + 1)
    assert win.past.shape == (11, 10, 6) and win.future.shape == (11, 2, 6)
    assert win.frames.shape == (11, 2) and win.past.dtype == np.float32
    np.testing.assert_array_equal(win.video, [0] * 9 + [2] * 2)
    feats = (items[0][3] - mean) / std
    np.testing.assert_allclose(win.past[4], feats[4:14], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(win.future[4], feats[14:16], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(win.frames[4], [17, 18])  # frames start at 3
    np.testing.assert_array_equal(win.frames[-1], [3 + 11, 3 + 12])

    it = iter(stage.make_dataset(win, batch_size=4, seed=1))
    first = next(it)
    assert first["past"].shape == (4, 10, 6) and first["future"].shape == (4, 2, 6)
    state = it.get_state()
    after = [next(it) for _ in range(5)]  # crosses an epoch boundary (11 windows)
    it.set_state(state)
    for batch in after:
        np.testing.assert_array_equal(next(it)["past"], batch["past"])


def test_frame_scores_max_over_windows():
    win = stage.Windows(past=np.zeros((3, 1, 6)), future=np.zeros((3, 2, 6)),
                        frames=np.array([[2, 3], [3, 4], [1, 2]], np.int32),
                        video=np.array([0, 0, 1], np.int32), videos=["a", "b"],
                        num_frames=[6, 4])
    errors = np.array([1.0, 3.0, 2.0])
    scores = stage.frame_scores(win, errors, error_ref=1.0, future=2)
    # e / (e + 1): 0.5, 0.75, 2/3; frame 3 of "a" is predicted by both windows -> max
    np.testing.assert_allclose(scores["a"], [0, 0, 0.5, 0.75, 0.75, 0], rtol=1e-6)
    np.testing.assert_allclose(scores["b"], [0, 2 / 3, 2 / 3, 0], rtol=1e-6)


@pytest.fixture(scope="module")
def tiny_run(tiny_synth, tmp_path_factory):
    """`tvad train s3m --config tiny` on the session's tiny benchmark: (cfg, run_dir)."""
    cfg, root = tiny_synth
    runs = tmp_path_factory.mktemp("s3m_runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "s3m", "--config", "tiny", f"synth.out_dir={root}",
                     f"runs_dir={runs}"])
    assert code == 0
    run_dir = Path(out.getvalue().strip().splitlines()[-1])
    assert run_dir.parent == runs
    return cfg, run_dir


def test_train_writes_run_folder_with_train_split_stats(tiny_run):
    cfg, run_dir = tiny_run
    for name in ("config.json", "s3m_stats.json", "metrics.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / str(cfg.s3m.train.loop.steps)).is_dir()
    assert json.loads((run_dir / "config.json").read_text())["s3m"]["model"]["past"] == 4
    stats = json.loads((run_dir / "s3m_stats.json").read_text())
    train_mean, train_std = stage.feature_stats(
        stage.sequences(stage.read_sidecars(cfg, "train_normal")))
    test_mean, _ = stage.feature_stats(stage.sequences(stage.read_sidecars(cfg, "test")))
    np.testing.assert_allclose(stats["mean"], train_mean, rtol=1e-12)
    np.testing.assert_allclose(stats["std"], train_std, rtol=1e-12)
    assert not np.allclose(stats["mean"], test_mean)  # i.e. not computed on the test split
    assert stats["error_ref"] > 0 and stats["features"] == list(stage.FEATURES)


def test_loss_decreases_and_beats_copy_last(tiny_run):
    _, run_dir = tiny_run
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loss = np.array([line["train/loss"] for line in lines if "train/loss" in line])
    copy_last = np.array([line["train/copy_last_mse"] for line in lines
                          if "train/copy_last_mse" in line])
    assert len(loss) == 40
    assert loss[-10:].mean() < 0.7 * loss[:5].mean()
    # the untrained model predicts "no change"; the trained one beats that on the same batches
    assert loss[0] == pytest.approx(copy_last[0], rel=1e-5)
    assert loss[-10:].mean() < 0.8 * copy_last[-10:].mean()


def test_eval_run_writes_results(tiny_run, capsys):
    _, run_dir = tiny_run
    capsys.readouterr()
    assert main(["eval", "run", str(run_dir), "--plot"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    for key in ("s3m_sigma0", "s3m_sigma1", "frame_difference_sigma0",
                "frame_difference_sigma1"):
        assert 0.0 <= result[key]["micro_auc"] <= 1.0 and 0.0 <= result[key]["macro_auc"] <= 1.0
    assert result["split"] == "test" and result["videos"] == 4 and result["frames"] == 4 * 32
    assert 0 < result["frames_scored_by_s3m"] <= result["frames"]
    assert result["checkpoint_step"] == 40
    assert json.loads((run_dir / "eval_test.json").read_text()) == result
    assert (run_dir / "eval_test.md").read_text().startswith("### eval_test")
    assert (run_dir / "roc_test.png").stat().st_size > 0


def test_eval_run_bad_folders(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["eval", "run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "run folder not found" in err
    run = tmp_path / "run"
    run.mkdir()
    assert main(["eval", "run", str(run)]) == 2
    assert f"{run / 'config.json'}: missing" in capsys.readouterr().err
    (run / "config.json").write_text("{}")
    assert main(["eval", "run", str(run)]) == 2
    assert f"{run / 'checkpoints'}: no checkpoint" in capsys.readouterr().err
