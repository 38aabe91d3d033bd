"""benchmarks/bench_local_patterns.py: the table's arithmetic (rows per video frame, the total
their sum, the paper's Table 6 beside them), the synthetic video and its tracks, and (slow) a
tiny run through `main`. Nothing is asserted on time beyond being positive."""
from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_scripts import load

from tvad_jax.data.object_crops import video_crops


@pytest.fixture(scope="module")
def bench():
    return load("bench_local_patterns")


def test_paper_table6_numbers(bench):
    assert set(bench.PAPER_TABLE6_MS) == set(bench.MODULES)
    assert bench.PAPER_TABLE6_MS["backbone + ITAM"] == 10.1
    assert bench.PAPER_TABLE6_MS["CMAM"] == 0.0078
    assert sum(bench.PAPER_TABLE6_MS.values()) == pytest.approx(22.8878)
    assert bench.PAPER_TOTAL_MS == 83.95


def test_table_reports_ms_per_video_frame_and_the_total_is_their_sum(bench):
    seconds = {name: 0.064 * (i + 1) for i, name in enumerate(bench.MODULES)}  # per video
    first = {name: 1.0 for name in bench.MODULES}
    out = bench.table(seconds, first, {"CMAM": 0.5}, frames=64)
    rows = out["rows"]
    assert list(rows) == list(bench.MODULES)
    for i, name in enumerate(bench.MODULES):
        assert rows[name]["ms_per_frame"] == pytest.approx(i + 1)       # 64 ms / 64 frames
        assert rows[name]["paper_ms_per_frame"] == bench.PAPER_TABLE6_MS[name]
        assert rows[name]["ratio_to_paper"] == pytest.approx((i + 1)
                                                             / bench.PAPER_TABLE6_MS[name])
    assert rows["CMAM"]["compile_s"] == 0.5 and rows["RM"]["compile_s"] == 0.0
    total = out["total"]
    assert total["ms_per_frame"] == pytest.approx(sum(range(1, 8))) == 28
    assert total["fps"] == pytest.approx(1000 / 28)
    assert total["video_s"] == pytest.approx(sum(seconds.values()))
    assert total["compile_s"] == 0.5
    assert total["ratio_to_paper"] == pytest.approx(28 / 83.95)
    assert total["paper_table6_rows_sum_ms"] == pytest.approx(22.8878)


def test_synthetic_video_tracks_every_object_on_every_frame(bench):
    frames, tracks = bench.synthetic_video(12, 3)
    assert frames.shape == (12, 96, 96, 3) and frames.dtype == np.uint8
    assert [obj for obj, _ in tracks] == [1, 2, 3]
    for _, rows in tracks:
        assert rows.shape == (12, 5) and (rows[:, 0] == np.arange(12)).all()
        assert (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 95).all()
        assert (rows[:, 3] >= rows[:, 1]).all() and (rows[:, 4] >= rows[:, 2]).all()
    assert not (frames == frames[:1]).all()           # things move (TME reads motion)
    crops = video_crops(frames, tracks, 32, stride=2)
    assert len(crops) == 3 * 6                        # every object at t = 1, 3, .., 11
    assert crops.pixels.shape == (18, 2, 32, 32, 3)


@pytest.mark.slow   # ~30 s of compiles at any size (the shipped tower, ITAM, SMM, RM)
def test_tiny_run_writes_the_report(bench, tmp_path, capsys):
    out = tmp_path / "local_patterns.json"
    assert bench.main(["--frames", "4", "--objects", "2", "--repeats", "1",
                       "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert json.loads(out.read_text()) == report
    assert report["frames"] == 4 and report["objects"] == 2 and report["repeats"] == 1
    assert report["crops"] == 4 and report["crops_per_crop_frame"] == 2   # t = 1, 3
    assert report["compiles_during_timed_passes"] == 0
    assert set(report["machine"]) >= {"backend", "cpu_count", "jax", "loadavg_before"}
    rows, total = report["table"]["rows"], report["table"]["total"]
    assert list(rows) == list(bench.MODULES)
    for name, row in rows.items():
        assert row["ms_per_frame"] > 0 and row["warmup_s"] > 0, name
        assert row["ms_per_frame"] == pytest.approx(1e3 * report["passes_s"][0][name] / 4)
        assert f"| {name} |" in captured.err
    assert total["ms_per_frame"] == pytest.approx(sum(r["ms_per_frame"] for r in rows.values()))
    assert total["fps"] == pytest.approx(1000 / total["ms_per_frame"])
    assert rows["backbone + ITAM"]["compile_s"] > 0
    assert 1 <= report["caption_tokens_mean"] <= report["sizes"]["text_len"] - 1
    assert set(report["cmam_parts_ms_per_frame"]) == {"sentence_features", "eq1"}
