"""Paper 004's detector as a job: train and evaluate end to end through the CLI (tiny config,
random tiny backbone), the answers' track windows, the kNN baseline, bad input."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tvad_jax import config as config_lib
from tvad_jax.cli import main
from tvad_jax.errors import DataError
from tvad_jax.jobs.vlavad import (SplitAnswers, evaluate_vlavad_run, knn_distance,
                                  track_windows)


@pytest.fixture(scope="module")
def tiny_run(tiny_backbone, tmp_path_factory):
    cfg, backbone = tiny_backbone
    runs = tmp_path_factory.mktemp("vlavad_runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "vlavad", "--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
                     f"runs_dir={runs}", f"vlavad.backbone={backbone}"])
    assert code == 0
    return cfg, Path(out.getvalue().strip().splitlines()[-1])


def test_train_then_eval_through_the_cli(tiny_run, capsys):
    cfg, run_dir = tiny_run
    for name in ("config.json", "vlavad_stats.json", "predictor/metrics.jsonl",
                 "answers/train_normal.json", "answers/train_normal.npy"):
        assert (run_dir / name).is_file(), name
    stats = json.loads((run_dir / "vlavad_stats.json").read_text())
    spa = stats["spa"]
    assert len(spa["prompts"]) == 1 and spa["prompts"][0] in ("pose", "behaviour", "appearance")
    # the chosen prompt is the most concentrated one
    assert spa["concentrations"][spa["prompts"][0]] == max(spa["concentrations"].values())
    stored = json.loads((run_dir / "answers/train_normal.json").read_text())
    assert set(stored["answers"]) == {"pose", "behaviour", "appearance"}
    assert sum(spa["counts"][spa["prompts"][0]].values()) == len(stored["frame"])
    assert stats["train_windows"] > 0 and stats["error_ref"] >= 0
    capsys.readouterr()
    assert main(["eval", "run", str(run_dir), "--split", "test"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"] == "test" and summary["clips"] > 0
    for method in ("vlavad", "spa", "s3m_answers", "knn_visual", "frame_difference"):
        assert 0.0 <= summary[method]["micro_auc"] <= 1.0, method
    assert json.loads((run_dir / "eval_test.json").read_text()) == summary
    # the test split's answers are stored, to the chosen prompt only
    test_answers = json.loads((run_dir / "answers/test.json").read_text())["answers"]
    assert set(test_answers) == set(spa["prompts"])


def test_track_windows_follow_each_track_and_restart_at_a_gap():
    job = config_lib.resolve("tiny", ["vlavad.answer_stride=4"]).vlavad   # L_p 2 -> L_f 1
    frames = np.array([3, 7, 11, 15, 23, 27, 31, 3, 7, 11])   # object 1 skips frame 19
    objects = np.array([1] * 7 + [2] * 3)
    emb = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    a = SplitAnswers(["v"], {"v": np.zeros(32, np.int64)}, np.zeros(10, np.int64), frames,
                     objects, ["person"] * 10, {}, np.zeros((10, 4), np.float32))
    w = track_windows(a, emb, job)
    # object 1: [3,7,11,15] -> 2 windows, [23,27,31] -> 1; object 2: [3,7,11] -> 1
    assert sorted(w.frames[:, 0].tolist()) == [11, 11, 15, 31]
    row = int(np.flatnonzero(w.frames[:, 0] == 31)[0])
    np.testing.assert_allclose(w.past[row, :, 0], [4, 5])      # rows of frames 23 and 27
    np.testing.assert_allclose(w.future[row, :, 0], [6])


def test_knn_distance_is_one_minus_the_nearest_cosine():
    bank = np.array([[1.0, 0.0], [0.0, 2.0]])
    queries = np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(knn_distance(bank, queries), [0.0, 1 - 2 ** -0.5, 1.0],
                               atol=1e-6)


def test_eval_of_an_unfinished_run_names_the_missing_file(tmp_path):
    with pytest.raises(DataError, match="vlavad_stats.json"):
        evaluate_vlavad_run(tmp_path)
