"""benchmarks/bench_attention.py on tiny shapes: every implementation timed and checked against
the reference path, ratios computed from the times. Nothing is asserted on time."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_tiny_workloads_report_times_ratios_and_agreement(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_attention",
                                                  BENCHMARKS / "bench_attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "WORKLOADS", {
        "joint": dict(batch=1, length=24, heads=2, head_dim=8, causal=False),
        "causal": dict(batch=2, length=16, heads=2, head_dim=8, causal=True)})
    assert bench.main(["--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["workloads"]) == {"joint", "causal"}
    for result in report["workloads"].values():
        for name in bench.IMPLEMENTATIONS:
            timing = result[name]
            assert timing["forward_s"] > 0 and timing["backward_s"] > 0
            assert timing["max_abs_diff_vs_xla"] < 1e-5
            assert timing["forward_speedup_vs_xla"] == (result["xla"]["forward_s"]
                                                        / timing["forward_s"])
