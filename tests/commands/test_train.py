"""`tvad train s3m | tvad`: their arguments, and bad configs, a missing dataset or a missing
input folder failing in one line before a run folder is made (nothing here trains)."""
from __future__ import annotations

import pytest

from tvad_jax.jobs import tvad as tvad_jobs

STAGES = ("s3m", "tvad")


def test_help_lists_the_stages(tvad_help):
    text = tvad_help("train")
    assert "s3m" in text and "tvad" in text


@pytest.mark.parametrize("stage, options", [("s3m", ("--config", "--run-dir", "key=value")),
                                            ("tvad", ("--config", "--run-dir",
                                                      "--stage1-from", "key=value"))])
def test_stage_help_names_its_arguments(tvad_help, stage, options):
    text = tvad_help("train", stage)
    for option in options:
        assert option in text


def test_unknown_stage_is_a_usage_error(tvad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tvad("train", "s4m")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tvad train: error: argument") and "invalid choice: 's4m'" in line


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("override, fragments", [
    ("s3m.model.depth=3", ("unknown config key 's3m.model.depth'",)),
    ("s3m.batch_size=1.5", ("'s3m.batch_size'", "cannot parse '1.5' as int")),
    ("tvad.stage1.target=min", ("'tvad.stage1.target'", "'min' is not one of")),
    ("tvad.model.variant", ("override 'tvad.model.variant' is not of the form key=value",)),
    ("s3m.model.measure=bogus", ("'s3m.model.measure'", "expected one of ['legt'")),
    ("s3m.train.loop.steps=-3", ("'s3m.train.loop.steps'", "expected an integer >= 1")),
    ("tvad.stage2.phase_b.loop.steps=-3", ("'tvad.stage2.phase_b.loop.steps'", ">= 1")),
    ("prepare.height=0", ("'prepare.height'", "expected an integer >= 1, got 0")),
])
def test_bad_override_fails_in_one_line_without_a_run_folder(tvad, runs_dir, tmp_path, stage,
                                                             override, fragments):
    run_dir = tmp_path / "run"
    result = tvad("train", stage, "--config", "tiny", "--run-dir", run_dir,
                  f"runs_dir={runs_dir}", override)
    result.failed_with(*fragments)
    assert list(runs_dir.rglob("*")) == [] and not run_dir.exists()


@pytest.mark.parametrize("stage", STAGES)
def test_unknown_config_name_lists_the_known_ones(tvad, runs_dir, stage):
    result = tvad("train", stage, "--config", "s3m", f"runs_dir={runs_dir}")
    result.failed_with("unknown config 's3m'", "tiny")
    assert list(runs_dir.rglob("*")) == []


@pytest.mark.parametrize("stage", STAGES)
def test_missing_dataset_fails_in_one_line_without_a_run_folder(tvad, runs_dir, tmp_path,
                                                               stage):
    missing = tmp_path / "no-such-dataset"
    run_dir = tmp_path / "run"
    result = tvad("train", stage, "--config", "tiny", "--run-dir", run_dir,
                  f"runs_dir={runs_dir}", f"prepare.source={missing}")
    result.failed_with(f"{missing}: dataset root not found")
    assert list(runs_dir.rglob("*")) == [] and not run_dir.exists()


def test_value_the_model_section_rejects_fails_in_one_line(tvad, runs_dir):
    """`tvad.model.rae.grid=0` parses as an int but RAEConfig rejects it: still one line
    naming the key, exit 2, no run folder."""
    result = tvad("train", "tvad", "--config", "tiny", f"runs_dir={runs_dir}",
                  "tvad.model.rae.grid=0")
    result.failed_with("tvad.model.rae.grid")
    assert list(runs_dir.rglob("*")) == []


def test_plain_variant_is_refused_in_one_line(tvad, runs_dir):
    """The plain backbone has nothing to train: a one-line error pointing to
    `tvad eval backbone`, exit 2, no run folder."""
    result = tvad("train", "tvad", "--config", "tiny", f"runs_dir={runs_dir}",
                  "tvad.model.variant=plain")
    result.failed_with("tvad eval backbone")
    assert list(runs_dir.rglob("*")) == []


def test_train_vision_refuses_oversampling(tvad, runs_dir):
    """The upper bound reads clips from the shards: an oversampling request it would ignore
    fails in one line instead, before any output."""
    result = tvad("train", "tvad", "--config", "tiny", f"runs_dir={runs_dir}",
                  "tvad.stage1.train_vision=true", "tvad.stage1.abnormal_repeat=3")
    result.failed_with("tvad.stage1.abnormal_repeat", "train_vision")
    assert list(runs_dir.rglob("*")) == []


@pytest.fixture
def data_ready(monkeypatch):
    """`tvad train tvad` as if the prepared shards existed: the checks that follow the data
    preparation are reached without building a benchmark."""
    monkeypatch.setattr(tvad_jobs, "ensure_prepared_once", lambda cfg, report: None)


def test_missing_backbone_fails_before_a_run_folder(tvad, runs_dir, tmp_path, data_ready):
    """`tvad.backbone` naming no folder is reported in one line; no half-made run folder."""
    missing = tmp_path / "no-such-backbone"
    result = tvad("train", "tvad", f"runs_dir={runs_dir}", f"tvad.backbone={missing}")
    result.failed_with(str(missing))
    assert list(runs_dir.rglob("*")) == []


def test_missing_stage1_model_fails_before_a_run_folder(tvad, runs_dir, tmp_path, data_ready):
    """`--stage1-from` naming no T-VAD model folder is reported in one line; no half-made
    run folder."""
    missing = tmp_path / "no-such-model"
    result = tvad("train", "tvad", "--stage1-from", missing, f"runs_dir={runs_dir}")
    result.failed_with(f"{missing}: not a T-VAD model folder")
    assert list(runs_dir.rglob("*")) == []


def test_backbone_of_another_frame_size_fails_before_a_run_folder(tvad, runs_dir, data_ready):
    """The shipped backbone takes 96 px frames, `tiny` prepares 48 px: one line saying so,
    and no half-made run folder."""
    result = tvad("train", "tvad", "--config", "tiny", f"runs_dir={runs_dir}")
    result.failed_with("the prepared data is 48x48")
    assert list(runs_dir.rglob("*")) == []


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("below", ["", "sub"])
def test_run_dir_that_is_a_file_fails_before_any_work(tvad, runs_dir, tmp_path, stage, below):
    """`--run-dir` naming a file (or a path inside one): one line naming it, before the
    benchmark is even looked for (`synth.out_dir` does not exist)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = tvad("train", stage, "--config", "tiny", "--run-dir", blocker / below,
                  f"runs_dir={runs_dir}", f"synth.out_dir={tmp_path / 'synth'}")
    result.failed_with(f"{blocker}: exists and is not a folder")
    assert sorted(tmp_path.iterdir()) == [blocker, runs_dir] and list(runs_dir.iterdir()) == []


def test_runs_dir_that_is_a_file_fails_before_any_work(tvad, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = tvad("train", "s3m", "--config", "tiny", f"runs_dir={blocker}",
                  f"synth.out_dir={tmp_path / 'synth'}")
    result.failed_with(f"{blocker}: exists and is not a folder")
    assert sorted(tmp_path.iterdir()) == [blocker]


def test_toy_with_negative_steps_fails_before_running(tvad, tmp_path):
    """`steps=-3` never becomes a "completed" run: one line, nothing made."""
    result = tvad("train", "toy", "--run-dir", tmp_path / "run", "train.loop.steps=-3")
    result.failed_with("'train.loop.steps'='-3': steps: expected an integer >= 1, got -3")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--run-dir", "{file}"], "argument --run-dir: {file}: exists and is not a folder"),
    (["--run-dir", "{file}/run"], "argument --run-dir: {file}: exists and is not a folder"),
    (["--run-dir", "run", "--num-devices", "-1"], "argument --num-devices: expected an "
                                                   "integer >= 0, got -1"),
])
def test_toy_arguments_are_checked_as_they_are_parsed(tvad, capsys, tmp_path, argv, message):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        tvad("train", "toy", *[a.format(file=blocker) for a in argv])
    assert exit_info.value.code == 2
    assert message.format(file=blocker) in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [blocker]
