"""Qwen2.5-VL throughput: the vision tower with window attention against the same tower with
full attention in every block, and the decoder's prefill and cached single-token step.

    .venv/bin/python benchmarks/bench_qwen_vl.py [--quick] [--cases small,vitb] [--out FILE]

Prints one JSON object on stdout and a markdown table on stderr. Random-initialised float32
models (`tvad_jax.models.qwen_vl`), batch 1:

  small  vision 256 wide x 8 blocks (4 heads, gated MLP 688), full attention at block 7;
         decoder 256 x 4 layers (4 heads, 2 KV heads, MLP 688), vocabulary 16384;
         one video of 16 frames at 448 x 448.
  vitb   vision 768 wide x 4 blocks (12 heads, gated MLP 2048: ViT-B's MLP parameters),
         full attention at block 3; decoder 768 x 4 layers (12 heads, 2 KV heads, MLP 2048),
         vocabulary 16384; one video of 8 frames at 448 x 448 (8, not 16, to stay near
         30 s on 2 cores).
  Both: 14 px patches, temporal patch 2, 2 x 2 merge, 112 px windows (448 px: 16 windows of
  64 patches per temporal step, 1024 patches per step).

Measured, each function AOT-compiled once (compile time reported apart), then one warm-up
call and several timed calls (`block_until_ready`), the median (and the best) reported:
  vision/window  the tower as Qwen2.5-VL runs it: window attention in every block but those
                 of `full_blocks` (every 8th, or the last one when shallower), which attend
                 within each temporal step;
  vision/full    the same tower and params with every block in `full_blocks` (a config
                 change only: full attention within each temporal step everywhere);
  prefill        the decoder over the video's merged tokens + a 32-token prompt into a KV
                 cache (logits of every position, as `qwen_vl.generate` does);
  step/<C>       one cached decoding step at cache capacity C (the cache nearly full; the
                 cache is donated and threaded through the calls, as in generation).

FLOPs: an analytic count of the matmuls the compiled code executes, padding included (2 M N K
each: projections, attention logits and values over the padded windows / temporal-step rows /
the whole cache capacity, MLPs, patch embedding, merger, LM head; norms, softmax, rotary and
gathers left out, so a slight undercount). `tests/benchmarks/test_bench_qwen_vl.py` checks it
against the dot_generals of the jaxpr. XLA's `cost_analysis` is reported beside it
(`xla_flops`, `xla_bytes_accessed`) but not used: it counts a scanned layer stack once.
Achieved FLOP/s = FLOPs / median time, beside this machine's peak f32 matmul FLOP/s
(`_machine.peak_matmul_flops`, measured in the same run). Decoding steps are memory-bound:
their `memory_bound_s` (params + KV cache bytes read once, over `_machine.copy_bandwidth`)
is the better yardstick. A full run takes about 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _machine  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models import qwen_vl as Q  # noqa: E402
from tvad_jax.models.configs import DecoderConfig  # noqa: E402
from tvad_jax.models.decoder import init_cache  # noqa: E402

PROMPT_TOKENS = 32
NEW_TOKENS = 64


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked size: vision tower, decoder, video and cache capacities."""

    vision: dict
    decoder: dict
    frames: int
    size: int
    cache_lengths: tuple[int, ...]


CASES = {
    "small": Case(vision=dict(width=256, depth=8, heads=4, mlp_dim=688),
                  decoder=dict(width=256, depth=4, heads=4, kv_heads=2, mlp_dim=688,
                               vocab_size=16384),
                  frames=16, size=448, cache_lengths=(256, 1024, 4096, 16384)),
    "vitb": Case(vision=dict(width=768, depth=4, heads=12, mlp_dim=2048),
                 decoder=dict(width=768, depth=4, heads=12, kv_heads=2, mlp_dim=2048,
                              vocab_size=16384),
                 frames=8, size=448, cache_lengths=(256, 1024, 4096, 16384)),
}
QUICK_CASES = {
    "small": Case(vision=dict(width=32, depth=2, heads=2, mlp_dim=64),
                  decoder=dict(width=32, depth=1, heads=2, kv_heads=1, mlp_dim=64,
                               vocab_size=256),
                  frames=4, size=224, cache_lengths=(16, 64)),
}


