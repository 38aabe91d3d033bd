"""Shared fixtures: one tiny synthetic benchmark and its prepared shards per test session, and
one compilation cache for the session."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import pytest

# Many tests (and the CLI processes they start) compile the same tiny programs: JAX's persistent
# compilation cache, fresh for each session so that nothing carries over between runs, lets
# every program after the first load instead of compile. Made by the session's first process
# (pytest-xdist's workers inherit it) before JAX is imported; subprocesses inherit it too.
_OWN_CACHE = "PYTEST_XDIST_WORKER" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="tvad-test-jit-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from tvad_jax import configs  # noqa: E402,F401  (registers the named configs; after the cache)
from tvad_jax import config as config_lib  # noqa: E402


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


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


@pytest.fixture(scope="session")
def tiny_backbone(tiny_prepared, tmp_path_factory):
    """(config, backbone dir): a random tiny backbone for the tiny benchmark, with a tokenizer
    trained on its annotations (the shipped default is sized for 96 px frames)."""
    import jax

    from tvad_jax.data.pipeline import find_builder_dir
    from tvad_jax.jobs.config import PretrainConfig
    from tvad_jax.jobs.pretrain import backbone_config
    from tvad_jax.models import backbone_io
    from tvad_jax.models.tokenizer import annotation_texts, train_tokenizer
    from tvad_jax.models.vlm import init_params

    cfg, _ = tiny_prepared
    annotations = sorted((find_builder_dir(cfg.prepared_dir) / "annotations").glob("*.jsonl"))
    tokenizer = train_tokenizer(list(annotation_texts(annotations)), vocab_size=400)
    bcfg = backbone_config(PretrainConfig(model="tiny"), len(tokenizer), cfg.prepare.height)
    params = init_params(bcfg, jax.random.key(0))
    directory = tmp_path_factory.mktemp("backbone") / "tiny"
    return cfg, backbone_io.save_backbone(directory, bcfg, params, tokenizer)
