import dataclasses
import json

import pytest

from tvad_jax import config as config_lib
from tvad_jax.jobs.config import Config


def test_registry_lists_the_named_configs():
    assert {"default", "tiny", "ubnormal", "shanghaitech"} <= set(config_lib.names())
    assert isinstance(config_lib.get("default"), Config)


def test_overrides_parse_by_field_type():
    cfg = config_lib.resolve("default", [
        "synth.num_frames=32", "synth.fps=25", "prepare.skip_bad=true",
        "synth.test_anomalies=falling,throwing", "loader.mean=0.5,0.5,0.5",
        "prepare.layout=ubnormal", "synth.abnormal_fraction=0.25"])
    assert cfg.synth.num_frames == 32 and cfg.synth.fps == 25
    assert cfg.prepare.skip_bad is True
    assert cfg.synth.test_anomalies == ("falling", "throwing")
    assert cfg.loader.mean == (0.5, 0.5, 0.5)
    assert cfg.prepare.layout == "ubnormal"
    assert cfg.synth.abnormal_fraction == 0.25
    assert config_lib.get("default").synth.num_frames == 64  # the registry is not mutated


@pytest.mark.parametrize("override, message", [
    ("synth.num_frame=3", "unknown config key 'synth.num_frame'"),
    ("nope=1", "unknown config key 'nope'"),
    ("synth.num_frames=abc", "cannot parse 'abc' as int"),
    ("prepare.layout=kinetics", "not one of"),
    ("prepare.skip_bad=maybe", "cannot parse"),
    ("synth=3", "is a section"),
    ("synth.num_frames", "not of the form key=value"),
])
def test_bad_overrides_fail_loudly(override, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.resolve("default", [override])


def test_unknown_config_name():
    with pytest.raises(config_lib.ConfigError, match="unknown config 'nope'"):
        config_lib.get("nope")


def test_save_and_load_round_trip(tmp_path):
    cfg = config_lib.resolve("tiny", ["synth.seed=7", "prepare.splits=train,test"])
    path = config_lib.save(cfg, tmp_path / "config.json")
    assert json.loads(path.read_text())["synth"]["seed"] == 7
    assert config_lib.load(Config, path) == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_from_dict_rejects_unknown_fields():
    data = config_lib.to_dict(config_lib.get("tiny"))
    data["synth"]["colour"] = "red"
    with pytest.raises(config_lib.ConfigError, match="colour"):
        config_lib.from_dict(Config, data)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_lib.get("default").synth.seed = 3
