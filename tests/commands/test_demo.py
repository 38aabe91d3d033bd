"""`tvad demo`: its arguments, and bad configs or a missing dataset failing in one line
before the demo's run folder is made (nothing here trains)."""
from __future__ import annotations

import pytest


def test_help_names_the_arguments(tvad_help):
    text = tvad_help("demo")
    assert "--config" in text and "key=value" in text


@pytest.mark.parametrize("override, fragments", [
    ("tvad.stage3.steps=1", ("unknown config key 'tvad.stage3.steps'", "stage1", "stage2")),
    ("synth.num_frames=64f", ("'synth.num_frames'", "cannot parse '64f' as int")),
    ("tvad.model.prompt_maps=all", ("'tvad.model.prompt_maps'", "'all' is not one of")),
    ("synth.num_frames:64", ("override 'synth.num_frames:64' is not of the form key=value",)),
])
def test_bad_override_fails_in_one_line_without_a_run_folder(tvad, runs_dir, override,
                                                             fragments):
    result = tvad("demo", "--config", "tiny", f"runs_dir={runs_dir}", override)
    result.failed_with(*fragments)
    assert list(runs_dir.rglob("*")) == []


def test_unknown_config_name_lists_the_known_ones(tvad, runs_dir):
    result = tvad("demo", "--config", "demo", f"runs_dir={runs_dir}")
    result.failed_with("unknown config 'demo'", "default", "tiny")
    assert list(runs_dir.rglob("*")) == []


def test_value_the_model_section_rejects_fails_in_one_line(tvad, runs_dir):
    """`tvad.model.ahd.temperature=0` parses as a float but AHDConfig rejects it: still one
    line naming the key, exit 2, no run folder."""
    result = tvad("demo", "--config", "tiny", f"runs_dir={runs_dir}",
                  "tvad.model.ahd.temperature=0")
    result.failed_with("tvad.model.ahd.temperature")
    assert list(runs_dir.rglob("*")) == []


def test_missing_dataset_fails_in_one_line_without_a_run_folder(tvad, runs_dir, tmp_path):
    """A dataset root that does not exist is named in one line, before the run folder."""
    missing = tmp_path / "no-such-dataset"
    result = tvad("demo", "--config", "tiny", f"runs_dir={runs_dir}",
                  f"prepare.source={missing}")
    result.failed_with(f"{missing}: dataset root not found")
    assert list(runs_dir.rglob("*")) == []


def test_runs_dir_that_is_a_file_fails_before_anything_is_written(tvad, tmp_path):
    """`runs_dir` naming a file is refused first: no benchmark rendered, no shards."""
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    data = tmp_path / "synthetic"
    result = tvad("demo", "--config", "tiny", f"runs_dir={runs}", f"synth.out_dir={data}")
    result.failed_with(str(runs))
    assert not data.exists()
