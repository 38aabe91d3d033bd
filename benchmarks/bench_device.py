"""Device benchmark suite: T-VAD's real-scale bf16 workloads on one accelerator; prints one
JSON object on stdout and a markdown table on stderr.

    .venv/bin/python benchmarks/bench_device.py [--scale auto|real|tiny] [--only NAME[,...]]
        [--repeats 5] [--batch N] [--seq-len N] [--attention auto] [--remat-policy full]
        [--peak-flops F] [--abstract]
    make bench-device                                  # --scale real

`--scale auto` (the default, so that `make bench` stays CPU-sized) is real on a GPU or TPU and
tiny on CPU. `--abstract` only lowers each workload on abstract values (nothing allocated or
compiled): the real-scale shapes can be checked on any machine.

`--scale tiny` runs the same code paths at toy sizes on CPU
(`tests/benchmarks/test_bench_device.py`); `--scale real` ran on an NVIDIA H200 (the README's
table, raw JSON in `benchmarks/results/`); no TPU yet.

Workloads (`--scale real`; random weights initialized on the device by a jitted init, nothing
read from disk or the network; one device, `jax.devices()[0]`):
  vit_l14_video         the video tower forward: CLIP ViT-L/14-336 (24 x 1024, 16 heads,
                        patch 14, 336 px), 16-frame clips in 2-frame tubelets (8 x 577 tokens),
                        bf16 params and compute, 8 clips per call        -> frames/s, tokens/s
  decoder_7b_lora_step  T-VAD stage 2 phase A train step (RAE + special tokens + LoRA on the
                        frozen 7B decoder: Vicuna-7B, 32 x 4096, 32 heads, MLP 11008,
                        vocabulary 32064) with remat, bf16 compute, the frozen decoder held in
                        bf16 (13.5 GB), sequence 2048 (1152 visual tokens + prompts + text),
                        batch 1; on an out-of-memory error it retries shorter sequences and
                        records what ran                                        -> tokens/s
  ahd_stage1_step       T-VAD stage 1 train step (the AHD) on random cached features of the
                        paper's scale: 4 ViT layers [8 tubelets, 577, 1024] per 16-frame clip,
                        the job's micro-batch of 4 clips                         -> frames/s
  qwen_vision_tower     the Qwen2.5-VL-7B vision tower forward (32 x 1280, 16 heads, gated MLP
                        3420, window attention with full attention at blocks 7/15/23/31, 2 x 2
                        merger to 3584) on 16 frames at 336 px (8 x 24 x 24 patches), bf16,
                        4 videos per call                                 -> frames/s, tokens/s
The two train steps are `tvad plan`'s (`jobs.plan.stage_spec` of the `llava7b` plan, i.e. the
jobs' own `stage1_spec` / `stage2_spec`), built into an engine on a one-device mesh.
`--scale tiny` runs the `tiny` plan's backbone (decoder 32 x 2, 8-frame clips) and a 32-wide
Qwen tower through the same functions.

Before the workloads (not with --abstract), `attention_check`: the attention forms they run
(plain, causal with key lengths, a key-only mask) in bf16, by the implementation they use on
this device and by XLA's, against XLA's float32 path on fresh random inputs: the relative
error of the output and of the q/k/v gradients (report["attention_check"]).

Measured per workload: lower_s and compile_s (AOT `lower` / `compile`, once), step_s (the best
of `--repeats` timed calls after a warm-up, `_machine.best_time`; train steps thread their
donated state through the calls), FLOPs per step, achieved FLOP/s = FLOPs / step_s, MFU =
achieved / the device's published dense bf16 peak (`PEAK_BF16`, matched on
`jax.devices()[0].device_kind`; null with a note for an unknown kind such as CPU, or set
`--peak-flops`), throughput, and XLA's memory analysis of the executable.

FLOPs: `flops_per_step` is XLA's cost analysis of the compiled executable
(`compiled.cost_analysis()`) with loop bodies counted once per iteration
(`tvad_jax.train.flops.step_flops`: XLA alone counts a scanned layer stack once);
`flops_xla_raw` is XLA's figure as it comes. `flops_jaxpr_matmul` is an independent,
backend-neutral count of the matmul FLOPs in the step's jaxpr (`bench_backbone.matmul_flops`:
2 M N K per dot_general, scan bodies x length, both branches of a `cond`). MFU uses
`flops_per_step` unless that is under 0.9 x the jaxpr count, i.e. it missed matmuls (the loop
correction reads `dot`s from the compiled HLO; XLA:GPU turns most of them into cuBLAS
custom-calls, which neither it nor XLA's cost analysis counts: on the H200 the ViT's
`flops_per_step` was 0.01% of its matmuls, the Qwen tower's 61%), then the jaxpr count;
`mfu_flops` names the one used. Both
count the forward recomputed by remat, so a remat step's MFU is its hardware-FLOPs utilization.
Attention run by a fused kernel (cuDNN flash attention: `--attention auto` on a GPU) is a
custom call neither count sees: up to about 10% of these workloads' FLOPs at these sequence
lengths, left out.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _machine  # noqa: E402
from _batches import random_feature_batch  # noqa: E402
from _output import emit  # noqa: E402
from bench_backbone import matmul_flops  # noqa: E402

from tvad_jax import config as config_lib, configs  # noqa: E402,F401  (registers the plans)
from tvad_jax.jobs import plan as plan_lib  # noqa: E402
from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models import attention as attention_lib, qwen_vl as Q  # noqa: E402
from tvad_jax.models.configs import REMAT_POLICIES  # noqa: E402
from tvad_jax.models.vit import VisionTransformer  # noqa: E402
from tvad_jax.train import mesh as mesh_lib  # noqa: E402
from tvad_jax.train.loop import abstract_engine  # noqa: E402
from tvad_jax.train.plan import analyze  # noqa: E402
from tvad_jax.train.state import init_state, split_params  # noqa: E402

# Published dense (no sparsity) bf16 peak FLOP/s per device (one GPU, one TPU chip), first
# substring match on the lower-cased `device_kind` wins (so the specific names come first).
PEAK_BF16 = (
    ("h100 pcie", "NVIDIA H100 PCIe", 756e12),
    ("h100 nvl", "NVIDIA H100 NVL", 835e12),
    ("h200 nvl", "NVIDIA H200 NVL", 835e12),
    ("h100", "NVIDIA H100 SXM", 989e12),
    ("h200", "NVIDIA H200", 989e12),
    ("a100", "NVIDIA A100", 312e12),
    ("l4", "NVIDIA L4", 121e12),
    ("tpu v4", "TPU v4", 275e12),
    ("tpu v5 lite", "TPU v5e", 197e12),
    ("tpu v5e", "TPU v5e", 197e12),
    ("tpu v5", "TPU v5p", 459e12),
    ("tpu v6", "TPU v6e (Trillium)", 918e12),
)

SEQ_LENS = {"real": (2048, 1792, 1536, 1280), "tiny": (96, 80)}
DEFAULT_BATCH = {"real": {"vit_l14_video": 8, "decoder_7b_lora_step": 1, "qwen_vision_tower": 4},
                 "tiny": {"vit_l14_video": 2, "decoder_7b_lora_step": 1, "qwen_vision_tower": 1}}


def device_peak(kind: str) -> tuple[str | None, float | None]:
    """(device name, published dense bf16 FLOP/s) of a `device_kind`, or (None, None)."""
    for pattern, name, peak in PEAK_BF16:
        if pattern in kind.lower():
            return name, peak
    return None, None


# ------------------------------------------------------------------ the shared measurement
def _sds(tree: Any) -> dict:
    return jax.tree.map(lambda x: [list(x.shape), str(x.dtype)], tree)


def measure(fn, make_args: Callable[[], tuple], *, repeats: int, abstract: bool = False,
            carry: bool = False, shardings: Any = None) -> dict:
    """Lower, compile and time `fn` (a jitted function) on `make_args()`.

    make_args() builds the inputs (params included); it runs jitted, so everything is created
    on the device. carry: fn(state, *rest) -> (state, aux) donates its state, which is then
    threaded through the timed calls. abstract: lower on `jax.eval_shape` values and stop (no
    allocation, no compile). Returns the timings and FLOPs (see the module docstring)."""
    specs = jax.eval_shape(make_args)
    t0 = time.perf_counter()
    lowered = fn.lower(*specs)
    out = {"lower_s": round(time.perf_counter() - t0, 3),
           "flops_jaxpr_matmul": matmul_flops(fn, *specs)}
    if abstract:
        return out
    t0 = time.perf_counter()
    compiled = lowered.compile()
    out["compile_s"] = round(time.perf_counter() - t0, 3)
    report = analyze(compiled, {}, 1)
    args = jax.block_until_ready(jax.jit(make_args, out_shardings=shardings)())
    if carry:
        held = [args[0]]

        def call():
            held[0], aux = compiled(held[0], *args[1:])
            return held[0], aux

        step_s = _machine.best_time(call, repeats=repeats)
    else:
        step_s = _machine.best_time(compiled, *args, repeats=repeats)
    del args
    mem = report["per_device_bytes"]
    out.update(step_s=step_s, repeats=repeats, flops_per_step=report["flops_per_device"],
               flops_xla_raw=report["flops_per_device_xla"],
               memory_bytes={k: mem[k] for k in ("arguments", "outputs", "aliased", "temp",
                                                 "peak_estimate")})
    return out


def finish(row: dict, items: dict[str, int], peak: float | None) -> dict:
    """Throughputs (`items`: unit -> count per step), achieved FLOP/s and MFU of a measured
    row."""
    if "step_s" not in row:
        return row
    flops, source = row["flops_per_step"], "flops_per_step"
    if flops is None or flops < 0.9 * row["flops_jaxpr_matmul"]:
        flops, source = row["flops_jaxpr_matmul"], "flops_jaxpr_matmul"
    achieved = flops / row["step_s"]
    row.update({f"{unit}_per_s": n / row["step_s"] for unit, n in items.items()})
    row.update(achieved_flops_per_s=achieved, mfu_flops=source,
               mfu=None if peak is None else round(achieved / peak, 4))
    return row


def largest_that_fits(candidates, run: Callable[[Any], dict]) -> dict:
    """run(c) for each candidate in turn until one does not run out of device memory; its
    row with `attempts` ([{candidate, error}] of the ones that did), or an error row."""
    attempts = []
    for candidate in candidates:
        try:
            return dict(run(candidate), attempts=attempts)
        except Exception as e:  # noqa: BLE001 - XlaRuntimeError and kin
            text = str(e)
            if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
                raise
            attempts.append({"candidate": candidate, "error": text.strip()[:300]})
        gc.collect()  # here, not in the except block: the traceback's arrays are gone now
    return {"error": "out of device memory at every candidate", "attempts": attempts}


# ------------------------------------------------------------------ configs
def plan_config(scale: str, **overrides):
    """The `PlanConfig` of a scale: `llava7b` (the paper's LLaVA-1.5-7B, bf16, remat), or the
    `tiny` plan's backbone with `llava7b`'s engine (bf16 stage 2, remat, accumulation)."""
    real = config_lib.resolve("llava7b", kind="plan")
    if scale == "real":
        return dataclasses.replace(real, **overrides)
    tiny = config_lib.resolve("tiny", kind="plan")
    tiny = dataclasses.replace(tiny, vision_dtype="bfloat16", remat=True, text_len=0,
                               max_seq_len=SEQ_LENS["tiny"][0], job=real.job)
    return dataclasses.replace(tiny, **overrides)


def _key(seed: int) -> jax.Array:
    """A key of the rbg PRNG (XLA's RngBitGenerator) for the random inputs and weights: it
    compiles about 3x faster than threefry on CPU, and values do not change the timings."""
    return jax.random.key(seed, impl="rbg")


def _bf16(tree: Any) -> Any:
    """Floating leaves in bfloat16 (frozen weights held as the models compute with them)."""
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def train_step(pcfg, stage: str, batch: int, repeats: int, abstract: bool) -> dict:
    """One T-VAD stage's train step (`tvad plan`'s spec) on a one-device mesh, measured with
    random params and a random batch. Stage 2's frozen decoder is held in bf16."""
    bcfg = plan_lib.backbone_config(pcfg)
    spec = plan_lib.stage_spec(pcfg, stage, bcfg)
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1), jax.devices()[:1])
    with mesh_lib.mesh_context(mesh):
        engine = abstract_engine(spec, mesh)

        def make_args():
            params = nn.unbox(spec.init_fn(_key(0)))
            trainable, frozen = split_params(params, spec.config.trainable)
            if "decoder" in frozen:
                frozen = dict(frozen, decoder=_bf16(frozen["decoder"]))
            data = random_feature_batch(_key(1), spec.example, batch, bcfg.decoder.vocab_size)
            return init_state(trainable, engine.tx), frozen, data, engine.rng

        shardings = (engine.state_sharding, engine.frozen_sharding, engine.batch_sharding,
                     None)
        row = measure(engine.step, make_args, repeats=repeats, abstract=abstract, carry=True,
                      shardings=shardings)
        shapes = jax.eval_shape(make_args)
    return dict(row, batch=batch, batch_shapes=_sds(shapes[2]),
                trainable_params=int(sum(x.size for x in jax.tree.leaves(shapes[0].params))),
                frozen_params=int(sum(x.size for x in jax.tree.leaves(shapes[1]))),
                accumulation_steps=spec.config.optim.accumulation_steps)


