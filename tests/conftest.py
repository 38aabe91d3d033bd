"""Shared fixtures: one tiny synthetic benchmark and its prepared shards per test session."""
from __future__ import annotations

import dataclasses

import pytest

from tvad_jax import config as config_lib


def tiny_config(tmp_path, **synth):
    """The registered `tiny` config rooted in `tmp_path`."""
    cfg = config_lib.get("tiny")
    return dataclasses.replace(
        cfg, synth=dataclasses.replace(cfg.synth, out_dir=str(tmp_path / "synth"), **synth),
        runs_dir=str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """(config, root) of a tiny synthetic benchmark, built once."""
    from tvad_jax.data.synthetic.generate import synthesize

    cfg = tiny_config(tmp_path_factory.mktemp("tiny"))
    synthesize(cfg.synth)
    return cfg, cfg.synth.out_dir


@pytest.fixture(scope="session")
def tiny_prepared(tiny_synth):
    """(config, prepared_dir) with ArrayRecord shards of the tiny benchmark."""
    from tvad_jax.data.prepare import prepare

    cfg, _ = tiny_synth
    prepare(cfg, report=lambda msg: None)
    return cfg, cfg.prepared_dir
