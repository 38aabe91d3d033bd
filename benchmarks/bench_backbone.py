"""Backbone forward throughput; prints one JSON object.

    .venv/bin/python benchmarks/bench_backbone.py [--batch 2] [--frames 16] [--repeats 3]
        [--parts vision,text,clip_forward,decode_step] [--dtype float32|bfloat16]
        [--no-real-scale]

Config: `configs.small_backbone()` (the size of the shipped default: ViT 192 x 6 layers on
96 px frames with 8 px patches, 16-frame clips -> 8 tubelets x 145 tokens; text 128 x 4;
decoder 256 x 4, vocabulary 2048), random params.

Parts, each jitted once (AOT lower + compile, compile time reported apart), then timed as the
best of `--repeats` runs after a warm-up, each ended by `block_until_ready`:
  vision        encode_video_and_tokens: ViT hidden states at the feature layers + projected
                visual tokens for a batch of clips                       -> clips/s
  text          CLIP text tower on 2 x 8 prompts of 32 tokens (eq. 2 inputs) -> prompts/s
  clip_forward  one clip end to end before generation: ViT + projector + decoder prefill of
                the T'*N visual tokens and a 32-token prompt into a KV cache -> clips/s
  decode_step   one cached decoding step of the batch (cache 1/2 full)   -> tokens/s

FLOPs per call: `xla_flops` is XLA's cost analysis of the compiled function
(`jax.jit(f).lower(...).compile().cost_analysis()`), which counts the body of a while loop
once, so with `nn.scan`ned layers it undercounts by about the depth; `flops_per_call` counts
the matmul FLOPs (2 M N K of every dot_general, scan bodies times their length) in the jaxpr of
the same function, and is what `achieved_flops_per_s` uses (elementwise ops, softmax and norms
are left out, so it is a slight undercount). Achieved FLOP/s is printed beside this machine's
peak f32 matmul FLOP/s (benchmarks/_machine.py, measured in the same run). Real-scale configs
(CLIP ViT-L/14-336, Llama-2-7B, LLaVA-1.5-7B) are built with `jax.eval_shape` only: parameter
counts, bytes, and the matmul FLOPs of one 16-frame clip through the vision tower and of the
decoder prefill of its visual tokens, counted on abstract shapes.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _machine  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models import configs as C  # noqa: E402
from tvad_jax.models.decoder import init_cache  # noqa: E402
from tvad_jax.models.vlm import Backbone, abstract_params, init_params  # noqa: E402

PROMPT_TOKENS = 32


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))


def _sub_jaxprs(value):
    from jax.extend import core as jcore

    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, jcore.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jcore.Jaxpr):
            yield v


def _jaxpr_matmul_flops(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
                lhs[i] for i in contract)
            continue
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                total += times * _jaxpr_matmul_flops(sub)
    return total


def matmul_flops(fn, *args) -> float:
    """Matmul FLOPs of fn(*args) (arrays or ShapeDtypeStructs), scan bodies x length."""
    return _jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _run(name: str, fn, args: tuple, items: int, unit: str, repeats: int, peak: float) -> dict:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    flops = matmul_flops(fn, *args)
    seconds = _machine.best_time(compiled, *args, repeats=repeats)
    return {
        "part": name,
        "compile_s": round(compile_s, 3),
        "call_ms": round(1000 * seconds, 3),
        f"{unit}_per_s": round(items / seconds, 3),
        "flops_per_call": flops,
        "xla_flops": _xla_flops(compiled),
        "achieved_flops_per_s": flops / seconds,
        "fraction_of_peak_matmul": round(flops / seconds / peak, 4),
    }


def with_dtype(cfg: C.BackboneConfig, dtype: str) -> C.BackboneConfig:
    return dataclasses.replace(
        cfg, vision=dataclasses.replace(cfg.vision, dtype=dtype),
        text=dataclasses.replace(cfg.text, dtype=dtype),
        decoder=dataclasses.replace(cfg.decoder, dtype=dtype))


def bench_small(args, peak: float) -> dict:
    cfg = with_dtype(C.small_backbone(max_frames=max(64, args.frames)), args.dtype)
    bb = Backbone(cfg)
    params = jax.jit(lambda key: init_params(cfg, key))(jax.random.key(0))
    v, B, T = cfg.vision, args.batch, args.frames
    rng = np.random.default_rng(0)
    pixels = jnp.asarray(rng.standard_normal((B, T, v.image_size, v.image_size, 3)), jnp.float32)
    visual = (T // v.tubelet) * v.num_patches
    prompt = jnp.asarray(rng.integers(3, cfg.decoder.vocab_size, (B, PROMPT_TOKENS)), jnp.int32)
    text_ids = jnp.asarray(rng.integers(3, cfg.text.vocab_size, (16, PROMPT_TOKENS)), jnp.int32)
    text_mask = jnp.ones_like(text_ids)
    max_len = visual + PROMPT_TOKENS + 64

    def vision(p, x):
        return bb.apply({"params": p}, x, method=Backbone.encode_video_and_tokens)

    def text(p, ids, mask):
        return bb.apply({"params": p}, ids, mask, method=Backbone.encode_text)

    def clip_forward(p, x, ids):
        video, tokens = bb.apply({"params": p}, x, method=Backbone.encode_video_and_tokens)
        embeds = jnp.concatenate(
            [tokens, bb.apply({"params": p}, ids, method=Backbone.embed_tokens)], axis=1)
        cache = init_cache(cfg.decoder, x.shape[0], max_len)
        positions = jnp.arange(embeds.shape[1])[None]
        logits, cache = bb.apply({"params": p}, embeds, positions, cache,
                                 method=Backbone.decode)
        return video.hidden, logits[:, -1], cache

    def decode_step(p, token, cache):
        embeds = bb.apply({"params": p}, token, method=Backbone.embed_tokens)
        return bb.apply({"params": p}, embeds, cache["lengths"][:, None], cache,
                        method=Backbone.decode)

    cache = init_cache(cfg.decoder, B, max_len)
    cache["lengths"] = jnp.full((B,), max_len // 2, jnp.int32)
    parts = {
        "vision": (vision, (params, pixels), B, "clips"),
        "text": (text, (params, text_ids, text_mask), text_ids.shape[0], "prompts"),
        "clip_forward": (clip_forward, (params, pixels, prompt), B, "clips"),
        "decode_step": (decode_step, (params, prompt[:, :1], cache), B, "tokens"),
    }
    results = [_run(name, *parts[name], repeats=args.repeats, peak=peak)
               for name in args.parts.split(",") if name]
    return {
        "config": "small_backbone",
        "dtype": args.dtype,
        "batch_clips": B,
        "frames_per_clip": T,
        "tubelets_x_tokens": [T // v.tubelet, 1 + v.num_patches],
        "visual_tokens_per_clip": visual,
        "prompt_tokens": PROMPT_TOKENS,
        "params": {k: C.count_params(x) for k, x in params.items()},
        "results": results,
    }


def real_scale(frames: int) -> dict:
    out = {}
    for name, cfg in [("clip_vit_l14_336", C.clip_vit_l14_336()),
                      ("llama_7b", C.BackboneConfig(decoder=C.llama_7b())),
                      ("llava15_7b", C.llava15_7b())]:
        tree = abstract_params(cfg)
        counts = {k: C.count_params(x) for k, x in tree.items()}
        entry = {"params": counts, "total_params": sum(counts.values()),
                 "bytes_f32": C.param_bytes(tree), "bytes_bf16": C.param_bytes(tree) // 2}
        bb = Backbone(cfg)
        if cfg.vision is not None:
            v = cfg.vision
            pixels = jax.ShapeDtypeStruct((1, frames, v.image_size, v.image_size, 3),
                                          jnp.float32)
            entry[f"vision_matmul_flops_per_{frames}_frame_clip"] = matmul_flops(
                lambda p, x: bb.apply({"params": p}, x, method=Backbone.encode_video),
                tree, pixels)
        if cfg.decoder is not None:
            tokens = ((frames // cfg.vision.tubelet) * cfg.vision.num_patches
                      if cfg.vision is not None else 1024)
            embeds = jax.ShapeDtypeStruct((1, tokens, cfg.decoder.width), jnp.float32)
            entry[f"decoder_prefill_matmul_flops_{tokens}_tokens"] = matmul_flops(
                lambda p, e: bb.apply({"params": p}, e, jnp.arange(tokens)[None],
                                      method=Backbone.decode), tree, embeds)
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="clips per call")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="vision,text,clip_forward,decode_step")
    parser.add_argument("--dtype", default="float32", choices=sorted(C.DTYPES))
    parser.add_argument("--no-real-scale", action="store_true")
    args = parser.parse_args()
    unknown = set(args.parts.split(",")) - {"vision", "text", "clip_forward", "decode_step", ""}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}")
    peak = _machine.peak_matmul_flops()
    report = {
        "benchmark": "backbone_forward", **_machine.machine_info(),
        "peak_matmul_flops_per_s": peak,
        "peak_source": "benchmarks/_machine.py peak_matmul_flops (2048^3 f32 matmul)",
        "small": bench_small(args, peak),
    }
    if not args.no_real_scale:
        report["real_scale"] = real_scale(args.frames)
    emit(report)


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
