"""Throughput of the HiPPO recurrence: five all-states modes in both layouts, `final_state` and
streaming `step`.

    .venv/bin/python benchmarks/bench_hippo.py [--quick] [--only SHAPE] [--layouts ldp,dlp]
        [--out FILE]

Prints one JSON object. For each shape (SMM: batch 256, 64 channels, state 64; S3M: batch 64,
512 channels, state 64; and batch 1 to reach long sequences) and each length from the
model's own (64 or 20) up to 16384, every function is compiled (compile time reported apart),
the all-states modes once per output layout (`hippo.LAYOUTS`: (..., L, D, P) or (..., D, L,
P); rows carry `layout`, and the summary names a `dlp` row "MODE (dlp)"), warmed up and timed
(best of several runs, `block_until_ready`). Beside each time stand its bounds measured in the
same run: FLOPs (XLA's `cost_analysis`; for the looping modes, whose body XLA counts once,
`scan`'s step count times L and `chunked`'s by formula: its one GEMM over every chunk and the
start states' GEMMs) over the measured matmul peak, and bytes of inputs plus outputs over the
measured copy bandwidth. Cases whose XLA peak memory exceeds `--memory-budget`, or whose
compute bound alone exceeds `--time-budget`, are listed as skipped with the reason. The summary
gives, per shape, the fastest all-states mode at each length and the lengths where the winner
changes.

The peer, when torch is installed (never a dependency: `pip install --target DIR torch` and
`PYTHONPATH=DIR`): the recurrence as a PyTorch user writes it, an eager loop of one batched
matmul-add per step into a preallocated (batch, L, D, P) tensor, same inputs, same threads,
its states checked against `scan`'s (`torch_loop` rows; the summary's
`torch_time_over_fastest` above 1 means ours is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models import hippo  # noqa: E402

SHAPES = {  # name: (batch, channels D, state P, lengths L)
    "smm": (256, 64, 64, (64, 256, 1024, 4096, 16384)),
    "s3m": (64, 512, 64, (20, 64, 256, 1024, 4096, 16384)),
    "batch1": (1, 64, 64, (64, 256, 1024, 4096, 16384)),
}
QUICK_SHAPES = {"smm": (16, 64, 64, (64, 256)), "s3m": (4, 512, 64, (20, 64))}


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _flops(compiled) -> float:
    return float(compiled.cost_analysis().get("flops", 0.0))


def _time(compiled, *args) -> float:
    """Best wall time: one warm-up, then 2 to 10 repeats, about a second in all.

    The best run is the one least disturbed by other processes on the shared cores.
    """
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - start
    best = first
    for _ in range(max(2, min(10, int(1.0 / max(first, 1e-6))))):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _loop_flops(mode, batch, L, D, P, step_flops):
    """FLOPs of a looping mode: `scan`'s step count times L; `chunked`'s GEMMs counted."""
    if mode == "scan":
        return L * step_flops
    C = min(hippo.CHUNK, L)
    n = -(-L // C)
    if n == 1:  # the Toeplitz product alone: (D, C) x (C, C P) per sequence
        return batch * 2 * D * C * C * P
    # (D n, C + P) x (C + P, C P) per sequence, and n - 1 start states of (C + P) P each
    return batch * 2 * D * n * (C + P) * C * P + batch * (n - 1) * 2 * D * (C + P) * P


def _record(name, L, batch, compiled, compile_s, flops, args, machine, budgets):
    """Time one compiled case (or say why not) and place it against its two bounds."""
    memory = compiled.memory_analysis()
    peak = memory.peak_memory_in_bytes
    compute_bound = flops / machine["peak_matmul_flops"]
    row = {"fn": name, "L": L, "compile_s": round(compile_s, 4), "flops": flops,
           "peak_bytes": int(peak), "compute_bound_s": compute_bound}
    if peak > budgets["memory"]:
        return row | {"skipped": f"XLA peak memory {peak / 2**30:.2f} GiB > budget"}
    if compute_bound > budgets["time"]:
        return row | {"skipped": f"compute bound {compute_bound:.1f} s > time budget"}
    seconds = _time(compiled, *args)
    io = memory.argument_size_in_bytes + memory.output_size_in_bytes
    memory_bound = io / machine["copy_bandwidth"]
    bound = max(compute_bound, memory_bound)
    elements = batch * (L if name != "step" else 1)
    return row | {
        "time_s": seconds,
        "ns_per_element": 1e9 * seconds / elements,
        "io_bytes": io,
        "memory_bound_s": memory_bound,
        "memory_bound_fresh_output_s": io / machine["copy_bandwidth_fresh_output"],
        "bound_s": bound,
        "fraction_of_bound": bound / seconds,
        "achieved_flops": flops / seconds,
    }


def _torch_loop(Ad, Bd, u, reference, compute_bound_s, budgets) -> dict:
    """The eager PyTorch loop on the same inputs (see the module docstring), or why not."""
    try:
        import torch
    except ImportError:
        return {"fn": "torch_loop", "skipped": "torch is not installed"}
    if compute_bound_s > budgets["time"]:
        return {"fn": "torch_loop", "skipped": f"compute bound {compute_bound_s:.1f} s > "
                                               "time budget"}
    torch.set_num_threads(os.cpu_count() or 1)
    ad_t, bd = (torch.from_numpy(np.array(x)) for x in (jnp.transpose(Ad), Bd))
    tu = torch.from_numpy(np.array(u))
    batch, L, D = tu.shape

    def run():
        with torch.no_grad():
            out = torch.empty(batch, L, D, bd.shape[0])
            c = torch.zeros(batch, D, bd.shape[0])
            for t in range(L):
                c = torch.addcmul(c @ ad_t, tu[:, t, :, None], bd)
                out[:, t] = c
            return out

    states = run()
    return {"fn": "torch_loop", "time_s": _machine.best_time(run, repeats=3),
            "max_abs_diff_vs_scan": float(np.max(np.abs(states.numpy() - np.array(reference))))}


def bench_shape(batch, D, P, lengths, machine, budgets, layouts=hippo.LAYOUTS):
    Ad, Bd = hippo.discretize(*hippo.transition("legt", P, 64.0), 1.0)
    rows = []
    state, u_t = jnp.zeros((batch, D, P)), jnp.full((batch, D), 0.01)
    step_compiled, step_compile_s = _compile(hippo.step, Ad, Bd, state, u_t)
    rows.append(_record("step", 1, batch, step_compiled, step_compile_s,
                        _flops(step_compiled), (Ad, Bd, state, u_t), machine, budgets))
    for L in lengths:
        u = jnp.full((batch, L, D), 0.01)
        args = (Ad, Bd, u)
        states_bytes = 4 * batch * L * D * P
        for mode in hippo.MODES:
            for layout in layouts:
                if states_bytes > budgets["memory"]:  # not even compiled: it could not run
                    rows.append({"fn": mode, "layout": layout, "L": L, "skipped":
                                 f"the states alone take {states_bytes / 2**30:.2f} GiB > "
                                 "budget"})
                    continue
                fn = lambda Ad, Bd, u, mode=mode, layout=layout: hippo.linear_recurrence(
                    Ad, Bd, u, mode, layout=layout)
                compiled, compile_s = _compile(fn, *args)
                flops = (_loop_flops(mode, batch, L, D, P, _flops(step_compiled))
                         if mode in ("scan", "chunked") else _flops(compiled))
                rows.append({"layout": layout} | _record(mode, L, batch, compiled, compile_s,
                                                         flops, args, machine, budgets))
        scan_row = next(r for r in rows if r["fn"] == "scan" and r["L"] == L
                        and r["layout"] == layouts[0])
        if "time_s" in scan_row:
            reference = jax.jit(hippo.linear_recurrence)(*args)
            rows.append({"L": L, **_torch_loop(Ad, Bd, u, reference,
                                               scan_row["compute_bound_s"], budgets)})
            del reference
        compiled, compile_s = _compile(hippo.final_state, *args)
        rows.append(_record("final_state", L, batch, compiled, compile_s, _flops(compiled),
                            args, machine, budgets))
        del u, args
    return rows


def _label(row):
    """A mode's name in the summary: "chunked" in the `ldp` layout, "chunked (dlp)" in `dlp`."""
    layout = row.get("layout", "ldp")
    return row["fn"] if layout == "ldp" else f"{row['fn']} ({layout})"