def qwen_config(case: Case, full_everywhere: bool = False) -> Q.QwenVLConfig:
    """The case's `QwenVLConfig`: Qwen2.5-VL's block pattern (full attention at every 8th
    block, or at the last when shallower) or, with `full_everywhere`, every block full."""
    depth = case.vision["depth"]
    full = (tuple(range(depth)) if full_everywhere
            else tuple(range(min(7, depth - 1), depth, 8)))
    vision = Q.QwenVisionConfig(**case.vision, out_width=case.decoder["width"],
                                full_blocks=full)
    text = DecoderConfig(**case.decoder, rope_theta=1e6, rms_eps=1e-6, max_length=32768,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    head = text.dim_per_head // 2                      # M-RoPE sections: Qwen's 16/24/24 ratio
    t = head // 4
    hw = (head - t) // 2
    return Q.QwenVLConfig(vision=vision, text=text, mrope_section=(head - 2 * hw, hw, hw),
                          image_token_id=3, video_token_id=4, vision_start_token_id=5,
                          vision_end_token_id=6)


# ------------------------------------------------------------------ analytic FLOPs
def vision_flops(v: Q.QwenVisionConfig, layout: Q.WindowLayout, patches: int) -> dict:
    """Matmul FLOPs of one tower call on `layout`, split into the parts that do not depend on
    the attention kind and the attention of one windowed / one full block."""
    S, D, F, W = layout.valid.size, v.width, v.mlp_dim, v.window_slots
    G, Lg = layout.segments.shape
    embed = 2 * patches * v.in_channels * v.temporal_patch * v.patch_size ** 2 * D
    block = 2 * S * D * D * 4 + 2 * S * D * F * 3          # q, k, v, out; gate, up, down
    merged = S // v.unit
    merger = 2 * merged * (v.unit * D) ** 2 + 2 * merged * v.unit * D * v.out_width
    return {"dense": embed + v.depth * block + merger,
            "window_block_attention": 2 * 2 * S * W * D,    # logits and values, per window
            "full_block_attention": 2 * 2 * G * Lg * Lg * D}   # per padded temporal step


def vision_total(v: Q.QwenVisionConfig, parts: dict) -> float:
    full = len(set(v.full_blocks) & set(range(v.depth)))
    return float(parts["dense"] + full * parts["full_block_attention"]
                 + (v.depth - full) * parts["window_block_attention"])


def decoder_flops(t: DecoderConfig, tokens: int, capacity: int, batch: int = 1) -> float:
    """Matmul FLOPs of one cached decoder call on `tokens` new tokens with a KV cache of
    `capacity` slots (attention runs over every slot, masked), logits of every token."""
    D, H, K, Dh, F = t.width, t.heads, t.kv_heads, t.dim_per_head, t.mlp_dim
    n = batch * tokens
    layer = 2 * n * D * (H + 2 * K) * Dh + 2 * n * H * Dh * D + 2 * n * D * F * 3
    attention = 2 * 2 * n * capacity * H * Dh
    return float(t.depth * (layer + attention) + 2 * n * D * t.vocab_size)


# ------------------------------------------------------------------ models and inputs
def _random(tree, seed: int) -> dict:
    """Arrays for abstract params: norm scales 1, biases 0, the rest N(0, 0.02^2) (numpy:
    a jitted Flax init costs more compile time than the benchmark itself)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * 0.02, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, tree)


def init_vision(v: Q.QwenVisionConfig, seed: int) -> dict:
    layout = Q.window_layout(v, [[1, v.merge, v.merge]])
    pixels = jnp.zeros((v.unit, v.in_channels * v.temporal_patch * v.patch_size ** 2))
    tree = jax.eval_shape(lambda: Q.VisionTower(v).init(jax.random.key(0), pixels,
                                                        *Q.layout_arrays(layout)))
    return _random(nn.meta.unbox(tree)["params"], seed)


def init_decoder(cfg: Q.QwenVLConfig, seed: int) -> dict:
    model = Q.QwenDecoder(cfg.text, cfg.mrope_section)
    tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, cfg.text.width)),
                                             jnp.zeros((3, 1, 2), jnp.int32)))
    return _random(nn.meta.unbox(tree)["params"], seed)


def video(v: Q.QwenVisionConfig, frames: int, size: int, seed: int = 0):
    """(pixel_values [N, C*tp*P*P], grid_thw [1, 3]) of a random normalised video."""
    x = np.random.default_rng(seed).standard_normal((frames, size, size, v.in_channels))
    return Q.patchify(v, x.astype(np.float32))


def vision_fn(v: Q.QwenVisionConfig):
    def run(params, pixel_values, *layout):
        embeds, _ = Q.VisionTower(v).apply({"params": params}, pixel_values, *layout)
        return embeds
    return run


def prefill_fn(cfg: Q.QwenVLConfig, capacity: int):
    model = Q.QwenDecoder(cfg.text, cfg.mrope_section)

    def run(params, embeds, positions):
        cache = init_cache(cfg.text, embeds.shape[0], capacity)
        return model.apply({"params": params}, embeds, positions, cache)
    return run


def step_fn(cfg: Q.QwenVLConfig):
    model = Q.QwenDecoder(cfg.text, cfg.mrope_section)

    def run(params, token, cache):
        embeds = model.apply({"params": params}, token, method=Q.QwenDecoder.embed)
        B = token.shape[0]
        positions = jnp.broadcast_to(cache["lengths"][None, :, None], (3, B, 1))
        logits, cache = model.apply({"params": params}, embeds, positions, cache)
        return logits[:, -1], cache
    return run


# ------------------------------------------------------------------ timing
def _xla_cost(compiled) -> dict:
    """XLA's cost analysis: flops and bytes accessed (a scanned layer stack counted once)."""
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    return {"xla_flops": float(cost.get("flops", float("nan"))),
            "xla_bytes_accessed": float(cost.get("bytes accessed", float("nan")))}


def _repeats(first: float, budget: float, least: int = 3, most: int = 20) -> int:
    return max(least, min(most, int(budget / max(first, 1e-6))))


def time_calls(compiled, args: tuple, budget: float) -> list[float]:
    """Seconds of one warm-up call (first) then of the timed calls, about `budget` s."""
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times = [time.perf_counter() - start]
    for _ in range(_repeats(times[0], budget)):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return times


def time_steps(compiled, params, token, cache, calls: int) -> list[float]:
    """Seconds of `calls` decoding steps, the (donated) cache threaded through."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        _, cache = jax.block_until_ready(compiled(params, token, cache))
        times.append(time.perf_counter() - start)
    return times


def _row(part: str, compile_s: float, times: list[float], flops: float, xla: dict,
         peak: float, **extra) -> dict:
    timed = times[1:]
    median = statistics.median(timed)
    return {"part": part, "compile_s": round(compile_s, 3), "warmup_s": round(times[0], 4),
            "calls": len(timed), "median_s": median, "best_s": min(timed), "flops": flops,
            **xla, "achieved_flops_per_s": flops / median,
            "fraction_of_peak": flops / median / peak, **extra}


def _compile(fn, args, donate=()):
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - start


# ------------------------------------------------------------------ cases
def bench_case(name: str, case: Case, machine: dict, budget: float, log) -> dict:
    peak, bandwidth = machine["peak_matmul_flops"], machine["copy_bandwidth"]
    cfg = qwen_config(case)
    v = cfg.vision
    params = {"vision": init_vision(v, 0), "text": init_decoder(cfg, 1)}
    pixels, grid = video(v, case.frames, case.size)
    layout = Q.window_layout(v, grid)
    layout_args = Q.layout_arrays(layout)
    parts = vision_flops(v, layout, pixels.shape[0])
    rows = []
    vargs = (params["vision"], jnp.asarray(pixels), *layout_args)
    for kind, full in (("window", False), ("full", True)):
        vk = qwen_config(case, full_everywhere=full).vision
        compiled, compile_s = _compile(vision_fn(vk), vargs)
        times = time_calls(compiled, vargs, budget)
        rows.append(_row(f"vision/{kind}", compile_s, times, vision_total(vk, parts),
                         _xla_cost(compiled), peak, full_blocks=list(vk.full_blocks)))
        log(rows[-1])
        del compiled

    merged = int((layout.merged >= 0).sum())
    tokens = merged + PROMPT_TOKENS
    capacity = tokens + NEW_TOKENS
    t = cfg.text
    rng = np.random.default_rng(1)
    embeds = jnp.asarray(rng.standard_normal((1, tokens, t.width)) * 0.02, jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(tokens)[None, None], (3, 1, tokens))
    args = (params["text"], embeds, positions)
    compiled, compile_s = _compile(prefill_fn(cfg, capacity), args)
    times = time_calls(compiled, args, budget)
    rows.append(_row("prefill", compile_s, times, decoder_flops(t, tokens, capacity),
                     _xla_cost(compiled), peak, tokens=tokens, cache_capacity=capacity,
                     tokens_per_s=tokens / statistics.median(times[1:])))
    log(rows[-1])
    del compiled

    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params["text"]))
    step = step_fn(cfg)
    token = jnp.full((1, 1), 7, jnp.int32)
    for capacity in case.cache_lengths:
        cache = init_cache(t, 1, capacity)
        compiled, compile_s = _compile(step, (params["text"], token, cache), donate=(2,))
        probe = time_steps(compiled, params["text"], token, cache, 1)  # cache now donated
        calls = 1 + _repeats(probe[0], budget, least=5, most=50)
        cache = init_cache(t, 1, capacity)
        cache["lengths"] = jnp.full((1,), max(0, capacity - calls - 1), jnp.int32)
        times = time_steps(compiled, params["text"], token, cache, calls)
        cache_bytes = 2 * t.depth * capacity * t.kv_heads * t.dim_per_head * 4
        memory_bound = (param_bytes + cache_bytes) / bandwidth
        median = statistics.median(times[1:])
        rows.append(_row(f"step/{capacity}", compile_s, times,
                         decoder_flops(t, 1, capacity), _xla_cost(compiled), peak,
                         cache_capacity=capacity, tokens_per_s=1 / median,
                         bytes_read=param_bytes + cache_bytes, memory_bound_s=memory_bound,
                         fraction_of_memory_bound=memory_bound / median))
        log(rows[-1])
        del compiled, cache

    by = {r["part"]: r for r in rows}
    return {
        "vision": {**dataclasses.asdict(v), "full_blocks": list(v.full_blocks)},
        "decoder": dataclasses.asdict(t),
        "mrope_section": list(cfg.mrope_section),
        "frames": case.frames, "size": case.size, "grid_thw": grid.tolist()[0],
        "patches": int(pixels.shape[0]), "padded_slots": int(layout.valid.size),
        "windows_per_step": int(layout.valid.size // v.window_slots // grid[0, 0]),
        "window_slots": v.window_slots, "step_slots": int(layout.segments.shape[1]),
        "merged_tokens": merged,
        "vision_flops_parts": {k: float(x) for k, x in parts.items()},
        "params": {"vision": int(sum(x.size for x in jax.tree.leaves(params["vision"]))),
                   "text": int(sum(x.size for x in jax.tree.leaves(params["text"])))},
        "rows": rows,
        "summary": {
            "full_over_window_time": by["vision/full"]["median_s"]
            / by["vision/window"]["median_s"],
            "full_over_window_flops": by["vision/full"]["flops"] / by["vision/window"]["flops"],
            "vision_window_frames_per_s": case.frames / by["vision/window"]["median_s"],
            "vision_full_frames_per_s": case.frames / by["vision/full"]["median_s"],
        },
    }


def markdown(report: dict) -> str:
    """The report's rows as one markdown table."""
    peak = report["machine"]["peak_matmul_flops"]
    lines = [f"peak f32 matmul {peak / 1e9:.1f} GFLOP/s, copy bandwidth "
             f"{report['machine']['copy_bandwidth'] / 1e9:.1f} GB/s "
             f"({report['machine']['cpu_count']} CPUs, {report['machine']['backend']})", "",
             "| case | part | compile s | median ms | best ms | GFLOP/call | GFLOP/s | "
             "of peak | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, case in report["cases"].items():
        for r in case["rows"]:
            if r["part"].startswith("vision"):
                note = (f"{case['frames']} fr {case['size']} px, full at "
                        f"{r['full_blocks'] if len(r['full_blocks']) < 4 else 'all'}")
            elif r["part"] == "prefill":
                note = f"{r['tokens']} tokens, {r['tokens_per_s']:.0f} tok/s"
            else:
                note = f"{r['fraction_of_memory_bound']:.0%} of memory bound"
            lines.append(
                f"| {name} | {r['part']} | {r['compile_s']:.1f} | {1e3 * r['median_s']:.2f} | "
                f"{1e3 * r['best_s']:.2f} | {r['flops'] / 1e9:.3f} | "
                f"{r['achieved_flops_per_s'] / 1e9:.2f} | {r['fraction_of_peak']:.1%} | "
                f"{note} |")
        s = case["summary"]
        lines.append(f"| {name} | full / window | | {s['full_over_window_time']:.2f}x time | | "
                     f"{s['full_over_window_flops']:.2f}x FLOPs | | | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--cases", help="comma-separated subset of the cases")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per part (default 8, quick 0.2)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    names = args.cases.split(",") if args.cases else list(cases)
    unknown = set(names) - set(cases)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; have {sorted(cases)}")
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 8.0)

    start = time.perf_counter()
    machine = {**_machine.machine_info(),
               "peak_matmul_flops": _machine.peak_matmul_flops(1024 if args.quick else 2048),
               "copy_bandwidth": _machine.copy_bandwidth(1 << 22 if args.quick else 1 << 28)}

    def log(row):
        print(f"[bench_qwen_vl] {row['part']}: median {1e3 * row['median_s']:.2f} ms, "
              f"{row['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s", file=sys.stderr)

    results = {}
    for name in names:
        print(f"[bench_qwen_vl] case {name}", file=sys.stderr)
        results[name] = bench_case(name, cases[name], machine, budget, log)
    report = {
        "benchmark": "qwen_vl (float32, batch 1, random params)",
        "quick": args.quick,
        "units": {"flops": "analytic matmul count of the executed (padded) computation",
                  "xla_flops": "XLA cost_analysis (scanned layers counted once; not used)",
                  "xla_bytes_accessed": "XLA cost_analysis (scanned layers counted once)",
                  "median_s": "median wall time of the timed calls after one warm-up",
                  "fraction_of_peak": "achieved_flops_per_s / machine.peak_matmul_flops",
                  "memory_bound_s": "(params + KV cache bytes) / machine.copy_bandwidth"},
        "machine": machine,
        "cases": results,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    emit(report, args.out, markdown(report))
    return report


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
