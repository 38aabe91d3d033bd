"""benchmarks/bench_qwen_vl.py: the `--quick` run's JSON and table, and its analytic FLOP
counts against the dot_generals of the jaxpr. Nothing is asserted on time."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    """A benchmark script as a module (benchmarks/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                 # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _module("bench_qwen_vl")


def test_quick_run_writes_the_report(tmp_path):
    out = tmp_path / "qwen_vl.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_qwen_vl.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report
    assert report["quick"] is True
    assert report["machine"]["peak_matmul_flops"] > 0 and report["machine"]["copy_bandwidth"] > 0
    case = report["cases"]["small"]
    rows = {r["part"]: r for r in case["rows"]}
    assert list(rows) == ["vision/window", "vision/full", "prefill", "step/16", "step/64"]
    for row in rows.values():
        assert row["calls"] >= 3 and row["compile_s"] > 0 and row["flops"] > 0
        assert 0 < row["best_s"] <= row["median_s"]
        assert row["achieved_flops_per_s"] == pytest.approx(row["flops"] / row["median_s"])
        assert row["fraction_of_peak"] == pytest.approx(
            row["achieved_flops_per_s"] / report["machine"]["peak_matmul_flops"])
    depth = case["vision"]["depth"]
    assert rows["vision/window"]["full_blocks"] == [depth - 1] == case["vision"]["full_blocks"]
    assert rows["vision/full"]["full_blocks"] == list(range(depth))
    assert rows["vision/full"]["flops"] > rows["vision/window"]["flops"]
    assert rows["step/64"]["flops"] > rows["step/16"]["flops"]
    assert rows["step/16"]["memory_bound_s"] > 0 and rows["prefill"]["tokens"] == \
        case["merged_tokens"] + 32
    # 4 frames at 224 px: 2 temporal steps of 2 x 2 windows of 64 patches.
    assert (case["grid_thw"], case["windows_per_step"], case["window_slots"],
            case["step_slots"]) == ([2, 16, 16], 4, 64, 256)
    summary = case["summary"]
    assert summary["full_over_window_time"] > 0 and summary["full_over_window_flops"] > 1
    assert summary["vision_window_frames_per_s"] > 0 and summary["vision_full_frames_per_s"] > 0
    assert "| small | vision/window |" in done.stderr and "| small | step/64 |" in done.stderr


def test_block_pattern(bench):
    case = bench.CASES["small"]
    assert bench.qwen_config(case).vision.full_blocks == (7,)
    assert bench.qwen_config(case, full_everywhere=True).vision.full_blocks == tuple(range(8))
    deep = bench.Case(vision=dict(case.vision, depth=32), decoder=case.decoder, frames=2,
                      size=224, cache_lengths=())
    assert bench.qwen_config(deep).vision.full_blocks == (7, 15, 23, 31)   # Qwen2.5-VL-7B's


def test_flop_counts_match_the_jaxpr(bench):
    """The analytic counts are the jaxpr's matmuls (scan bodies x depth). The jaxpr holds both
    branches of each block's window/full `cond`, so the tower's count is the dense part plus
    both attentions in every block. 168 px: 6 x 6 merged tokens in padded 4 x 4 windows."""
    from tvad_jax.models import qwen_vl as Q
    from tvad_jax.models.decoder import init_cache

    matmul_flops = _module("bench_backbone").matmul_flops
    case = bench.QUICK_CASES["small"]
    cfg = bench.qwen_config(case)
    v = cfg.vision
    pixels, grid = bench.video(v, 4, 168)
    layout = Q.window_layout(v, grid)
    assert not layout.valid.all()                                # padded windows are counted
    parts = bench.vision_flops(v, layout, pixels.shape[0])
    counted = matmul_flops(bench.vision_fn(v), bench.init_vision(v, 0), jnp.asarray(pixels),
                           *Q.layout_arrays(layout))
    assert counted == parts["dense"] + v.depth * (parts["window_block_attention"]
                                                  + parts["full_block_attention"])
    assert bench.vision_total(v, parts) == parts["dense"] + (
        (v.depth - 1) * parts["window_block_attention"] + parts["full_block_attention"])

    t = cfg.text
    params = bench.init_decoder(cfg, 1)
    tokens, capacity = 10, 30
    assert matmul_flops(bench.prefill_fn(cfg, capacity), params, jnp.zeros((1, tokens, t.width)),
                        jnp.zeros((3, 1, tokens), jnp.int32)) == \
        bench.decoder_flops(t, tokens, capacity)
    assert matmul_flops(bench.step_fn(cfg), params, jnp.zeros((1, 1), jnp.int32),
                        init_cache(t, 1, capacity)) == bench.decoder_flops(t, 1, capacity)
