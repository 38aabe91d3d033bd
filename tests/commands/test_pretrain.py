"""`tvad pretrain`: its arguments, and bad configs or a missing dataset failing in one line
before a run folder is made (nothing here trains)."""
from __future__ import annotations

import pytest


def test_help_names_the_arguments(tvad_help):
    text = tvad_help("pretrain")
    for name in ("--config", "--ship", "--run-dir", "key=value"):
        assert name in text


@pytest.mark.parametrize("override, fragments", [
    ("pretrain.steps=3", ("unknown config key 'pretrain.steps'", "batch_size")),
    ("pretrain.batch_size=big", ("'pretrain.batch_size'", "cannot parse 'big' as int")),
    ("pretrain.model=huge", ("'pretrain.model'", "'huge' is not one of ['default', 'tiny']")),
    ("batch_size", ("override 'batch_size' is not of the form key=value",)),
])
def test_bad_override_fails_in_one_line_without_a_run_folder(tvad, runs_dir, override,
                                                             fragments):
    result = tvad("pretrain", "--config", "tiny", f"runs_dir={runs_dir}", override)
    result.failed_with(*fragments)
    assert list(runs_dir.rglob("*")) == []


def test_unknown_config_name_lists_the_known_ones(tvad, runs_dir):
    result = tvad("pretrain", "--config", "tinyy", f"runs_dir={runs_dir}")
    result.failed_with("unknown config 'tinyy'", "default", "pretrain-quick", "tiny")
    assert list(runs_dir.rglob("*")) == []


def test_value_the_model_section_rejects_fails_in_one_line(tvad, runs_dir):
    """`tvad.model.ahd.num_layers=0` parses as an int but AHDConfig rejects it: still one line
    naming the key, exit 2, no run folder."""
    result = tvad("pretrain", "--config", "tiny", f"runs_dir={runs_dir}",
                  "tvad.model.ahd.num_layers=0")
    result.failed_with("tvad.model.ahd.num_layers")
    assert list(runs_dir.rglob("*")) == []


def test_missing_dataset_fails_in_one_line_without_a_run_folder(tvad, runs_dir, tmp_path):
    """A dataset root that does not exist is named in one line, before the run folder."""
    missing = tmp_path / "no-such-dataset"
    result = tvad("pretrain", "--config", "tiny", f"runs_dir={runs_dir}",
                  f"prepare.source={missing}")
    result.failed_with(f"{missing}: dataset root not found")
    assert list(runs_dir.rglob("*")) == []
