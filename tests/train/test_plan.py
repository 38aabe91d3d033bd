"""The engine's analysis of a compiled step: loop-aware matmul FLOPs, missing analyses."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from tvad_jax.train import flops as flops_lib, plan as engine_plan


def test_loop_aware_flops_match_the_unrolled_program():
    def body(x, w):
        return jnp.tanh(x @ w), None

    def scanned(x, ws):
        return jax.lax.scan(body, x, ws)[0]

    def unrolled(x, ws):
        return jax.lax.scan(body, x, ws, unroll=True)[0]

    x = jax.ShapeDtypeStruct((64, 128), jnp.float32)
    ws = jax.ShapeDtypeStruct((6, 128, 128), jnp.float32)
    matmul = 6 * 2 * 64 * 128 * 128
    counts = {}
    for fn in (scanned, unrolled):
        compiled = jax.jit(fn).lower(x, ws).compile()
        hlo = flops_lib.hlo_matmul_flops(compiled.as_text())
        assert hlo["matmul_flops"] == matmul
        counts[fn.__name__] = engine_plan.analyze(compiled, {}, 1)["flops_per_device"]
    assert counts["scanned"] == pytest.approx(counts["unrolled"], rel=0.01)


def test_missing_analyses_read_as_none():
    class NoAnalyses:
        def memory_analysis(self):
            return None

        def cost_analysis(self):
            return None

        def as_text(self):
            raise NotImplementedError

    out = engine_plan.analyze(NoAnalyses(), {"trainable_params": 4}, 8)
    assert out["flops_per_device"] is None and out["flops_total"] is None
    assert out["matmul_flops_per_device"] is None
    bytes_ = out["per_device_bytes"]
    assert bytes_["trainable_params"] == 4
    assert bytes_["temp"] is None and bytes_["peak_estimate"] is None
