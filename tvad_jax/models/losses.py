"""Losses on model outputs shared by the jobs: answer-token cross-entropy and InfoNCE."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def contrastive_loss(a: jax.Array, b: jax.Array, logit_scale: jax.Array, ids: jax.Array,
                     valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE between rows of a [M, E] and b [M, E] (row i of a pairs with row i of
    b); rows whose token ids are identical are all positives; rows with valid False take no
    part. Returns (loss, top-1 b->a accuracy)."""
    valid = jnp.ones(len(a), bool) if valid is None else valid
    a, b = unit_rows(a), unit_rows(b)
    both = valid[:, None] & valid[None]
    logits = jnp.exp(jnp.minimum(logit_scale, np.log(100.0))) * a @ b.T        # [M, M]
    logits = jnp.where(both, logits, -1e9)
    same = (jnp.all(ids[:, None] == ids[None], axis=-1) & both).astype(jnp.float32)
    targets = same / jnp.maximum(same.sum(-1, keepdims=True), 1)
    rows = valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1)
    loss_a = -((targets * jax.nn.log_softmax(logits, axis=1)).sum(-1) * rows).sum()
    loss_b = -((targets * jax.nn.log_softmax(logits.T, axis=1)).sum(-1) * rows).sum()
    hit = same[jnp.arange(len(same)), jnp.argmax(logits.T, axis=1)]
    return (loss_a + loss_b) / 2, (hit * rows).sum()


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length (zero rows, e.g. absent regions, stay zero)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def lm_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy over answer tokens (targets >= 0)."""
    mask = targets >= 0
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum() / jnp.maximum(mask.sum(), 1)
