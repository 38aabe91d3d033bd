"""benchmarks/bench_vqa.py: the generated-token count, the split clips counted from sidecars
(against what `track_clips` cuts), the rows' and implied times' arithmetic, and a run of
`main` on the random tiny backbone (a few seconds). Nothing is asserted on time beyond being
positive and consistent."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from benchmark_scripts import load

from tvad_jax.data.object_crops import sidecar_tracks, track_clips


@pytest.fixture(scope="module")
def bench():
    return load("bench_vqa")


def test_generated_lengths_count_up_to_and_including_eos(bench):
    eos, pad = 2, 0
    tokens = np.asarray([[5, 6, eos, pad, pad],     # 3 (EOS included)
                         [eos, pad, pad, pad, pad],  # 1
                         [5, 6, 7, 8, 9],            # never ended: max_new_tokens
                         [7, 8, 9, 9, eos]])         # 5
    assert bench.generated_lengths(tokens, eos).tolist() == [3, 1, 5, 5]


def _sidecar(objects, frames=12, size=32):
    return {"num_frames": frames, "width": size, "height": size,
            "objects": [{"id": i, "class": cls, "boxes": [[t, x, 4, x + 5, 10] for t in ts]}
                        for i, (cls, x, ts) in enumerate(objects, 1)]}


class FakeReader:
    def __init__(self, splits):
        self.splits = splits

    def video_names(self, split):
        return list(self.splits[split])

    def read_sidecar(self, name):
        return next(s[name] for s in self.splits.values() if name in s)


def test_split_clips_counts_what_track_clips_cuts(bench):
    """Stride 4: answer frames 3, 7, 11. Video a: a person seen on 0..9 (3, 7), a car on
    2, 3, 7, 11 (all three), a person seen on 0..2 only (none); video b: a cyclist on 3..11
    (3); video c: a car on 1, 2 (none)."""
    videos = {"a": _sidecar([("person", 2, range(10)), ("car", 20, [2, 3, 7, 11]),
                             ("person", 12, range(3))]),
              "b": _sidecar([("cyclist", 8, range(3, 12))]),
              "c": _sidecar([("car", 8, [1, 2])])}
    counts = bench.split_clips(FakeReader({"test": videos}), "test", stride=4, batch=2)
    cut = {name: len(track_clips(np.zeros((12, 32, 32, 3), np.uint8), sidecar_tracks(s),
                                 clip_len=4, stride=4, size=8))
           for name, s in videos.items()}
    assert cut == {"a": 5, "b": 3, "c": 0}
    assert counts["videos"] == 3 and counts["clips"] == sum(cut.values()) == 8
    assert counts["categories"] == {"car": 3, "cyclist": 3, "person": 2}
    assert counts["encode_batches"] == 3 + 2 + 0            # per video, padded to 2
    assert counts["answer_batches"] == 2 + 2 + 1            # per category over the split


def test_rows_stage_and_implied_seconds(bench):
    passes = [{"encode": e, "answers": {"pose": a, "behaviour": 2 * a, "appearance": 3 * a}}
              for e, a in ((2.0, 1.0), (4.0, 0.5), (3.0, 2.0))]
    k, batch = 100, 64                                       # 2 batches, the last padded
    tokens = {p: np.full(k, n) for p, n in (("pose", 4), ("behaviour", 6), ("appearance", 8))}
    steps = {p: np.asarray([n, n]) for p, n in (("pose", 4), ("behaviour", 6),
                                                ("appearance", 8))}
    rows = bench.summarize(passes, k, batch, tokens, steps)
    assert rows["encode"]["seconds"] == 3.0 and rows["encode"]["batches"] == 2
    assert rows["encode"]["clips_per_s"] == pytest.approx(100 / 3)
    assert rows["encode"]["seconds_per_batch"] == 1.5
    pose = rows["answers"]["pose"]
    assert pose["seconds"] == 1.0 and pose["answers_per_s"] == 100.0
    assert pose["tokens"] == 400 and pose["tokens_per_s"] == 400.0
    assert pose["tokens_per_answer_mean"] == 4.0 and pose["decode_steps_per_batch_mean"] == 4.0
    assert rows["answers"]["appearance"]["seconds"] == 3.0
    assert rows["one_prompt"]["seconds"] == pytest.approx(2.0)       # mean of 1, 2, 3
    assert rows["one_prompt"]["tokens_per_answer_mean"] == pytest.approx(6.0)
    # the stage: median over the passes of encode + the prompts (8, 7, 15) / (4, 5, 7)
    assert rows["stage"]["train"]["seconds"] == 8.0
    assert rows["stage"]["test"]["seconds"] == 5.0
    assert rows["stage"]["train"]["clips_per_s"] == pytest.approx(100 / 8)
    assert rows["stage"]["train"]["answer_fraction"] == pytest.approx(1 - 3 / 8)

    counts = {"train_normal": {"videos": 2, "clips": 300, "encode_batches": 6,
                               "categories": {"car": 300}, "answer_batches": 5},
              "test": {"videos": 3, "clips": 200, "encode_batches": 4,
                       "categories": {"car": 200}, "answer_batches": 4}}
    splits = bench.splits_report(counts, rows)
    # encode 1.5 s per batch; answers 0.5, 1.0, 1.5 s per batch (mean 1.0)
    assert splits["train_normal"]["prompts"] == 3 and splits["test"]["prompts"] == 1
    assert splits["train_normal"]["implied_s"] == pytest.approx(6 * 1.5 + 3 * 5 * 1.0)
    assert splits["test"]["implied_s"] == pytest.approx(4 * 1.5 + 4 * 1.0)
    assert splits["test"]["implied_s_full_batches"] == pytest.approx(200 / (100 / 5))
    assert splits["total_implied_s"] == pytest.approx(24 + 10)
    assert bench.splits_report(None, rows) is None


def test_tiny_run_writes_the_report(bench, tmp_path, capsys):
    out = tmp_path / "vqa.json"
    k, batch, new = 6, 4, 5
    assert bench.main(["--tiny", "--clips", str(k), "--batch", str(batch), "--clip-len", "4",
                       "--max-new-tokens", str(new), "--repeats", "3",
                       "--data", str(tmp_path / "missing"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert json.loads(out.read_text()) == report
    assert set(report["machine"]) >= {"backend", "device_kind", "jax", "threads", "cpu_count",
                                      "loadavg_before", "loadavg_after"}
    assert report["machine"]["threads"] >= 1
    assert (report["clips"], report["batch"], report["clip_len"], report["max_new_tokens"],
            report["repeats"], report["frame_size"]) == (k, batch, 4, new, 3, [48, 48])
    assert report["prompts"] == ["pose", "behaviour", "appearance"]
    assert report["compiles_during_timed_passes"] == 0 and report["warmup_compiles"] > 0
    assert len(report["passes_s"]) == 3

    rows = report["rows"]
    enc = rows["encode"]
    assert enc["seconds"] > 0 and enc["batches"] == math.ceil(k / batch) == 2
    assert enc["clips_per_s"] * enc["seconds"] == pytest.approx(k)
    assert enc["seconds"] == pytest.approx(sorted(p["encode"] for p in report["passes_s"])[1])
    assert set(rows["answers"]) == set(report["prompts"])
    for prompt, a in rows["answers"].items():
        assert a["seconds"] > 0, prompt
        assert a["answers_per_s"] * a["seconds"] == pytest.approx(k)
        assert 1 <= a["tokens_per_answer_mean"] <= a["tokens_per_answer_max"] <= new
        assert a["tokens"] == pytest.approx(a["tokens_per_answer_mean"] * k)
        assert a["tokens_per_s"] * a["seconds"] == pytest.approx(a["tokens"])
        assert 1 <= a["decode_steps_per_batch_mean"] <= new
        assert report["answers_distinct"][prompt] >= 1
        assert f"| answers ({prompt}) |" in captured.err
    stage = rows["stage"]
    assert stage["train"]["prompts"] == 3 and stage["test"]["prompts"] == 1
    for s in stage.values():
        assert s["clips_per_s"] * s["seconds"] == pytest.approx(k)
        assert 0 < s["answer_fraction"] < 1
    assert stage["train"]["seconds"] > stage["test"]["seconds"] > enc["seconds"]
    sums = sorted(p["encode"] + sum(p["answers"].values()) for p in report["passes_s"])
    assert stage["train"]["seconds"] == pytest.approx(sums[1])
    assert report["splits"] is None and "missing" in report["splits_note"]
    assert "| encode |" in captured.err and "splits:" in captured.err
