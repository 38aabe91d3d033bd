"""The optimizer's learning-rate schedule."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tvad_jax.train.optim import OptimConfig, make_optimizer


def test_schedule_is_warmup_then_cosine_to_floor():
    cfg = OptimConfig(learning_rate=2.0, warmup_ratio=0.25, lr_floor=0.1, accumulation_steps=2)
    _, lr_at = make_optimizer(cfg, train_steps=40)  # 20 updates, 5 of them warmup
    got = np.array([float(lr_at(jnp.int32(s))) for s in range(40)])
    u = np.arange(40) // 2
    cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (u - 5) / 15))
    want = 2.0 * np.where(u < 5, u / 5, cosine)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
