"""Train-step throughput of the engine and of the T-VAD stages; prints one JSON object.

    .venv/bin/python benchmarks/bench_train.py [--configs toy,tvad1-default,...] [--steps 20]

For each config: compile time of the jitted step (AOT lower + compile, reported apart), FLOPs
per step from XLA's cost analysis of the compiled step (per device, times the devices; loop
bodies counted once per iteration, `tvad_jax.train.plan.analyze`: XLA alone counts a scanned
layer stack once), steps/s and examples/s of the step alone over `--steps` steps after 3
warm-up steps (batches already on the devices, `block_until_ready` at the end), the achieved
FLOP/s beside this machine's peak f32 matmul FLOP/s measured in the same run, and, for the toy
configs, the host time per batch of the grain pipeline plus `shard_batch`.

Configs:
  toy, toy-wide        the engine's test model (tiny, overhead-bound) and a matmul-bound one
                       (D=512, H=2048, batch 256);
  tvad1-tiny, tvad1-default   T-VAD stage 1 (the AHD) on the tiny backbone's shapes and on
                       the shipped backbone's (hidden [4, 8, 65, 128]: 16-frame clips at
                       96 px), batch `Stage1Config.batch_size`, 8-step accumulation;
  tvad2-tiny, tvad2-default   T-VAD stage 2 phase A (RAE + special tokens + LoRA on the
                       frozen decoder) on the same shapes, batch `Stage2Config.batch_size`,
                       the shipped text budget (160 tokens) for "default".
The T-VAD configs use random inputs of the feature cache's shapes and dtypes (the prepared
dataset is not needed) and randomly initialized heads and decoder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine  # noqa: E402
from _batches import random_feature_batch  # noqa: E402

from tvad_jax import configs  # noqa: E402,F401  (registers the plan configs)
from tvad_jax import config as config_lib  # noqa: E402
from tvad_jax.jobs import plan as plan_lib  # noqa: E402
from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.train import toy  # noqa: E402
from tvad_jax.train import mesh as mesh_lib  # noqa: E402
from tvad_jax.train.loop import StageSpec, build  # noqa: E402
from tvad_jax.train.plan import analyze  # noqa: E402

WARMUP_STEPS = 3


@dataclasses.dataclass
class Case:
    """What one benchmark row runs: the stage, and a source of host batches (`host_data`: a
    real input pipeline whose time per batch is reported)."""

    spec: StageSpec
    next_batch: Callable[[], Any]
    host_data: bool
    info: dict


def _toy_case(cfg: toy.ToyConfig) -> Case:
    spec, _ = toy.make_spec(cfg)
    data = iter(toy.make_dataset(cfg))
    return Case(spec, lambda: next(data), True, {})


def _toy_wide() -> Case:
    return _toy_case(toy.ToyConfig(features=512, hidden=2048, batch_size=256, examples=4096))


def _tvad_case(stage: str, plan_name: str) -> Case:
    pcfg = config_lib.resolve(plan_name, kind="plan")
    bcfg = plan_lib.backbone_config(pcfg)
    spec = plan_lib.stage_spec(pcfg, stage, bcfg)
    example = spec.example
    batch = (pcfg.job.stage1.batch_size if stage == "stage1" else pcfg.job.stage2.batch_size)
    batches = [random_feature_batch(jax.random.key(i), example, batch, bcfg.decoder.vocab_size)
               for i in range(4)]
    count = iter(range(1 << 30))
    shapes = plan_lib.shapes(pcfg, bcfg)
    info = {"stage": stage, "backbone": pcfg.backbone, "hidden_shape": list(shapes.hidden),
            "accumulation_steps": spec.config.optim.accumulation_steps}
    if stage == "stage2":
        info.update(seq_len=shapes.seq_len, text_len=shapes.text_len,
                    decoder_dtype=bcfg.decoder.dtype)
    return Case(spec, lambda: batches[next(count) % len(batches)], False, info)


CONFIGS: dict[str, Callable[[], Case]] = {
    "toy": lambda: _toy_case(toy.ToyConfig()),
    "toy-wide": _toy_wide,
    "tvad1-tiny": lambda: _tvad_case("stage1", "tiny"),
    "tvad1-default": lambda: _tvad_case("stage1", "shipped"),
    "tvad2-tiny": lambda: _tvad_case("stage2", "tiny"),
    "tvad2-default": lambda: _tvad_case("stage2", "shipped"),
}


def bench_config(name: str, steps: int, peak: float) -> dict:
    case = CONFIGS[name]()
    mesh = mesh_lib.make_mesh(case.spec.config.mesh)
    with mesh_lib.mesh_context(mesh):
        engine = build(case.spec, mesh=mesh)
        batches = [mesh_lib.shard_batch(case.next_batch(), mesh)]  # start-up not timed
        t0 = time.perf_counter()
        batches += [mesh_lib.shard_batch(case.next_batch(), mesh) for _ in range(7)]
        jax.block_until_ready(batches)
        data_s = (time.perf_counter() - t0) / 7
        state, frozen, rng = engine.state, engine.frozen, engine.abstract.rng

        t0 = time.perf_counter()
        compiled = engine.abstract.step.lower(state, frozen, batches[0], rng).compile()
        compile_s = time.perf_counter() - t0
        analysis = analyze(compiled, {}, jax.device_count())
        flops = analysis["flops_total"]
        xla_flops = analysis["flops_per_device_xla"]

        for i in range(WARMUP_STEPS):
            state, metrics = compiled(state, frozen, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))
        t0 = time.perf_counter()
        for i in range(steps):
            state, metrics = compiled(state, frozen, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - t0
    examples = int(jax.tree.leaves(batches[0])[0].shape[0])
    achieved = None if flops is None else flops * steps / elapsed
    return {
        "config": name,
        **case.info,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "global_batch": examples,
        "trainable_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "frozen_params": int(sum(x.size for x in jax.tree.leaves(frozen))),
        "compile_s": round(compile_s, 3),
        "steps_timed": steps,
        "step_ms": round(1000 * elapsed / steps, 3),
        "steps_per_s": round(steps / elapsed, 2),
        "examples_per_s": round(examples * steps / elapsed, 1),
        "flops_per_step": flops,
        "flops_per_step_xla_raw": None if xla_flops is None else xla_flops * jax.device_count(),
        "achieved_flops_per_s": achieved,
        "fraction_of_peak_matmul": None if achieved is None else round(achieved / peak, 4),
        "temp_bytes_per_device": analysis["per_device_bytes"]["temp"],
        "host_data_ms_per_batch": round(1000 * data_s, 3) if case.host_data else None,
        "final_loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {sorted(CONFIGS)} (default: all)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    peak = _machine.peak_matmul_flops()
    results = []
    for n in names:
        print(f"[bench_train] {n}", file=sys.stderr)
        results.append(bench_config(n, args.steps, peak))
    print(json.dumps({
        "benchmark": "train_step", **_machine.machine_info(),
        "peak_matmul_flops_per_s": peak,
        "peak_source": "benchmarks/_machine.py peak_matmul_flops (2048^3 f32 matmul)",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
