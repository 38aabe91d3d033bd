"""The optimizer: AdamW with linear warmup, cosine decay to a floor, clipping, accumulation.

A "train step" is one call of the jitted step on one batch. With `accumulation_steps = k`
(`optax.MultiSteps`) the parameters change every k-th train step, using the mean gradient of
the k micro-batches, and the learning-rate schedule counts those updates (train steps // k).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from tvad_jax import config as config_lib


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup-cosine schedule.

    Attributes:
      learning_rate: peak learning rate, reached at the end of warmup.
      warmup_ratio: fraction of the optimizer updates spent rising linearly from 0 to the peak.
      lr_floor: the cosine ends at `lr_floor * learning_rate` (0 decays to zero).
      weight_decay: decoupled weight decay, applied to parameters with 2 or more dimensions.
      b1, b2, eps: Adam moments.
      clip_norm: clip the (accumulated) gradient to this global norm; 0 disables clipping.
      accumulation_steps: micro-batches averaged per update.
    """

    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    lr_floor: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0
    accumulation_steps: int = 1

    def __post_init__(self):
        config_lib.check_at_least(self, 0, "learning_rate", "warmup_ratio", "lr_floor",
                                  "weight_decay", "eps", "clip_norm")
        config_lib.check_at_least(self, 1, "accumulation_steps")


def num_updates(config: OptimConfig, train_steps: int) -> int:
    """Optimizer updates in a run of `train_steps` train steps."""
    return max(1, train_steps // config.accumulation_steps)


def make_schedule(config: OptimConfig, train_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer update count."""
    updates = num_updates(config, train_steps)
    warmup = int(round(config.warmup_ratio * updates))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(updates, warmup + 1),
        end_value=config.lr_floor * config.learning_rate,
    )


def _decay_mask(params):
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(config: OptimConfig, train_steps: int
                   ) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
    """The optax chain and `lr(train_step)` (the rate used by the update at that step)."""
    if config.accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be >= 1, got {config.accumulation_steps}")
    schedule = make_schedule(config, train_steps)
    parts = []
    if config.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                             weight_decay=config.weight_decay, mask=_decay_mask))
    tx = optax.chain(*parts)
    k = config.accumulation_steps
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()

    def lr_at(train_step):
        return schedule(train_step // k)

    return tx, lr_at
