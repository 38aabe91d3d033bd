"""benchmarks/bench_hippo.py's PyTorch peer without torch (not a test dependency) and its
summary on hand-made rows. Nothing is asserted on time."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hippo", BENCHMARKS / "bench_hippo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_peer_says_why_it_did_not_run(monkeypatch):
    bench = _bench()
    monkeypatch.setitem(sys.modules, "torch", None)          # `import torch` fails
    row = bench._torch_loop(None, None, None, None, 0.1, {"time": 1.0})
    assert row == {"fn": "torch_loop", "skipped": "torch is not installed"}


def test_summary_sets_the_peer_against_the_fastest_mode():
    rows = [{"fn": "scan", "L": 64, "time_s": 0.4}, {"fn": "chunked", "L": 64, "time_s": 0.2},
            {"fn": "associative", "L": 64, "time_s": 0.8}, {"fn": "conv", "L": 64, "time_s": 1.6},
            {"fn": "torch_loop", "L": 64, "time_s": 0.5},
            {"fn": "final_state", "L": 64, "time_s": 0.01, "ns_per_element": 100.0}]
    summary = _bench().crossovers(rows)
    assert summary["fastest_all_states_mode"] == {64: "chunked"}
    assert summary["torch_time_over_fastest"] == {64: 2.5}
    assert summary["final_state_speedup_over_fastest_all_states"] == {64: 20.0}


def test_summary_names_each_layout_of_a_mode_apart():
    rows = [{"fn": "scan", "layout": "ldp", "L": 64, "time_s": 0.4},
            {"fn": "chunked", "layout": "ldp", "L": 64, "time_s": 0.3},
            {"fn": "chunked", "layout": "dlp", "L": 64, "time_s": 0.2}]
    summary = _bench().crossovers(rows)
    assert summary["fastest_all_states_mode"] == {64: "chunked (dlp)"}
    assert summary["all_states_time_relative_to_fastest"] == {
        64: {"scan": 2.0, "chunked": 1.5, "chunked (dlp)": 1.0}}
