"""Video ViT: the CLIP vision architecture on 2-frame tubelets (the paper's E_v).

    vit = VisionTransformer(cfg, embed_dim=768)
    out = vit.apply({"params": params}, pixels)        # pixels [B, T, H, W, 3], T % 2 == 0
    out.hidden   # tuple over cfg.feature_layers of [B, T', 1+N, D]
    out.final    # [B, T', 1+N, D] last layer after post-LN
    out.pooled   # [B, T', D] post-LN CLS of each tubelet
    out.embeds   # [B, T', E] visual projection of pooled (None without embed_dim)

Tubelet embedding (`stem="tubelet"`): a 3-D convolution with kernel and stride (tubelet, P, P)
and no bias, done as a reshape and one einsum. Loading a 2-D CLIP patch embedding inflates it:
each temporal tap gets weight / tubelet, so a tubelet of identical frames embeds exactly as CLIP
embeds the frame. Each tubelet has its own CLS token; CLIP's spatial position embedding [1+N, D]
is shared by all tubelets, plus a learnable temporal embedding [T'_max, D] (zeros at init and
when loaded from CLIP, which has none). With attention="frame" and identical frames every
tubelet's hidden states equal CLIP's `hidden_states` of that frame.

The convolutional stem (`stem="conv"`, for towers trained from scratch) replaces the tubelet
embedding: log2(P) 3x3 stride-2 convolutions over each frame and its differences to the frames
`motion_spans` earlier (by default the previous one; the clip's first frame where that is before
the clip), so that motion enters as the pixels that changed, then a linear map of the tubelet's
frames concatenated.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models import layers as L
from tvad_jax.models.configs import VisionConfig, dtype_of, resolve_layers


@flax.struct.dataclass
class VisionOutput:
    """Outputs of `VisionTransformer` (a pytree). Letters: B, T' tubelets, N patches, D, E."""

    hidden: tuple[jax.Array, ...]   # requested layers, each [B, T', 1+N, D]
    final: jax.Array                # [B, T', 1+N, D] post-LN last layer
    pooled: jax.Array               # [B, T', D] post-LN CLS
    embeds: Any = None              # [B, T', E] visual projection of pooled, or None


