"""`tvad data prepare`: shards keyed by the sources and options, never stale; leftovers of
killed runs removed; one writer per folder; killed at any moment, a rerun ends as an
uninterrupted run."""
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tvad_jax.data.pipeline import find_builder_dir, open_split, split_names
from tvad_jax.data.prepare import _exclusive, prepare, source_fingerprint
from tvad_jax.data.readers import make_reader, reader_options
from tvad_jax.errors import DataError


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
    bicubic = dataclasses.replace(small, prepare=dataclasses.replace(small.prepare,
                                                                     resample="bicubic"))
    assert source_fingerprint(bicubic, options) != base
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


REPO = Path(__file__).resolve().parents[2]


def _prepare_command(cfg, kill_after: float | None = None) -> float:
    """Run `tvad data prepare` on `cfg`'s source in a subprocess, SIGKILLed after
    `kill_after` seconds unless it ends first; its wall time."""
    argv = [sys.executable, "-m", "tvad_jax.cli", "data", "prepare", "--config", "tiny",
            f"synth.out_dir={cfg.synth.out_dir}"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.monotonic()
    with subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        stderr = proc.stderr.read()
    assert proc.returncode in (0, -signal.SIGKILL), stderr[-4000:]
    return time.monotonic() - start


def _contents(cfg) -> tuple[dict, dict]:
    """What a prepare leaves: ({file: bytes} of every file but the shards and the lock,
    {split: (video names, decoded records)}). The shards are compared by their records:
    their bytes differ between two uninterrupted runs (protobuf map order)."""
    folder = Path(cfg.prepared_dir)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and ".array_record" not in p.name and p.name != ".prepare.lock"}
    records = {}
    for split in cfg.prepare.splits:
        source, _ = open_split(folder, split)
        records[split] = (split_names(folder, split),
                          [{k: np.asarray(v) for k, v in source[i].items()}
                           for i in range(len(source))])
    return files, records


def _same_records(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_kill9_at_a_random_moment_then_rerun_gives_the_same_shards(tiny_synth, tmp_path):
    """`tvad data prepare` SIGKILLed at a random moment of its run (importing, reading videos,
    writing shards or annotations), then the same command again: its folder holds what an
    uninterrupted prepare writes (the same files, shards of the same records), and no
    `incomplete.*` leftover."""
    cfg, root = tiny_synth
    copy = tmp_path / "synth"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("prepared"))
    cfg = dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, out_dir=str(copy)))
    duration = _prepare_command(cfg)
    files, records = _contents(cfg)
    shutil.rmtree(cfg.prepared_dir)
    moment = random.uniform(0.0, duration)
    _prepare_command(cfg, kill_after=moment)
    _prepare_command(cfg)
    again_files, again_records = _contents(cfg)
    assert again_files == files, f"killed after {moment:.2f} s"
    for split, (names, examples) in records.items():
        assert again_records[split][0] == names, (split, f"killed after {moment:.2f} s")
        assert _same_records(again_records[split][1], examples), (split, moment)
    assert not list(Path(cfg.prepared_dir).rglob("incomplete*")), f"killed after {moment:.2f} s"
