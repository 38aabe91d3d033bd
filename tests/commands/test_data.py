"""`tvad data synth | prepare` and `tvad configs` through `tvad_jax.cli.main`."""
import json
from pathlib import Path

import pytest

from tvad_jax.cli import main


def test_synth_prepare_and_configs(tmp_path, capsys):
    """synth writes the benchmark (and is a no-op when up to date), prepare writes shards of
    the chosen splits with the resolved config, configs lists and prints named configs."""
    out = tmp_path / "synth"
    args = ["--config", "tiny", f"synth.out_dir={out}", "synth.videos_train=2",
            "synth.videos_val=2", "synth.videos_test=2", "synth.videos_train_normal=1",
            "synth.videos_test_seen=1", "prepare.splits=test"]
    assert main(["data", "synth", *args]) == 0
    assert f"synthetic benchmark written to {out}" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["videos_train"] == 2 and len(manifest["videos"]) == 2 + 2 + 2 + 1 + 1
    assert main(["data", "synth", *args]) == 0
    assert "up to date" in capsys.readouterr().err
    assert main(["data", "prepare", *args]) == 0
    err = capsys.readouterr().err
    prepared = Path(err.split("[tvad] prepared shards in ")[1].split()[0])
    assert (prepared / "annotations" / "test.jsonl").is_file()
    saved = json.loads((prepared / "config.json").read_text())
    assert saved["prepare"]["splits"] == ["test"]
    assert main(["configs"]) == 0
    assert "tiny" in capsys.readouterr().out.split()
    assert main(["configs", "tiny", "synth.seed=5"]) == 0
    assert json.loads(capsys.readouterr().out)["synth"]["seed"] == 5


def test_bad_override_and_bad_source_end_with_one_line(tmp_path, capsys):
    """An unknown key and a missing dataset root end with one `tvad: error:` line, exit 2."""
    assert main(["data", "synth", "--config", "tiny", "synth.frames=3"]) == 2
    assert "tvad: error: unknown config key 'synth.frames'" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["data", "prepare", "--config", "tiny", f"prepare.source={missing}"]) == 2
    assert f"tvad: error: {missing}: dataset root not found" in capsys.readouterr().err


@pytest.mark.parametrize("below", ["", "prepared"])
def test_prepare_into_a_file_fails_before_reading_the_source(tmp_path, capsys, below):
    """`prepare.out_dir` that is a file (or inside one): one line naming it, nothing made."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    source = tmp_path / "source"
    source.mkdir()
    code = main(["data", "prepare", "--config", "tiny", f"prepare.source={source}",
                 f"prepare.out_dir={blocker / below}"])
    assert code == 2
    assert f"tvad: error: {blocker}: exists and is not a folder" in capsys.readouterr().err
    assert list(source.iterdir()) == [] and blocker.read_text() == "x"
