"""Paper 003's Cross-Modality Attention Module (CMAM, eq. 1) and Reconstruction Module (RM).

CMAM sums an object crop's N_q image tokens F^I (from ITAM) weighted by their similarity to
the sentence feature F^T[0] of the crop's caption: G = (F^T[0] F^I^T) F^I, one H_d vector, the
crop's "local pattern". The text says the weights are cosine similarities while eq. 1 prints
the raw dot product; `weights` picks either, or a softmax over the scaled dot products.

RM is 7 fully connected layers, H_d + D_m -> D_h x 6 -> H_d + D_m with ReLU between them,
trained with MSE on normal objects only to reconstruct [G ; M] (the local pattern and the
object's motion histogram, standardized by the caller): its reconstruction error is the
object's anomaly score.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvad_jax import config as config_lib
from tvad_jax.models import layers

WEIGHTS = ("cosine", "dot", "softmax")


def cmam(sentence: jax.Array, tokens: jax.Array, weights: str = "cosine") -> jax.Array:
    """sentence [B, H] (F^T[0]), tokens [B, N_q, H] (F^I) -> G [B, H] (eq. 1)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r} is not one of {WEIGHTS}")
    scores = jnp.einsum("bh,bqh->bq", sentence, tokens)                   # B, N_q
    if weights == "cosine":
        norms = jnp.linalg.norm(sentence, axis=-1, keepdims=True) * \
            jnp.linalg.norm(tokens, axis=-1)
        scores = scores / jnp.maximum(norms, 1e-12)
    elif weights == "softmax":
        scores = jax.nn.softmax(scores / jnp.sqrt(sentence.shape[-1]), axis=-1)
    return jnp.einsum("bq,bqh->bh", scores, tokens)


@dataclasses.dataclass(frozen=True)
class RMConfig:
    """RM sizes: `hidden` D_h (paper 512) and `layers` fully connected layers (paper 7)."""

    hidden: int = 512
    layers: int = 7

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "hidden")
        config_lib.check_at_least(self, 2, "layers")


class ReconstructionModule(nn.Module):
    """x [..., F] -> its reconstruction [..., F] through `layers` Dense layers."""

    config: RMConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for _ in range(self.config.layers - 1):
            h = nn.relu(layers.Dense(self.config.hidden)(h))
        return layers.Dense(x.shape[-1])(h)


def reconstruction_errors(x: jax.Array, reconstruction: jax.Array) -> jax.Array:
    """Mean squared error per row: [..., F] x 2 -> [...]."""
    return jnp.mean(jnp.square(reconstruction - x), axis=-1)
