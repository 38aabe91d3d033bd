"""Losses on model outputs shared by the jobs: answer-token cross-entropy, InfoNCE and a
class-balanced per-patch classification."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def contrastive_loss(a: jax.Array, b: jax.Array, logit_scale: jax.Array, ids: jax.Array,
                     valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE between rows of a [M, E] and b [M, E] (row i of a pairs with row i of
    b) on their cosine similarities; see `similarity_contrastive_loss`."""
    return similarity_contrastive_loss(unit_rows(a) @ unit_rows(b).T, logit_scale, ids, valid)


def similarity_contrastive_loss(similarity: jax.Array, logit_scale: jax.Array, ids: jax.Array,
                                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE on similarity [M, M] (row i of one side against column j of the
    other, pairs on the diagonal; e.g. cosines), scaled by `logit_scale_factor`;
    rows whose token ids are identical are all positives; rows with valid False take no
    part. Returns (loss, top-1 accuracy of each column's best row)."""
    valid = jnp.ones(len(similarity), bool) if valid is None else valid
    both = valid[:, None] & valid[None]
    logits = logit_scale_factor(logit_scale) * similarity                       # [M, M]
    logits = jnp.where(both, logits, -1e9)
    same = (same_rows(ids) & both).astype(jnp.float32)
    targets = same / jnp.maximum(same.sum(-1, keepdims=True), 1)
    rows = valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1)
    loss_a = -((targets * jax.nn.log_softmax(logits, axis=1)).sum(-1) * rows).sum()
    loss_b = -((targets * jax.nn.log_softmax(logits.T, axis=1)).sum(-1) * rows).sum()
    hit = same[jnp.arange(len(same)), jnp.argmax(logits.T, axis=1)]
    return (loss_a + loss_b) / 2, (hit * rows).sum()


def logit_scale_factor(logit_scale: jax.Array) -> jax.Array:
    """exp(logit_scale) capped at 100, the factor on cosine logits (CLIP's clamp)."""
    return jnp.exp(jnp.minimum(logit_scale, np.log(100.0)))


def same_rows(ids: jax.Array) -> jax.Array:
    """[M, M] bool: rows i and j of ids [M, L] are identical (e.g. the same caption)."""
    return jnp.all(ids[:, None] == ids[None], axis=-1)


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length (zero rows, e.g. absent regions, stay zero)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None
            ) -> jax.Array:
    """Cross-entropy over answer tokens (targets >= 0), averaged with `weights` (same shape
    as targets; default: every answer token alike)."""
    mask = (targets >= 0).astype(jnp.float32)
    weights = mask if weights is None else weights * mask
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


def grouped_choice_loss(a: jax.Array, phrases: jax.Array, logit_scale: jax.Array,
                        labels: jax.Array, group_sizes: tuple[int, ...],
                        valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy of picking each row's own phrase among its group's phrases.

    a [M, E] rows (e.g. pooled regions), phrases [P, E] embeddings of the groups' phrases one
    group after the other (`group_sizes`, static, summing to P), labels [M, G] the index within
    each group (-1: the row has no phrase in that group), valid [M] rows taking part. Cosine
    logits scaled as in `contrastive_loss`. Returns (mean over groups of the mean loss over
    labelled rows, mean top-1 accuracy likewise)."""
    valid = jnp.ones(len(a), bool) if valid is None else valid
    logits = logit_scale_factor(logit_scale) * unit_rows(a) @ unit_rows(phrases).T  # [M, P]
    losses, hits = [], []
    start = 0
    for g, size in enumerate(group_sizes):
        group = logits[:, start:start + size]
        start += size
        label = labels[:, g]
        use = (valid & (label >= 0)).astype(jnp.float32)
        count = jnp.maximum(use.sum(), 1)
        logp = jnp.take_along_axis(jax.nn.log_softmax(group), jnp.maximum(label, 0)[:, None],
                                   axis=1)[:, 0]
        losses.append(-(logp * use).sum() / count)
        hits.append(((jnp.argmax(group, axis=1) == label) * use).sum() / count)
    return jnp.mean(jnp.stack(losses)), jnp.mean(jnp.stack(hits))


def balanced_region_patch_loss(logits: jax.Array, coverage: jax.Array, labels: jax.Array
                               ) -> tuple[jax.Array, jax.Array]:
    """Class-balanced cross-entropy of per-patch class logits against the labels of the regions
    that cover each patch.

    logits [B, T, N, C] per patch, coverage [B, K, T, N] the share of each patch a region
    covers (its weight in the loss), labels [B, K] each region's class (-1: none). Each class
    present in the batch counts equally, however few patches it covers, so that rare values
    (a fast object, a lying person) are not traded for the common ones. Returns (loss, balanced
    top-1 accuracy), both averaged over the classes present."""
    num_classes = logits.shape[-1]
    logp = jax.nn.log_softmax(logits)                                       # [B, T, N, C]
    onehot = jax.nn.one_hot(labels, num_classes)                            # [B, K, C]; -1 -> 0
    # per class: coverage-weighted sums of -log p(class) and of hits over its regions' patches
    weight = jnp.einsum("bktn,bkc->btnc", coverage, onehot)                 # [B, T, N, C]
    mass = weight.sum(axis=(0, 1, 2))                                       # [C]
    nll = -(weight * logp).sum(axis=(0, 1, 2))                              # [C]
    hit = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes)
    hits = (weight * hit).sum(axis=(0, 1, 2))
    present = mass > 0
    count = jnp.maximum(present.sum(), 1)
    per_class = jnp.where(present, 1.0 / jnp.maximum(mass, 1e-9), 0.0)
    return (nll * per_class).sum() / count, (hits * per_class).sum() / count
