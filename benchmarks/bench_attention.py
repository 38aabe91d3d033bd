"""Attention alone: each implementation of `tvad_jax.models.attention` (and PyTorch's
`scaled_dot_product_attention` when torch is installed) on the project's shapes; one JSON object.

    .venv/bin/python benchmarks/bench_attention.py [--repeats 5] [--only joint_vit,causal_decoder]

Workloads (float32):
  joint_vit       the shipped ViT's joint space-time attention: 4 clips x (8 tubelets x 145
                  tokens), 4 heads of 32
  causal_decoder  the shipped decoder's prefill: batch 4 x 512 tokens, causal, 4 heads of 48

Each is timed forward and forward + backward (gradient of sum(o * w) for all of q, k, v), as
the best of `--repeats` runs after a warm-up (`benchmarks/_machine.best_time`); outputs of every
implementation are checked against the "xla" one (max abs difference printed). The PyTorch
peer runs in the same process on the same arrays with as many threads as jax has cores.
`speedup_vs_xla` and `torch_time_over_ours` are ratios of those times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _machine  # noqa: E402

from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models.attention import attention  # noqa: E402

WORKLOADS = {
    "joint_vit": dict(batch=4, length=8 * 145, heads=4, head_dim=32, causal=False),
    "causal_decoder": dict(batch=4, length=512, heads=4, head_dim=48, causal=True),
}
IMPLEMENTATIONS = ("einsum", "xla")


def _inputs(w: dict):
    keys = jax.random.split(jax.random.key(0), 4)
    shape = (w["batch"], w["length"], w["heads"], w["head_dim"])
    return tuple(jax.random.normal(k, shape, jnp.float32) for k in keys)


def _jax_fns(implementation: str, causal: bool):
    def forward(q, k, v):
        return attention(q, k, v, is_causal=causal, implementation=implementation)

    def backward(q, k, v, w):
        return jax.grad(lambda *x: jnp.sum(forward(*x) * w), argnums=(0, 1, 2))(q, k, v)

    return jax.jit(forward), jax.jit(backward)


def _torch_times(q, k, v, w, causal: bool, repeats: int) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    tq, tk, tv, tw = (torch.from_numpy(np.array(x)).transpose(1, 2).contiguous()
                      for x in (q, k, v, w))       # [B, H, L, Dh]

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def forward():
        with torch.no_grad():
            return sdpa(tq, tk, tv, is_causal=causal)

    leaves = [x.clone().requires_grad_(True) for x in (tq, tk, tv)]

    def backward():
        out = sdpa(*leaves, is_causal=causal)
        return torch.autograd.grad((out * tw).sum(), leaves)

    return {"forward_s": _machine.best_time(forward, repeats=repeats),
            "backward_s": _machine.best_time(backward, repeats=repeats)}


def run(name: str, repeats: int) -> dict:
    w = WORKLOADS[name]
    q, k, v, weights = _inputs(w)
    out, reference = {}, None
    for implementation in ("xla",) + tuple(i for i in IMPLEMENTATIONS if i != "xla"):
        forward, backward = _jax_fns(implementation, w["causal"])
        result = forward(q, k, v)
        reference = result if reference is None else reference
        out[implementation] = {
            "forward_s": _machine.best_time(forward, q, k, v, repeats=repeats),
            "backward_s": _machine.best_time(backward, q, k, v, weights, repeats=repeats),
            "max_abs_diff_vs_xla": float(jnp.abs(result - reference).max())}
    for implementation in IMPLEMENTATIONS:
        for part in ("forward", "backward"):
            out[implementation][f"{part}_speedup_vs_xla"] = (
                out["xla"][f"{part}_s"] / out[implementation][f"{part}_s"])
    torch_times = _torch_times(q, k, v, weights, w["causal"], repeats)
    if torch_times is not None:
        out["torch_sdpa"] = torch_times
        for part in ("forward", "backward"):
            out["einsum"][f"{part}_torch_time_over_ours"] = (
                torch_times[f"{part}_s"] / out["einsum"][f"{part}_s"])
    return {"shape": w, **out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; expected some of {list(WORKLOADS)}")
    print(json.dumps({"machine": _machine.machine_info(), "backend": jax.default_backend(),
                      "workloads": {n: run(n, args.repeats) for n in names}}, indent=2))
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()
    raise SystemExit(main())