# ------------------------------------------------------------------ the workloads
def vit_l14_video(opts) -> dict:
    """The frozen video tower's forward (the feature-cache pass): CLIP ViT-L/14-336 on
    16-frame clips, bf16 params and compute; `tvad plan`'s `llava7b` vision config."""
    v = plan_lib.backbone_config(plan_config(opts.scale)).vision
    frames = 16 if opts.scale == "real" else v.max_frames
    B = opts.batch or DEFAULT_BATCH[opts.scale]["vit_l14_video"]
    vit = VisionTransformer(v)
    shape = (B, frames, v.image_size, v.image_size, 3)

    def make_args():
        params = vit.init(_key(0), jnp.zeros((1,) + shape[1:], jnp.float32))
        return _bf16(nn.unbox(params)["params"]), jax.random.normal(_key(1), shape)

    fn = jax.jit(lambda p, x: vit.apply({"params": p}, x))
    row = measure(fn, make_args, repeats=opts.repeats, abstract=opts.abstract)
    tokens = B * (frames // v.tubelet) * (1 + v.num_patches)
    return finish(dict(row, batch=B, frames=frames, pixels=list(shape),
                       tower=dict(width=v.width, depth=v.depth, heads=v.heads,
                                  mlp_dim=v.mlp_dim, patch=v.patch_size, attention=v.attention,
                                  dtype=v.dtype),
                       tokens_per_step=tokens), {"frames": B * frames, "tokens": tokens},
                  opts.peak)


def decoder_7b_lora_step(opts) -> dict:
    """T-VAD stage 2 (phase A: LoRA on every layer's q/v + RAE + special tokens) train step on
    the 7B decoder with remat, bf16, at the longest sequence (of `SEQ_LENS`) that fits."""
    B = opts.batch or DEFAULT_BATCH[opts.scale]["decoder_7b_lora_step"]
    seqs = (opts.seq_len,) if opts.seq_len else SEQ_LENS[opts.scale]

    def run(seq: int) -> dict:
        pcfg = plan_config(opts.scale, max_seq_len=seq, text_len=0,
                           remat_policy=opts.remat_policy)
        bcfg = plan_lib.backbone_config(pcfg)
        row = train_step(pcfg, "stage2", B, opts.repeats, opts.abstract)
        d = bcfg.decoder
        return finish(dict(row, seq_len=seq, shapes=dataclasses.asdict(
            plan_lib.shapes(pcfg, bcfg)), decoder=dict(
                width=d.width, depth=d.depth, heads=d.heads, mlp_dim=d.mlp_dim,
                vocab_size=d.vocab_size, dtype=d.dtype, remat=d.remat,
                remat_policy=d.remat_policy)),
            {"tokens": B * seq}, opts.peak)

    return largest_that_fits(seqs, run)


def ahd_stage1_step(opts) -> dict:
    """T-VAD stage 1 (the AHD) train step on random cached ViT features of the paper's scale."""
    pcfg = plan_config(opts.scale)
    B = opts.batch or pcfg.job.stage1.batch_size
    row = train_step(pcfg, "stage1", B, opts.repeats, opts.abstract)
    return finish(dict(row, frames=pcfg.frames), {"frames": B * pcfg.frames}, opts.peak)


def qwen_config(scale: str) -> tuple[Q.QwenVisionConfig, int, int]:
    """(tower config, frames, frame size) of a scale: Qwen2.5-VL-7B's tower on 16 frames at
    336 px, or a 32-wide 2-block one (full attention at block 1) on 4 frames at 224 px."""
    if scale == "real":
        return dataclasses.replace(Q.qwen25vl_7b().vision, dtype="bfloat16"), 16, 336
    return Q.QwenVisionConfig(width=32, depth=2, heads=2, mlp_dim=64, out_width=32,
                              full_blocks=(1,), dtype="bfloat16"), 4, 224


def qwen_vision_tower(opts) -> dict:
    """The Qwen2.5-VL vision tower's forward with its window / full-attention blocks, bf16, a
    batch of videos as one packed sequence (as the processor packs them)."""
    v, frames, size = qwen_config(opts.scale)
    B = opts.batch or DEFAULT_BATCH[opts.scale]["qwen_vision_tower"]
    grid = [frames // v.temporal_patch, size // v.patch_size, size // v.patch_size]
    layout = Q.window_layout(v, [grid] * B)
    n = B * int(np.prod(grid))
    width = v.in_channels * v.temporal_patch * v.patch_size ** 2
    tower = Q.VisionTower(v)

    def make_args():
        layout_args = Q.layout_arrays(layout)
        pixels = jax.random.normal(_key(1), (n, width))
        params = tower.init(_key(0), pixels, *layout_args)
        return (_bf16(nn.unbox(params)["params"]), pixels) + layout_args

    fn = jax.jit(lambda p, x, *lay: tower.apply({"params": p}, x, *lay)[0])
    row = measure(fn, make_args, repeats=opts.repeats, abstract=opts.abstract)
    return finish(dict(row, batch=B, frames=frames, size=size, grid_thw=grid,
                       patches=n, merged_tokens=int((layout.merged >= 0).sum()),
                       tower=dict(width=v.width, depth=v.depth, heads=v.heads,
                                  mlp_dim=v.mlp_dim, full_blocks=list(v.full_blocks),
                                  window_size=v.window_size, dtype=v.dtype)),
                  {"frames": B * frames, "tokens": n}, opts.peak)


# ------------------------------------------------------------------ attention numerics
# The attention forms the workloads run, per scale: q [B, T, N, H], kv heads K, and what masks.
ATTENTION_CASES = {
    "real": {"plain (ViT-L)": (8, 577, 16, 64, 16, {}),
             "causal + key lengths (7B decoder)": (2, 2048, 32, 128, 32,
                                                   {"is_causal": True, "lengths": True}),
             "key-only mask (Qwen windows)": (64, 64, 16, 80, 16, {"key_mask": True})},
    "tiny": {"plain (ViT-L)": (2, 65, 4, 16, 4, {}),
             "causal + key lengths (7B decoder)": (2, 96, 4, 16, 2,
                                                   {"is_causal": True, "lengths": True}),
             "key-only mask (Qwen windows)": (4, 16, 2, 16, 2, {"key_mask": True})},
}


def attention_check(scale: str, implementation: str) -> dict:
    """The relative error (||x - ref|| / ||ref||) of the output and of the q/k/v gradients of
    `models.attention` in bf16, for the implementation the workloads run (`implementation`,
    resolved on this device) and for XLA's, against XLA's path in float32 on the same fresh
    random inputs: the timed kernels must compute the function (bf16 lands near 1e-2)."""
    rows = {}
    for seed, (name, (B, T, N, H, K, kind)) in enumerate(ATTENTION_CASES[scale].items()):
        keys = jax.random.split(_key(100 + seed), 5)
        q = jax.random.normal(keys[0], (B, T, N, H))
        k, v = (jax.random.normal(x, (B, T, K, H)) for x in keys[1:3])
        weight = jax.random.normal(keys[3], (B, T, N, H))
        is_causal = kind.get("is_causal", False)
        lengths = jnp.linspace(T // 3, T, B).astype(jnp.int32) if kind.get("lengths") else None
        mask = None
        if kind.get("key_mask"):   # random keys masked, the first of every row kept
            mask = (jax.random.uniform(keys[4], (B, 1, 1, T)) > 0.3).at[..., 0].set(True)

        def loss_and_grad(dtype, impl):
            def f(q, k, v, weight, mask, lengths):   # arrays as arguments, not as constants
                o = attention_lib.attention(q, k, v, mask, is_causal=is_causal,
                                            key_lengths=lengths, implementation=impl)
                return jnp.sum(o.astype(jnp.float32) * weight), o
            args = tuple(x.astype(dtype) for x in (q, k, v))
            (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
                *args, weight, mask, lengths)
            return out.astype(jnp.float32), [g.astype(jnp.float32) for g in grads]

        chosen = attention_lib.resolve(implementation, q.astype(jnp.bfloat16), k)
        ref_out, ref_grads = loss_and_grad(jnp.float32, "xla")
        errors = {}
        for impl in dict.fromkeys((chosen, "xla")):
            try:
                out, grads = loss_and_grad(jnp.bfloat16, impl)
            except Exception as e:  # noqa: BLE001 - a refusing kernel is a finding: record it
                errors[impl] = {"error": f"{type(e).__name__}: {str(e).strip()[:300]}"}
                continue
            errors[impl] = {"out": _rel_err(out, ref_out),
                            "grad": max(_rel_err(g, r) for g, r in zip(grads, ref_grads))}
        rows[name] = {"shape_q": [B, T, N, H], "kv_heads": K, "implementation": chosen,
                      "rel_err_vs_float32_xla": errors}
    return rows


def _rel_err(x: jax.Array, ref: jax.Array) -> float:
    return float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))


WORKLOADS: dict[str, Callable[[Any], dict]] = {
    "vit_l14_video": vit_l14_video,
    "decoder_7b_lora_step": decoder_7b_lora_step,
    "ahd_stage1_step": ahd_stage1_step,
    "qwen_vision_tower": qwen_vision_tower,
}


# ------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    """The report's rows as a markdown table."""
    lines = [f"device: {report['device_kind']} ({report['peak_device'] or 'unknown peak'}), "
             f"jax {report['jax']}, scale {report['scale']}", "",
             "| workload | batch | compile s | step ms | GFLOP/step | TFLOP/s | MFU | "
             "throughput |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["workloads"].items():
        if "step_s" not in r:
            lines.append(f"| {name} | {r.get('batch', '-')} | - | - | - | - | - | "
                         f"{r.get('error', 'lowered only')} |")
            continue
        rates = ", ".join(f"{r[k]:.4g} {k[:-6]}/s" for k in r if k.endswith("_per_s")
                          and k != "achieved_flops_per_s")
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        flops = r["flops_per_step"] if r["mfu_flops"] == "flops_per_step" else \
            r["flops_jaxpr_matmul"]
        lines.append(f"| {name} | {r['batch']} | {r['compile_s']:.1f} | "
                     f"{1000 * r['step_s']:.2f} | {flops / 1e9:.4g} | "
                     f"{r['achieved_flops_per_s'] / 1e12:.4g} | {mfu} | {rates} |")
    if "attention_check" in report:
        lines += ["", "attention in bf16 against XLA's in float32 (relative error, output / "
                      "worst gradient):"]
        for name, r in report["attention_check"].items():
            errors = "; ".join(f"{impl} {e['out']:.2g} / {e['grad']:.2g}" if "out" in e
                               else f"{impl} {e['error']}"
                               for impl, e in r["rel_err_vs_float32_xla"].items())
            lines.append(f"- {name}, q {r['shape_q']}: {errors}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `scale` and the device's `peak` (FLOP/s or None) resolved."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("real", "tiny", "auto"), default="auto",
                        help="auto (default): real on a GPU/TPU, tiny on CPU")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated, from {list(WORKLOADS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up")
    parser.add_argument("--batch", type=int, default=0, help="override every workload's batch")
    parser.add_argument("--seq-len", type=int, default=0,
                        help="decoder_7b_lora_step: this sequence only (no fallback)")
    parser.add_argument("--attention", default="auto", choices=attention_lib.IMPLEMENTATIONS)
    parser.add_argument("--remat-policy", default="full", choices=tuple(REMAT_POLICIES),
                        help="decoder_7b_lora_step: what each rematerialized decoder layer "
                             "keeps (DecoderConfig.remat_policy)")
    parser.add_argument("--peak-flops", type=float, default=0.0,
                        help="bf16 peak FLOP/s of a device kind missing from PEAK_BF16")
    parser.add_argument("--abstract", action="store_true",
                        help="lower every workload on abstract values only (no allocation, "
                             "no compile, no timing): checks real-scale shapes on any machine")
    opts = parser.parse_args(argv)
    opts.names = [n for n in opts.only.split(",") if n]
    unknown = set(opts.names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; known: {list(WORKLOADS)}")
    if opts.scale == "auto":
        opts.scale = "tiny" if jax.default_backend() == "cpu" else "real"
    opts.kind = jax.devices()[0].device_kind
    opts.peak_device, opts.peak = device_peak(opts.kind)
    if opts.peak_flops:
        opts.peak_device, opts.peak = f"{opts.kind} (--peak-flops)", opts.peak_flops
    return opts


def run(opts: argparse.Namespace) -> dict:
    """The report of the workloads `opts.names` (progress on stderr)."""
    attention_lib.set_default(opts.attention)
    start = time.perf_counter()
    report = {
        "benchmark": "device", **_machine.machine_info(), "scale": opts.scale,
        "abstract": opts.abstract, "attention": opts.attention,
        "remat_policy": opts.remat_policy,
        "peak_device": opts.peak_device, "peak_bf16_flops_per_s": opts.peak,
        "peak_note": ("published dense bf16 peak of one device (PEAK_BF16)" if opts.peak_device
                      else f"no published bf16 peak for device kind {opts.kind!r}: mfu is "
                           "null (give one with --peak-flops)"),
        "flops_source": {
            "flops_per_step": "XLA cost_analysis() of the compiled executable, loop bodies "
                              "counted once per iteration (tvad_jax.train.flops.step_flops)",
            "flops_xla_raw": "XLA cost_analysis() as it comes (a scanned layer stack once)",
            "flops_jaxpr_matmul": "2 M N K per dot_general of the jaxpr, scan bodies x "
                                  "length (bench_backbone.matmul_flops)",
            "mfu": "achieved FLOP/s (mfu_flops / step_s) / peak_bf16_flops_per_s; remat "
                   "recompute included; fused (cuDNN) attention not counted"},
        "workloads": {},
    }
    if not opts.abstract:
        print("[bench_device] attention numerics", file=sys.stderr)
        report["attention_check"] = attention_check(opts.scale, opts.attention)
    for name in opts.names:
        print(f"[bench_device] {name}", file=sys.stderr)
        report["workloads"][name] = dict(WORKLOADS[name](opts),
                                         what=" ".join(WORKLOADS[name].__doc__.split()))
        gc.collect()
    report["wall_s"] = round(time.perf_counter() - start, 1)
    return report


def main(argv: list[str] | None = None) -> dict:
    report = run(parse_args(argv))
    emit(report, table=markdown(report))
    return report


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
