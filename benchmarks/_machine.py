"""Measured machine limits that benchmarks quote their timings against.

Both run on jax's default device, compile and warm up first, then keep the best of several
timed runs (each ended by `block_until_ready`): the best run is the closest to the limit.
"""
from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

from tvad_jax.runs import host_cpu


def best_time(fn, *args, repeats: int = 5) -> float:
    """Fastest wall time of `fn(*args)` in seconds, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def peak_matmul_flops(n: int = 2048, dtype=jnp.float32) -> float:
    """Achieved FLOP/s of an n x n by n x n matmul (2 n^3 FLOPs), the compute roof."""
    a = jnp.ones((n, n), dtype)
    b = jnp.full((n, n), 0.5, dtype)
    matmul = jax.jit(jnp.matmul)
    return 2 * n ** 3 / best_time(matmul, a, b)


def copy_bandwidth(nbytes: int = 1 << 28, fresh_output: bool = False) -> float:
    """Bytes read plus bytes written per second by `x + 1` over `nbytes` of float32.

    `x + 1` reads and writes every element once and, unlike a copy, cannot be elided. By
    default the input buffer is donated so the pass runs in place: the steady-state memory
    roof. With `fresh_output` every call writes a newly allocated buffer, as any benchmarked
    function returning a large new array does; on CPU the first touch of fresh pages (page
    faults) then costs several times the copy itself.
    """
    x = jnp.zeros(nbytes // 4, jnp.float32)
    if fresh_output:
        return 2 * nbytes / best_time(jax.jit(lambda x: x + 1), x)
    add_one = jax.jit(lambda x: x + 1, donate_argnums=0)
    x = jax.block_until_ready(add_one(x))  # warm-up and compile
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x = jax.block_until_ready(add_one(x))
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def machine_info() -> dict:
    """What the numbers were measured on (printed at the top of every benchmark's JSON)."""
    return {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        **host_cpu(),           # the CPU model and vector extensions: XLA's CPU code differs
        "python": platform.python_version(),
        "jax": jax.__version__,
    }