def crossovers(rows):
    """Fastest all-states mode per length, where it changes, and how the others compare."""
    timed = [r for r in rows if "time_s" in r]
    winners, relative, final_speedup, peer_ratio = {}, {}, {}, {}
    for L in sorted({r["L"] for r in timed if r["fn"] in hippo.MODES}):
        modes = {_label(r): r["time_s"] for r in timed
                 if r["L"] == L and r["fn"] in hippo.MODES}
        winners[L] = min(modes, key=modes.get)
        relative[L] = {m: round(t / modes[winners[L]], 2) for m, t in modes.items()}
        final = [r["time_s"] for r in timed if r["L"] == L and r["fn"] == "final_state"]
        if final:
            final_speedup[L] = round(modes[winners[L]] / final[0], 1)
        peer = [r["time_s"] for r in timed if r["L"] == L and r["fn"] == "torch_loop"]
        if peer:
            peer_ratio[L] = round(peer[0] / modes[winners[L]], 2)
    lengths = sorted(winners)
    changes = [f"{winners[a]} -> {winners[b]} between L={a} and L={b}"
               for a, b in zip(lengths, lengths[1:]) if winners[a] != winners[b]]
    step = [r for r in timed if r["fn"] == "step"]
    return {
        "fastest_all_states_mode": winners,
        "winner_changes": changes or [f"none: {winners[lengths[0]]} wins at every measured "
                                      "length" if lengths else "nothing timed"],
        "all_states_time_relative_to_fastest": relative,
        "final_state_speedup_over_fastest_all_states": final_speedup,
        "torch_time_over_fastest": peer_ratio,
        "streaming_step_ns_per_element": step[0]["ns_per_element"] if step else None,
        "final_state_ns_per_element": {r["L"]: r["ns_per_element"] for r in timed
                                       if r["fn"] == "final_state"},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test")
    parser.add_argument("--only", choices=sorted(SHAPES), help="run this one shape")
    parser.add_argument("--layouts", default=",".join(hippo.LAYOUTS),
                        help="comma-separated output layouts of the all-states modes")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--memory-budget", type=float, default=1.0, help="GiB per case")
    parser.add_argument("--time-budget", type=float, default=1.0,
                        help="skip cases whose compute bound exceeds this many seconds")
    args = parser.parse_args(argv)
    budgets = {"memory": args.memory_budget * 2**30, "time": args.time_budget}
    layouts = tuple(args.layouts.split(","))
    if not layouts or not set(layouts) <= set(hippo.LAYOUTS):
        parser.error(f"--layouts takes {', '.join(hippo.LAYOUTS)}, got {args.layouts!r}")
    start = time.perf_counter()
    machine = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "peak_matmul_flops": _machine.peak_matmul_flops(),
        "copy_bandwidth": _machine.copy_bandwidth(),
        "copy_bandwidth_fresh_output": _machine.copy_bandwidth(fresh_output=True),
    }
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.only:
        if args.only not in shapes:
            parser.error(f"--quick has no shape {args.only!r}")
        shapes = {args.only: shapes[args.only]}
    results = {}
    for name, (batch, D, P, lengths) in shapes.items():
        rows = bench_shape(batch, D, P, lengths, machine, budgets, layouts)
        results[name] = {"batch": batch, "channels": D, "state": P, "rows": rows,
                         "summary": crossovers(rows)}
    report = {
        "benchmark": "hippo recurrences (float32, legt, bilinear)",
        "units": {"ns_per_element": "wall time / (batch * L); one element = one token of one "
                                    "sequence with all its channels",
                  "flops": "XLA cost_analysis; scan = L x one step, chunked = its GEMMs "
                           "counted",
                  "peak_bytes": "XLA memory_analysis peak of the compiled call",
                  "bound_s": "max(flops / peak_matmul_flops, io_bytes / copy_bandwidth)"},
        "machine": machine,
        "shapes": results,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    emit(report, args.out)


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
