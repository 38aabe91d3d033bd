"""benchmarks/bench_peer.py on toy sizes without torch (not a test dependency): our side of
every workload is timed, the gradient once per weight-gradient form and remat form with its HLO
counts, and every peer field is null. Nothing is asserted on time."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_tiny_workloads_without_torch_report_our_side(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_peer", BENCHMARKS / "bench_peer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "_torch", lambda: None)
    workloads = "decoder_shipped,greedy_decode,vit_b_frames,vit_joint_shipped"
    assert bench.main(["--tiny", "--repeats", "1", "--only", workloads,
                       "--remat", "none,dots"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["peer"] is None
    lm = report["workloads"]["decoder_shipped"]
    assert set(lm["ours"]["gradient_by_weight_grad"]) == {"direct", "autodiff"}
    assert set(lm["ours"]["gradient_by_remat"]) == {"none", "dots"}
    assert lm["ours"]["gradient_s"] == lm["ours"]["gradient_by_weight_grad"]["direct"][
        "gradient_s"]
    assert lm["ours"]["gradient_over_forward"] == lm["ours"]["gradient_s"] / lm["ours"][
        "forward_s"]
    assert lm["peer"] is None and set(lm["peer_time_over_ours"].values()) == {None}
    assert set(report["workloads"]["greedy_decode"]) == {"batch_4", "batch_1"}
    assert report["workloads"]["vit_b_frames"]["ours"]["forward_s"] > 0
    joint = report["workloads"]["vit_joint_shipped"]
    assert joint["ours"]["tokens"] == 2 * 1 * (4 * 4 + 1)  # clips x tubelets x (patches + 1)
    assert joint["peer_time_over_ours_per_token"] is None
