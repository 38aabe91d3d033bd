"""benchmarks/bench_device.py: the `--scale tiny` run of every workload (in a subprocess, XLA's
CPU backend at its lowest optimization level: half the compile time), its FLOPs against
counts made here, the shared measurement on a function of known FLOPs, the real-scale shapes
(lowered on abstract values only), the peak table and the out-of-memory fallback. Times are
only asserted positive."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from benchmark_scripts import BENCHMARKS, load

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.fixture(scope="module")
def bench():
    return load("bench_device")


@pytest.fixture(scope="module")
def tiny():
    """(report, stderr) of `bench_device.py --scale tiny --repeats 1`."""
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip())
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_device.py"), "--scale",
                           "tiny", "--repeats", "1"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def vit_matmul_flops(width, depth, mlp, patch, tubelet, patches, clips, frames) -> int:
    """Matmul FLOPs of the video ViT forward, counted by hand: the tubelet embedding, per
    layer q/k/v/out (4 D^2) and the MLP (2 D F) per token, and attention within each tubelet
    (scores and values: 2 x 2 x (1+N) x D per token)."""
    tubelets = clips * frames // tubelet
    tokens = tubelets * (1 + patches)
    embed = 2 * tubelets * patches * (tubelet * patch * patch * 3) * width
    layer = 2 * tokens * (4 * width ** 2 + 2 * width * mlp) + 4 * tokens * (1 + patches) * width
    return embed + depth * layer


@pytest.mark.slow   # ~35 s of compiles; `make test-slow` and `make bench` run it
def test_tiny_run_reports_every_workload(tiny):
    report, stderr = tiny
    assert report["device_kind"] == "cpu" and report["jax"] == jax.__version__
    assert report["scale"] == "tiny" and report["abstract"] is False
    assert report["peak_bf16_flops_per_s"] is None and "cpu" in report["peak_note"]
    assert set(report["flops_source"]) >= {"flops_per_step", "flops_jaxpr_matmul", "mfu"}
    rows = report["workloads"]
    assert list(rows) == ["vit_l14_video", "decoder_7b_lora_step", "ahd_stage1_step",
                          "qwen_vision_tower"]
    for name, row in rows.items():
        assert row["lower_s"] > 0 and row["compile_s"] > 0 and row["step_s"] > 0, name
        assert row["repeats"] == 1 and row["what"]
        assert row["flops_per_step"] > 0 and row["flops_xla_raw"] > 0
        assert row["flops_jaxpr_matmul"] > 0
        assert row["mfu_flops"] == "flops_per_step" and row["mfu"] is None
        assert row["achieved_flops_per_s"] == pytest.approx(row["flops_per_step"]
                                                            / row["step_s"])
        assert row["memory_bytes"]["arguments"] > 0
        rates = [k for k in row if k.endswith("_per_s") and k != "achieved_flops_per_s"]
        assert rates and all(row[k] > 0 for k in rates)
        assert f"| {name} | {row['batch']} |" in stderr
    # XLA's own figure counts a scanned layer stack once; the reported one counts every layer.
    for name in ("vit_l14_video", "decoder_7b_lora_step", "qwen_vision_tower"):
        assert rows[name]["flops_per_step"] > 1.3 * rows[name]["flops_xla_raw"], name

    dec = rows["decoder_7b_lora_step"]
    assert dec["seq_len"] == 96 == dec["shapes"]["seq_len"] and dec["attempts"] == []
    assert dec["decoder"]["remat"] is True and dec["decoder"]["dtype"] == "bfloat16"
    assert dec["tokens_per_s"] == pytest.approx(dec["batch"] * 96 / dec["step_s"])
    assert dec["batch_shapes"]["visual"] == [[1, 16, 32], "float16"]
    assert dec["trainable_params"] > 0 and dec["frozen_params"] > 0
    ahd = rows["ahd_stage1_step"]
    assert ahd["batch_shapes"]["hidden"][0] == [4, 3, 4, 17, 32]
    assert ahd["frames_per_s"] == pytest.approx(4 * 8 / ahd["step_s"])
    qwen = rows["qwen_vision_tower"]
    assert qwen["grid_thw"] == [2, 16, 16] and qwen["patches"] == 512
    assert qwen["merged_tokens"] == 128


@pytest.mark.slow
def test_vit_flops_match_a_count_by_hand(tiny):
    """The tiny tower (32 wide, 2 layers, MLP 64, 8 px patches on 32 px frames, 2 clips of
    8 frames): the jaxpr count is exactly the count by hand; XLA's adds the elementwise ops
    (norms, softmax, GELU), a fraction more at this width."""
    row = tiny[0]["workloads"]["vit_l14_video"]
    assert row["pixels"] == [2, 8, 32, 32, 3]
    by_hand = vit_matmul_flops(32, 2, 64, 8, 2, 16, 2, 8)
    assert row["flops_jaxpr_matmul"] == by_hand
    assert by_hand <= row["flops_per_step"] < 1.5 * by_hand


def test_measure_counts_every_loop_iteration_and_scales_with_batch(bench):
    """`measure` on a donated-state step of 4 scanned 64 x 64 matmuls: the state is threaded
    through the timed calls (a second call on a donated buffer would fail), the FLOPs are
    2 B K K x 4 (XLA alone reports a quarter), and double with the batch."""
    depth, k = 4, 64

    def step(x, w):
        out, _ = jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w)
        return out, out.sum()

    fn = jax.jit(step, donate_argnums=0)
    rows = {}
    for batch in (8, 16):
        def make_args(batch=batch):
            return (jnp.ones((batch, k)),
                    jax.random.normal(jax.random.key(0), (depth, k, k)) / 8)

        rows[batch] = row = bench.measure(fn, make_args, repeats=2, carry=True)
        matmuls = 2 * batch * k * k * depth
        assert row["flops_jaxpr_matmul"] == matmuls
        assert matmuls <= row["flops_per_step"] < 1.1 * matmuls
        assert row["flops_xla_raw"] < 0.5 * matmuls
        assert row["step_s"] > 0 and row["compile_s"] > 0
    assert rows[16]["flops_per_step"] == pytest.approx(2 * rows[8]["flops_per_step"], rel=0.01)


def test_attention_check_measures_each_path_against_float32(bench, monkeypatch):
    rows = bench.attention_check("tiny", "auto")
    assert list(rows) == list(bench.ATTENTION_CASES["tiny"])
    for name, row in rows.items():
        assert row["implementation"] == "einsum", name          # "auto" on this CPU
        for errors in row["rel_err_vs_float32_xla"].values():
            assert 1e-4 < errors["out"] < 2e-2 and 1e-4 < errors["grad"] < 2e-2, name
    # A bf16 path that drops the mask is caught by the masked case, not by the plain one.
    attention = bench.attention_lib.attention

    def maskless_in_bf16(q, k, v, mask=None, **kw):
        return attention(q, k, v, None if q.dtype == jnp.bfloat16 else mask, **kw)

    monkeypatch.setattr(bench.attention_lib, "attention", maskless_in_bf16)
    broken = bench.attention_check("tiny", "auto")
    assert broken["key-only mask (Qwen windows)"]["rel_err_vs_float32_xla"]["einsum"][
        "out"] > 0.1
    assert broken["plain (ViT-L)"]["rel_err_vs_float32_xla"]["einsum"]["out"] < 2e-2


def test_finish_mfu_and_the_fallback_count(bench):
    row = {"step_s": 0.5, "flops_per_step": 4e12, "flops_jaxpr_matmul": 3e12}
    out = bench.finish(dict(row), {"tokens": 1000}, peak=989e12)
    assert out["achieved_flops_per_s"] == 8e12 and out["tokens_per_s"] == 2000
    assert out["mfu"] == round(8e12 / 989e12, 4) and out["mfu_flops"] == "flops_per_step"
    # A loop correction blind to the matmuls (library calls): the jaxpr count is used.
    out = bench.finish(dict(row, flops_per_step=1e11), {"tokens": 1000}, peak=None)
    assert out["mfu_flops"] == "flops_jaxpr_matmul" and out["achieved_flops_per_s"] == 6e12
    assert out["mfu"] is None
    # One that saw part of them (61% of the Qwen tower's on an H200) is not used either.
    out = bench.finish(dict(row, flops_per_step=2.5e12), {"tokens": 1000}, peak=None)
    assert out["mfu_flops"] == "flops_jaxpr_matmul"
    assert bench.finish({"lower_s": 1.0}, {"tokens": 1}, 1.0) == {"lower_s": 1.0}


def test_peak_table(bench):
    assert bench.device_peak("NVIDIA H200") == ("NVIDIA H200", 989e12)
    assert bench.device_peak("NVIDIA H100 80GB HBM3")[1] == 989e12
    assert bench.device_peak("NVIDIA H100 PCIe")[1] == 756e12
    assert bench.device_peak("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert bench.device_peak("TPU v4")[1] == 275e12
    assert bench.device_peak("TPU v5 lite")[1] == 197e12
    assert bench.device_peak("TPU v5p")[1] == 459e12
    assert bench.device_peak("TPU v6 lite")[1] == 918e12
    assert bench.device_peak("cpu") == (None, None)


def test_largest_that_fits(bench):
    def run(seq):
        if seq > 1024:
            raise RuntimeError(f"RESOURCE_EXHAUSTED: Out of memory allocating {seq}")
        return {"seq_len": seq}

    row = bench.largest_that_fits((2048, 1536, 1024, 512), run)
    assert row["seq_len"] == 1024
    assert [a["candidate"] for a in row["attempts"]] == [2048, 1536]
    assert "RESOURCE_EXHAUSTED" in row["attempts"][0]["error"]
    failed = bench.largest_that_fits((4096,), run)
    assert "error" in failed and len(failed["attempts"]) == 1
    with pytest.raises(ValueError):                     # other errors are not swallowed
        bench.largest_that_fits((1,), lambda seq: (_ for _ in ()).throw(ValueError("bug")))


def test_real_scale_shapes_lower(bench):
    """The real-scale workloads traced and lowered on abstract values (nothing allocated or
    compiled): the shapes and the jaxpr's matmul FLOPs of ViT-L/14-336 on 8 clips of 16
    frames, of the 7B stage-2 step at sequence 2048, and of the Qwen tower on 4 videos."""
    opts = bench.parse_args(["--scale", "real", "--abstract", "--only",
                             "vit_l14_video,decoder_7b_lora_step,qwen_vision_tower"])
    rows = bench.run(opts)["workloads"]
    vit = rows["vit_l14_video"]
    assert vit["pixels"] == [8, 16, 336, 336, 3] and vit["tokens_per_step"] == 8 * 8 * 577
    assert vit["tower"] == dict(width=1024, depth=24, heads=16, mlp_dim=4096, patch=14,
                                attention="frame", dtype="bfloat16")
    assert vit["flops_jaxpr_matmul"] == vit_matmul_flops(1024, 24, 4096, 14, 2, 576, 8, 16)
    assert "step_s" not in vit and "compile_s" not in vit

    dec = rows["decoder_7b_lora_step"]
    assert dec["seq_len"] == 2048 and dec["attempts"] == []
    assert dec["decoder"] == dict(width=4096, depth=32, heads=32, mlp_dim=11008,
                                  vocab_size=32064, dtype="bfloat16", remat=True,
                                  remat_policy="full")
    assert dec["batch_shapes"]["visual"] == [[1, 1152, 4096], "float16"]
    text = dec["shapes"]["text_len"]
    assert dec["batch_shapes"]["ids"] == [[1, text], "int32"]
    assert 1152 + dec["shapes"]["prompt_tokens"] + text <= 2048
    assert 6.7e9 < dec["frozen_params"] < 6.8e9
    # Frozen base, LoRA: forward + the forward remat recomputes + the input gradients,
    # about 6 x params x tokens (attention and the adapters add a little).
    ratio = dec["flops_jaxpr_matmul"] / (6 * dec["frozen_params"] * 2048)
    assert 0.95 < ratio < 1.15

    qwen = rows["qwen_vision_tower"]
    assert qwen["grid_thw"] == [8, 24, 24] and qwen["patches"] == 4 * 8 * 576
    assert qwen["merged_tokens"] == 4 * 1152 and qwen["tower"]["full_blocks"] == [7, 15, 23, 31]
