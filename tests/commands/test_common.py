"""`tvad_jax.commands.common`: the `--config NAME` and `key=value` arguments every
config-driven command shares, and `config_from_args`, which resolves them."""
from __future__ import annotations

import argparse

import pytest

from tvad_jax import config as config_lib
from tvad_jax.commands.common import add_config_args, config_from_args
from tvad_jax.config import ConfigError
from tvad_jax.models import attention


def parse(argv: list[str], default: str = "default") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tvad-test")
    add_config_args(parser, default=default)
    return parser.parse_args(argv)


def test_defaults_are_the_given_config_and_no_overrides():
    """Without arguments the config is the parser's default name and there are no overrides."""
    assert parse([]).config == "default" and parse([]).overrides == []
    assert parse([], default="tiny").config == "tiny"


def test_overrides_keep_their_order():
    args = parse(["--config", "tiny", "synth.seed=1", "runs_dir=x", "synth.seed=2"])
    assert args.config == "tiny"
    assert args.overrides == ["synth.seed=1", "runs_dir=x", "synth.seed=2"]


def test_config_from_args_is_the_named_config_with_overrides_in_order():
    """Overrides apply over the named config (not over `default`) and the last one wins."""
    cfg = config_from_args(parse(["--config", "tiny", "synth.seed=1", "loader.batch_size=3",
                                  "synth.seed=7"]))
    tiny = config_lib.get("tiny")
    assert cfg.synth.seed == 7 and cfg.loader.batch_size == 3
    assert cfg.synth.height == tiny.synth.height == 48      # tiny's, not default's 96
    assert cfg.pretrain == tiny.pretrain
    assert config_from_args(parse(["--config", "tiny"])) == tiny


def test_config_from_args_parses_values_by_field_type():
    cfg = config_from_args(parse(["--config", "tiny", "prepare.splits=test,val",
                                  "prepare.skip_bad=yes", "tvad.model.lora_alpha=8",
                                  "tvad.model.variant=no_rae"]))
    assert cfg.prepare.splits == ("test", "val")
    assert cfg.prepare.skip_bad is True
    assert cfg.tvad.model.lora_alpha == 8.0 and isinstance(cfg.tvad.model.lora_alpha, float)
    assert cfg.tvad.model.variant == "no_rae"


def test_unknown_config_name_lists_the_known_run_configs():
    with pytest.raises(ConfigError, match=r"unknown config 'nope'; known: .*tiny"):
        config_from_args(parse(["--config", "nope"]))


def test_plan_configs_are_not_run_configs():
    """`llava7b` is a `tvad plan` config: a run command does not accept it."""
    with pytest.raises(ConfigError, match="unknown config 'llava7b'"):
        config_from_args(parse(["--config", "llava7b"]))


@pytest.mark.parametrize("override, message", [
    ("synth.frames=3", "unknown config key 'synth.frames'"),
    ("synth.seed=three", "config key 'synth.seed': cannot parse 'three' as int"),
    ("prepare.skip_bad=maybe", "config key 'prepare.skip_bad': cannot parse 'maybe' as bool"),
    ("tvad.model.variant=huge", "config key 'tvad.model.variant': 'huge' is not one of"),
    ("synth=3", "config key 'synth' is a section"),
    ("runs_dir.x=3", "'runs_dir' is not a section"),
    ("seed", "override 'seed' is not of the form key=value"),
    ("=3", "override '=3' is not of the form key=value"),
])
def test_bad_override_raises_config_error_naming_it(override, message):
    with pytest.raises(ConfigError) as err:
        config_from_args(parse(["--config", "tiny", override]))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["attention=flash",
                                      "tvad.model.ahd.num_layers=0",
                                      "tvad.model.rae.grid=0",
                                      "tvad.model.ahd.layer_weighting=mean"])
def test_value_a_section_rejects_raises_config_error_naming_the_key(override):
    """A value that parses but that its section's own checks reject (`__post_init__`) is a
    config error naming the key too, so the CLI reports it in one line."""
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_args(parse(["--config", "tiny", override]))


def test_config_from_args_sets_the_attention_implementation(monkeypatch):
    monkeypatch.setattr(attention, "_default", "auto")
    assert config_from_args(parse(["--config", "tiny", "attention=xla"])).attention == "xla"
    assert attention.resolve(attention._default, None, None) == "xla"
