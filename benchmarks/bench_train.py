"""Train-step throughput of the engine; prints one JSON object.

    .venv/bin/python benchmarks/bench_train.py [--configs toy,toy-wide] [--steps 30]

For each config: compile time of the jitted step (AOT lower + compile, reported apart), FLOPs
per step from XLA's cost analysis of the compiled step (per device, times the devices),
steps/s and examples/s of the step alone over `--steps` steps after 3 warm-up steps (batches
already on the devices, `block_until_ready` at the end), the achieved FLOP/s beside this
machine's peak f32 matmul FLOP/s measured in the same run, and, separately, the host time per
batch of the grain pipeline plus `shard_batch`.

Configs: "toy" (the test config: tiny, overhead-bound) and "toy-wide" (D=512, H=2048, batch 256:
matmul-bound). The real stages' configs join CONFIGS when their models land.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine  # noqa: E402
from tvad_jax.train import mesh as mesh_lib  # noqa: E402
from tvad_jax.train import toy  # noqa: E402
from tvad_jax.train.loop import build  # noqa: E402

WARMUP_STEPS = 3


def _toy_wide() -> toy.ToyConfig:
    return toy.ToyConfig(features=512, hidden=2048, batch_size=256, examples=4096)


# name -> (config factory, make_fns, make_dataset); one entry per stage as models land.
CONFIGS: dict[str, tuple[Callable, Callable, Callable]] = {
    "toy": (toy.ToyConfig, toy.make_fns, toy.make_dataset),
    "toy-wide": (_toy_wide, toy.make_fns, toy.make_dataset),
}


def bench_config(name: str, steps: int, peak: float) -> dict:
    factory, make_fns, make_dataset = CONFIGS[name]
    cfg = factory()
    init_fn, loss_fn, _ = make_fns(cfg)
    mesh = mesh_lib.make_mesh(cfg.train.mesh)
    with mesh_lib.mesh_context(mesh):
        engine = build(cfg.train, init_fn=init_fn, loss_fn=loss_fn, mesh=mesh)
        data = iter(make_dataset(cfg))
        batches = [mesh_lib.shard_batch(next(data), mesh)]  # pipeline start-up not timed
        t0 = time.perf_counter()
        batches += [mesh_lib.shard_batch(next(data), mesh) for _ in range(7)]
        jax.block_until_ready(batches)
        data_s = (time.perf_counter() - t0) / 7
        state, frozen, rng = engine.state, engine.frozen, engine.rng

        t0 = time.perf_counter()
        compiled = engine.step.lower(state, frozen, batches[0], rng).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops_per_device = float((cost or {}).get("flops", float("nan")))
        flops = flops_per_device * jax.device_count()

        for i in range(WARMUP_STEPS):
            state, metrics = compiled(state, frozen, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))
        t0 = time.perf_counter()
        for i in range(steps):
            state, metrics = compiled(state, frozen, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - t0
    examples = int(jax.tree.leaves(batches[0])[0].shape[0])
    achieved = flops * steps / elapsed
    return {
        "config": name,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "global_batch": examples,
        "trainable_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "compile_s": round(compile_s, 3),
        "steps_timed": steps,
        "step_ms": round(1000 * elapsed / steps, 3),
        "steps_per_s": round(steps / elapsed, 2),
        "examples_per_s": round(examples * steps / elapsed, 1),
        "flops_per_step": flops,
        "achieved_flops_per_s": achieved,
        "fraction_of_peak_matmul": round(achieved / peak, 4),
        "host_data_ms_per_batch": round(1000 * data_s, 3),
        "final_loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="toy,toy-wide",
                        help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    peak = _machine.peak_matmul_flops()
    results = [bench_config(n, args.steps, peak) for n in names]
    print(json.dumps({
        "benchmark": "train_step", **_machine.machine_info(),
        "peak_matmul_flops_per_s": peak,
        "peak_source": "benchmarks/_machine.py peak_matmul_flops (2048^3 f32 matmul)",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
