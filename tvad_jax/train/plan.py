"""Read a compiled step: per-device memory and FLOPs off the executable (`tvad plan`).

    engine = loop.abstract_engine(spec, mesh)                  # nothing allocated
    compiled = engine.step.lower(engine.state, engine.frozen, batch, engine.rng).compile()
    report = analyze(compiled, breakdown, devices)             # a JSON-ready dict

Reported, per device:
  per_device_bytes:
    trainable_params, frozen_params, optimizer_state, batch   from the shardings of the
        abstract trees (`tree_bytes`: shard shape x itemsize, summed): the arguments' breakdown;
    arguments, outputs, aliased, temp, generated_code          `compiled.memory_analysis()`
        (temp = activations and every other scratch buffer of the step);
    peak_estimate = arguments + outputs - aliased + temp.
  flops_per_device: XLA's `cost_analysis()` FLOPs with the matmul/convolution FLOPs inside
    loops multiplied by their trip counts. XLA's cost analysis counts a `while` body once
    (a scanned 32-layer decoder would show 1/32 of its layer FLOPs); the raw figure is kept as
    `flops_per_device_xla`, and `matmul_flops_per_device` is the loop-aware count of dot and
    convolution FLOPs alone, read from the compiled HLO. flops_total = per device x devices.
  Missing analyses (a backend that returns None) appear as null.

On simulated CPU devices (`jax_num_cpu_devices`) the SPMD partitioner runs as it would on a
pod, so the compiled program is one device's share of the step. The CPU backend's buffer
assignment is close to, not the same as, a TPU's or GPU's: read the numbers as a plan, with a
margin.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from tvad_jax.train.flops import step_flops

GiB = float(1 << 30)


def tree_bytes(tree: Any, shardings: Any = None) -> int:
    """Bytes of a tree of arrays/ShapeDtypeStructs: global, or per device (the largest shard
    of each leaf) given matching shardings (one sharding may stand for the whole tree)."""
    leaves = jax.tree.leaves(tree)
    if shardings is None:
        return int(sum(math.prod(x.shape) * _itemsize(x.dtype) for x in leaves))
    if isinstance(shardings, jax.sharding.Sharding):
        shards = [shardings] * len(leaves)
    else:
        shards = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    assert len(shards) == len(leaves), (len(shards), len(leaves))
    total = 0
    for x, s in zip(leaves, shards):
        shape = s.shard_shape(x.shape) if x.shape else ()
        total += math.prod(shape) * _itemsize(x.dtype)
    return int(total)


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: 2 x uint32
    return np.dtype(dtype).itemsize


def count(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------------
# Lowering, compiling, reading the executable

def analyze(compiled, breakdown: dict, devices: int) -> dict:
    """Per-device memory (the argument breakdown plus `memory_analysis()`) and FLOPs
    (`cost_analysis()`, loop-corrected) of a compiled executable; None where the backend
    gives nothing."""
    per_device = dict(breakdown)
    mem = None
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        mem = None
    fields = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
              "aliased": "alias_size_in_bytes", "temp": "temp_size_in_bytes",
              "generated_code": "generated_code_size_in_bytes"}
    for key, attr in fields.items():
        value = getattr(mem, attr, None) if mem is not None else None
        per_device[key] = int(value) if value is not None else None
    if mem is not None and None not in (per_device["arguments"], per_device["outputs"],
                                        per_device["aliased"], per_device["temp"]):
        per_device["peak_estimate"] = (per_device["arguments"] + per_device["outputs"]
                                       - per_device["aliased"] + per_device["temp"])
    else:
        per_device["peak_estimate"] = None

    flops, xla_flops, hlo = step_flops(compiled)
    return {
        "per_device_bytes": per_device,
        "flops_per_device": flops,
        "flops_per_device_xla": xla_flops,
        "matmul_flops_per_device": None if hlo is None else hlo["matmul_flops"],
        "flops_total": None if flops is None else flops * devices,
        "loops": None if hlo is None else hlo["loops"],
    }


def param_axes(tree: Any) -> dict[str, tuple]:
    """'/'-joined path -> (global shape, dtype, logical axis names or None) of a boxed
    abstract params tree (for checking shardings independently)."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    out = {}
    for path, leaf in flat.items():
        if isinstance(leaf, nn.LogicallyPartitioned):
            out[path] = (tuple(leaf.value.shape), leaf.value.dtype, tuple(leaf.names))
        else:
            out[path] = (tuple(leaf.shape), leaf.dtype, None)
    return out
