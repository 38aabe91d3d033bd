"""The jitted train step: gradient accumulation over micro-batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.train.optim import OptimConfig, make_optimizer
from tvad_jax.train.state import init_state
from tvad_jax.train.step import make_train_step


def test_accumulation_equals_one_big_batch():
    """Two micro-batches of 4 with accumulation_steps=2 == one batch of 8 (mean loss), and the
    params do not move on the first micro-step."""
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(8, 3)).astype(np.float32),
                "y": rng.normal(size=(8,)).astype(np.float32)} for _ in range(2)]
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 1)), jnp.float32),
                        "bias": jnp.zeros((1,), jnp.float32)}}

    def loss_fn(trainable, frozen, batch, key):
        pred = batch["x"] @ trainable["dense"]["kernel"] + trainable["dense"]["bias"]
        return jnp.mean((pred[:, 0] - batch["y"]) ** 2), {}

    def run(accumulate, feed):
        cfg = OptimConfig(learning_rate=0.1, warmup_ratio=0.0, clip_norm=0.5,
                          accumulation_steps=accumulate)
        tx, lr_at = make_optimizer(cfg, train_steps=len(feed))
        step = jax.jit(make_train_step(loss_fn, tx, lr_at))
        state = init_state(params, tx)
        seen = []
        for batch in feed:
            state, _ = step(state, {}, batch, jax.random.key(0))
            seen.append(jax.device_get(state.params))
        return seen

    halves = [{k: v[s] for k, v in b.items()} for b in batches for s in (slice(0, 4),
                                                                       slice(4, 8))]
    micro = run(2, halves)
    full = run(1, batches)
    np.testing.assert_array_equal(micro[0]["dense"]["kernel"], params["dense"]["kernel"])
    for got, want in ((micro[1], full[0]), (micro[3], full[1])):
        for key in ("kernel", "bias"):
            np.testing.assert_allclose(got["dense"][key], want["dense"][key], atol=1e-6)
    assert not np.allclose(full[1]["dense"]["kernel"], params["dense"]["kernel"])
