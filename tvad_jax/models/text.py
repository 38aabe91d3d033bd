"""CLIP text tower (the paper's E_t) and the sentence mean pooling of eq. 2.

    tower = TextTransformer(cfg, embed_dim=768)
    out = tower.apply({"params": params}, ids, mask)   # ids, mask [B, L]
    out.features  # [B, L, D] token features after the final LayerNorm (T_c of eq. 2)
    out.pooled    # [B, D] features at the EOS token (CLIP's pooled output)
    out.embeds    # [B, E] text projection of pooled (None without embed_dim)
    S = mean_pool(out.features, mask)                  # [B, D], S_c of eq. 2

Attention is causal (as in CLIP) and ignores padded keys (mask 0).
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from tvad_jax.models import layers as L
from tvad_jax.models.configs import TextConfig, dtype_of


@flax.struct.dataclass
class TextOutput:
    features: jax.Array     # [B, L, D]
    pooled: jax.Array       # [B, D]
    embeds: Any = None      # [B, E] or None


def mean_pool(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over the valid tokens (paper eq. 2): features [..., L, D], mask [..., L] -> [..., D].

    Computed in float32; rows with no valid token give zeros.
    """
    features = features.astype(jnp.float32)
    if mask is None:
        return features.mean(axis=-2)
    mask = mask.astype(jnp.float32)[..., None]
    return (features * mask).sum(-2) / jnp.maximum(mask.sum(-2), 1.0)


class TextTransformer(nn.Module):
    """CLIP text transformer.

    Attributes:
      cfg: the `TextConfig`.
      embed_dim: size E of the text projection (CLIP's `text_projection`); None: none.

    Params: token_embed [V, D], pos_embed [L_max, D], layers (scanned `EncoderBlock`s),
    final_ln, and proj/kernel [D, E] with embed_dim.
    """

    cfg: TextConfig
    embed_dim: int | None = None

    def setup(self):
        cfg = self.cfg
        self.token_embed = self.param("token_embed", L.kernel_init(("vocab", "embed"), 0.02),
                                      (cfg.vocab_size, cfg.width), jnp.float32)
        self.pos_embed = self.param("pos_embed", L.kernel_init(("length", "embed"), 0.01),
                                    (cfg.max_length, cfg.width), jnp.float32)
        self.layers = L.scan_blocks(
            L.EncoderBlock, cfg.depth, width=cfg.width, heads=cfg.heads, mlp_dim=cfg.mlp_dim,
            activation=cfg.activation, eps=cfg.layer_norm_eps, causal=True, remat=cfg.remat,
            dtype=self.dtype, layout="tokens")
        self.final_ln = L.layer_norm(cfg.layer_norm_eps, self.dtype)
        if self.embed_dim is not None:
            self.proj = L.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                                 kernel_init=L.kernel_init(("embed", None)), name="proj")

    @property
    def dtype(self):
        return dtype_of(self.cfg.dtype)

    def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> TextOutput:
        """ids [B, L] int, mask [B, L] (1 = token, 0 = padding; None = all tokens)."""
        cfg = self.cfg
        B, Lq = ids.shape
        if Lq > cfg.max_length:
            raise ValueError(f"{Lq} tokens exceed max_length={cfg.max_length}")
        x = jnp.take(self.token_embed, ids, axis=0) + self.pos_embed[:Lq]
        x = L.constrain(x.astype(self.dtype), ("batch", "length", "embed"))
        attend = None
        if mask is not None:
            attend = mask.astype(bool)[:, None, None, :]            # B, 1, 1, L (keys)
        slots = jnp.zeros((cfg.depth,), jnp.int32)
        (x, _), _ = self.layers((x, None), slots, attend)
        features = self.final_ln(x)
        if cfg.pool == "argmax":
            eos = jnp.argmax(ids, axis=-1)
        else:
            eos = jnp.argmax(ids == cfg.eos_token_id, axis=-1)
        pooled = features[jnp.arange(B), eos]
        embeds = self.proj(pooled) if self.embed_dim is not None else None
        return TextOutput(features=features, pooled=pooled, embeds=embeds)
