"""The S3M job: train and evaluate end to end through the CLI, bad run folders."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tvad_jax.cli import main
from tvad_jax.data import track_windows as tw


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
    train_mean, train_std = tw.feature_stats(
        tw.sequences(tw.read_sidecars(cfg, "train_normal")))
    test_mean, _ = tw.feature_stats(tw.sequences(tw.read_sidecars(cfg, "test")))
    np.testing.assert_allclose(stats["mean"], train_mean, rtol=1e-12)
    np.testing.assert_allclose(stats["std"], train_std, rtol=1e-12)
    assert not np.allclose(stats["mean"], test_mean)  # i.e. not computed on the test split
    assert stats["error_ref"] > 0 and stats["features"] == list(tw.FEATURES)


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
