"""Fixtures of the data tests."""
import dataclasses
import shutil

import pytest


@pytest.fixture
def small(tiny_synth, tmp_path):
    """A config preparing the test split of a copy (mtimes kept) of the tiny benchmark."""
    cfg, root = tiny_synth
    copy = tmp_path / "synth"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("prepared"))
    return dataclasses.replace(
        cfg, synth=dataclasses.replace(cfg.synth, out_dir=str(copy)),
        prepare=dataclasses.replace(cfg.prepare, splits=("test",), annotate=False))
