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


@pytest.mark.parametrize("override, expected", [
    ("prepare.height=0", "height: expected an integer >= 1, got 0"),
    ("prepare.width=-4", "width: expected an integer >= 1, got -4"),
    ("prepare.splits=", "splits: expected at least one split"),
    ("prepare.split_files=train", "'train' is not split=file[+file...]"),
    ("prepare.split_files=train=a.txt+", "'train=a.txt+' is not split=file[+file...]"),
    ("prepare.split_files==a.txt", "'=a.txt' is not split=file[+file...]"),
    ("prepare.split_files=test=a.txt;test=b.txt", "split 'test' given twice"),
    ("s3m.train.loop.steps=-3", "steps: expected an integer >= 1, got -3"),
    ("tvad.stage1.train.loop.steps=0", "steps: expected an integer >= 1, got 0"),
    ("tvad.stage1.train.optim.accumulation_steps=0", "accumulation_steps: expected an integer"),
    ("s3m.train.checkpoint.every_steps=-1", "every_steps: expected an integer >= 0"),
    ("s3m.model.measure=bogus", "measure: expected one of ['legt', 'lmu', 'legs', 'paper003']"),
    ("s3m.model.past=0", "past: expected an integer >= 1, got 0"),
    ("s3m.batch_size=0", "batch_size: expected an integer >= 1, got 0"),
    ("tvad.stage1.view.clip_len=0", "clip_len: expected an integer >= 1, got 0"),
    ("tvad.stage2.dtype=float16", "dtype: expected one of ['float32', 'bfloat16']"),
    ("tvad.max_new_tokens=-1", "max_new_tokens: expected an integer >= 1, got -1"),
    ("pretrain.caption_len=0", "caption_len: expected an integer >= 1, got 0"),
    ("loader.batch_size=0", "batch_size: expected an integer >= 1, got 0"),
])
def test_values_outside_their_domain_fail_in_one_line_naming_the_key(override, expected):
    """Each section checks its own values when built, so an override outside the field's
    domain fails at once (before any job runs), naming the key and what was expected."""
    key = override.partition("=")[0]
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.resolve("tiny", [override])
    message = str(info.value)
    assert message.startswith(f"config key {key!r}="), message
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("key, value, kind", [
    ("loader.batch_size", "1_0", "int"), ("loader.batch_size", "\u0661", "int"),
    ("s3m.sigma", "1_0.5", "float"), ("s3m.sigma", "nan", "float"), ("s3m.sigma", "-inf", "float"),
    ("tvad.stage2.phase_a.optim.learning_rate", "1e400", "float"), ("loader.std", "inf", "float"),
])
def test_numbers_are_plain_ascii_and_finite(key, value, kind):
    """Python's int() and float() take '1_0' (as 10), other scripts' digits and 'nan' or
    'inf'; an override takes none of them, whether or not its section checks the value."""
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.resolve("tiny", [f"{key}={value}"])
    assert str(info.value) == f"config key {key!r}: cannot parse {value!r} as {kind}"


def test_plan_values_are_checked_too():
    with pytest.raises(config_lib.ConfigError, match="'frames'='0': frames: expected an int"):
        config_lib.resolve("tiny", ["frames=0"], kind="plan")


def test_every_named_config_passes_its_own_checks():
    for kind in ("run", "plan"):
        for name in config_lib.names(kind):
            config_lib.get(name, kind)


def test_unknown_config_name():
    with pytest.raises(config_lib.ConfigError, match="unknown config 'nope'"):
        config_lib.get("nope")


def test_save_and_load_round_trip(tmp_path):
    cfg = config_lib.resolve("tiny", ["synth.seed=7", "prepare.splits=train,test"])
    path = config_lib.save(cfg, tmp_path / "config.json")
    assert json.loads(path.read_text())["synth"]["seed"] == 7
    assert config_lib.load(Config, path) == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_an_optional_tuple_loads_as_a_tuple(tmp_path):
    """`tuple[int, int] | None` (the AHD's grid) comes back from JSON as the tuple it was
    (a list would make the frozen config unhashable, and jit takes it as a static argument)."""
    cfg = config_lib.resolve("tiny", ["tvad.model.ahd.grid=8,12"])
    loaded = config_lib.load(Config, config_lib.save(cfg, tmp_path / "config.json"))
    assert loaded.tvad.model.ahd.grid == (8, 12) and loaded == cfg
    hash(loaded.tvad.model)
    cfg = config_lib.resolve("tiny")
    assert config_lib.load(Config, config_lib.save(cfg, tmp_path / "c.json")).tvad.model.ahd \
        .grid is None


def test_from_dict_rejects_unknown_fields():
    data = config_lib.to_dict(config_lib.get("tiny"))
    data["synth"]["colour"] = "red"
    with pytest.raises(config_lib.ConfigError, match="colour"):
        config_lib.from_dict(Config, data)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_lib.get("default").synth.seed = 3