class VisionTransformer(nn.Module):
    """Video ViT (see the module docstring).

    Attributes:
      cfg: the `VisionConfig`.
      embed_dim: size E of the visual projection (CLIP's `visual_projection`); None: none.

    Params: patch_embed [tubelet, P, P, 3, D] (stem "tubelet") or stem_i/{kernel [3, 3, C_in,
    C_out], bias} and stem_proj [tubelet * D, D] (stem "conv"), cls [D], pos_embed [1+N, D],
    time_embed [T'_max, D], pre_ln, layers (scanned `EncoderBlock`s, leading axis depth),
    post_ln, and proj/kernel [D, E] with embed_dim.
    """

    cfg: VisionConfig
    embed_dim: int | None = None

    def setup(self):
        cfg = self.cfg
        D, P = cfg.width, cfg.patch_size
        if cfg.stem == "tubelet":
            self.patch_embed = self.param(
                "patch_embed", L.kernel_init((None, None, None, None, "embed"), stddev=0.02),
                (cfg.tubelet, P, P, 3, D), jnp.float32)
        else:
            self.stem_convs = [  # 3x3, stride 2, "SAME": [B, H, W, C] -> [B, H/2, W/2, C']
                nn.Conv(D >> (self.stem_depth - 1 - i), (3, 3), strides=2, padding="SAME",
                        dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=L.kernel_init((None, None, None, None)),
                        bias_init=L.zeros((None,)), name=f"stem_{i}")
                for i in range(self.stem_depth)]
            self.stem_proj = L.Dense(D, use_bias=False, dtype=self.dtype,
                                     kernel_init=L.kernel_init((None, "embed")), name="stem_proj")
        self.cls = self.param("cls", L.kernel_init(("embed",), stddev=0.02), (D,), jnp.float32)
        self.pos_embed = self.param("pos_embed", L.kernel_init(("tokens", "embed"), stddev=0.02),
                                    (1 + cfg.num_patches, D), jnp.float32)
        self.time_embed = self.param("time_embed", L.zeros(("tubelets", "embed")),
                                     (cfg.max_tubelets, D), jnp.float32)
        self.pre_ln = L.layer_norm(cfg.layer_norm_eps, self.dtype)
        self.layers = L.scan_blocks(
            L.EncoderBlock, cfg.depth, width=D, heads=cfg.heads, mlp_dim=cfg.mlp_dim,
            activation=cfg.activation, eps=cfg.layer_norm_eps, causal=False, remat=cfg.remat,
            dtype=self.dtype, layout=cfg.attention)
        self.post_ln = L.layer_norm(cfg.layer_norm_eps, self.dtype)
        if self.embed_dim is not None:
            self.proj = L.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                                 kernel_init=L.kernel_init(("embed", None)), name="proj")

    @property
    def dtype(self):
        return dtype_of(self.cfg.dtype)

    @property
    def stem_depth(self) -> int:
        """Stride-2 convolutions of the "conv" stem: log2(P)."""
        return self.cfg.patch_size.bit_length() - 1

    def _patch_tokens(self, pixels: jax.Array) -> jax.Array:
        """pixels [B, T, H, W, 3] -> patch tokens [B, T', h, w, D] (the stem)."""
        cfg = self.cfg
        B, T, H, W, C = pixels.shape
        P, t = cfg.patch_size, cfg.tubelet
        Tp, Hp, Wp = T // t, H // P, W // P
        x = pixels.astype(self.dtype)
        if cfg.stem == "tubelet":
            x = x.reshape(B, Tp, t, Hp, P, Wp, P, C)
            return jnp.einsum("btuhpwqc,upqcd->bthwd", x, self.patch_embed.astype(self.dtype))
        earlier = [x[:, np.maximum(np.arange(T) - span, 0)] for span in cfg.motion_spans]
        x = jnp.concatenate([x] + [x - e for e in earlier], axis=-1)
        x = x.reshape(B * T, H, W, (1 + len(earlier)) * C)
        for i, conv in enumerate(self.stem_convs):
            x = conv(x) if i == 0 else conv(nn.gelu(x, approximate=False))
        x = x.reshape(B, Tp, t, Hp, Wp, cfg.width).transpose(0, 1, 3, 4, 2, 5)
        return self.stem_proj(x.reshape(B, Tp, Hp, Wp, t * cfg.width))

    def embed(self, pixels: jax.Array) -> jax.Array:
        """pixels [B, T, H, W, 3] -> tokens [B, T', 1+N, D] after pre-LN (hidden state 0)."""
        cfg = self.cfg
        B, T, H, W, C = pixels.shape
        P, t = cfg.patch_size, cfg.tubelet
        if T % t or H != cfg.image_size or W != cfg.image_size or C != 3:
            raise ValueError(f"pixels {pixels.shape}: expected [B, T, {cfg.image_size}, "
                             f"{cfg.image_size}, 3] with T a multiple of {t}")
        if T // t > cfg.max_tubelets:
            raise ValueError(f"{T} frames exceed max_frames={cfg.max_frames}")
        Tp, Hp, Wp = T // t, H // P, W // P
        x = self._patch_tokens(pixels).reshape(B, Tp, Hp * Wp, cfg.width)  # B, T', N, D
        cls = jnp.broadcast_to(self.cls.astype(self.dtype), (B, Tp, 1, cfg.width))
        x = jnp.concatenate([cls, x], axis=2)                            # B, T', 1+N, D
        x = x + self.pos_embed.astype(self.dtype)[None, None]
        x = x + self.time_embed[:Tp].astype(self.dtype)[None, :, None]
        x = L.constrain(x, ("batch", "tubelets", "tokens", "embed"))
        return self.pre_ln(x)

    def visual_projection(self, features: jax.Array) -> jax.Array:
        """[..., D] post-LN features (the CLS or pooled patches) -> [..., E] joint space."""
        return self.proj(features)

    def __call__(self, pixels: jax.Array, layers: tuple[int | float, ...] | None = None
                 ) -> VisionOutput:
        """pixels [B, T, H, W, 3] (CLIP-normalized) -> `VisionOutput`.

        `layers` (static) overrides `cfg.feature_layers` for `hidden` (same conventions).
        """
        cfg = self.cfg
        wanted = resolve_layers(cfg.feature_layers if layers is None else layers, cfg.depth)
        x0 = self.embed(pixels)
        # Layers 1..depth write their output into buf[slot]; slot K (last) is scratch.
        deep = sorted(set(i for i in wanted if i > 0))
        K = len(deep)
        slots = jnp.asarray([deep.index(i + 1) if i + 1 in deep else K
                             for i in range(cfg.depth)], jnp.int32)
        buf = jnp.zeros((K + 1,) + x0.shape, x0.dtype)
        (x, buf), _ = self.layers((x0, buf), slots, None)
        hidden = tuple(x0 if i == 0 else buf[deep.index(i)] for i in wanted)
        final = self.post_ln(x)
        pooled = final[:, :, 0]
        embeds = self.proj(pooled) if self.embed_dim is not None else None
        return VisionOutput(hidden=hidden, final=final, pooled=pooled, embeds=embeds)
