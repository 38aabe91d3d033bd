"""`tvad data prepare`: shards keyed by the sources and options, never stale; leftovers of
killed runs removed; one writer per folder."""
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from tvad_jax.data.pipeline import find_builder_dir, open_split, split_names
from tvad_jax.data.prepare import _exclusive, prepare, reader_options, source_fingerprint
from tvad_jax.data.readers import make_reader
from tvad_jax.errors import DataError


@pytest.fixture
def small(tiny_synth, tmp_path):
    """A config preparing the test split of a copy (mtimes kept) of the tiny benchmark."""
    cfg, root = tiny_synth
    copy = tmp_path / "synth"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("prepared"))
    return dataclasses.replace(
        cfg, synth=dataclasses.replace(cfg.synth, out_dir=str(copy)),
        prepare=dataclasses.replace(cfg.prepare, splits=("test",), annotate=False))


def _labels(cfg, name: str) -> np.ndarray:
    source, _ = open_split(cfg.prepared_dir, "test")
    return source[split_names(cfg.prepared_dir, "test").index(name)]["labels"]


def _abnormal_track_file(cfg) -> tuple[str, Path]:
    name = next(n for n in split_names(cfg.prepared_dir, "test") if n.startswith("abnormal"))
    return name, next(Path(cfg.prepare_source).rglob(f"{name}_tracks.txt"))


def test_changed_source_rebuilds_and_supersedes_the_old_shards(small):
    first = prepare(small, report=lambda m: None)
    assert prepare(small, report=lambda m: None) == first          # unchanged: reused
    name, tracks = _abnormal_track_file(small)
    obj, start, end = map(int, tracks.read_text().splitlines()[0].split(","))
    tracks.write_text(f"{obj},{start},{start}\n")                  # a one-frame anomaly now
    second = prepare(small, report=lambda m: None)
    assert second != first and not first.exists()
    assert find_builder_dir(small.prepared_dir) == second
    assert _labels(small, name).sum() == 1


def test_options_change_the_fingerprint(small):
    options = {}
    base = source_fingerprint(small, options)
    assert source_fingerprint(small, options) == base
    wider = dataclasses.replace(small, prepare=dataclasses.replace(small.prepare, width=64))
    assert source_fingerprint(wider, options) != base
    assert source_fingerprint(small, {"split_files": {"test": ["a.txt"]}}) != base


def test_leftovers_of_a_killed_run_are_removed(small):
    out = prepare(small, report=lambda m: None)
    stale = out.parent / "incomplete.ABC123_1.0.0"
    (stale / "sub").mkdir(parents=True)
    other = out.parent.parent / "synthetic_8x8_000000000000" / "incomplete.XYZ_1.0.0"
    other.mkdir(parents=True)
    (out / "annotations").mkdir()
    (out / "annotations" / ".test.jsonl.tmp123").write_text("half")
    reports = []
    assert prepare(small, report=reports.append) == out
    assert not stale.exists() and not other.parent.exists()
    assert not (out / "annotations" / ".test.jsonl.tmp123").exists()
    assert any("what a killed prepare left" in r for r in reports)


def test_one_prepare_per_folder(small, tmp_path):
    with _exclusive(tmp_path / "out"):
        busy = dataclasses.replace(small, prepare=dataclasses.replace(
            small.prepare, out_dir=str(tmp_path / "out")))
        with pytest.raises(DataError, match="another `tvad data prepare` is writing here"):
            prepare(busy, report=lambda m: None)


def test_conceal_errors_reaches_the_reader(small):
    strict = make_reader(small.prepare.layout, small.prepare_source, **reader_options(small))
    lenient = dataclasses.replace(small, prepare=dataclasses.replace(small.prepare,
                                                                     conceal_errors=True))
    reader = make_reader(lenient.prepare.layout, lenient.prepare_source,
                         **reader_options(lenient))
    assert (strict.conceal_errors, reader.conceal_errors) == (False, True)
    assert source_fingerprint(small, reader_options(small)) != source_fingerprint(
        lenient, reader_options(lenient))
