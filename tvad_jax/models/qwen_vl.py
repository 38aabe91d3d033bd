"""Qwen2.5-VL in Flax: the window-attention vision tower, the M-RoPE Qwen2 decoder, loading.

    cfg, params = load("/path/Qwen2.5-VL-7B-Instruct")
    embeds = vision_embeds(params, cfg, pixel_values, grid_thw)      # = model.visual
    position_ids, rope_deltas = rope_index(cfg, input_ids, image_grid_thw=grid_thw)
    out = logits(params, cfg, input_ids, pixel_values=pixel_values, image_grid_thw=grid_thw)
    ids = generate(params, cfg, input_ids, pixel_values=pixel_values, image_grid_thw=grid_thw,
                   max_new_tokens=32)                              # prompt + new ids (greedy)

The public functions take transformers' arguments and layouts: `pixel_values` [N, C*tp*P*P]
are the processor's flattened patches (rows: time, 2 x 2 merge blocks in raster order, the
patches inside a block; columns: channel, temporal, y, x), `grid_thw` [n, 3] the patch grid of
each image or video (concrete: it fixes the static token layout). Params: {"vision": ...,
"text": ...}, float32.

Vision tower: the Conv3d patch embedding (temporal patch tp, stride = kernel) as a reshape and
one einsum; 2-D rotary embedding of each patch's (row, column); scanned blocks of RMSNorm,
attention and a gated SiLU MLP with biases; the 2 x 2 patch merger (RMSNorm, MLP with GELU).
Blocks work in window order: each window of `window_size` pixels (window x window merged
tokens) is padded to full size, so the layout of a resolution has a static shape. Windowed
blocks attend within a window; the blocks of `full_blocks` attend within each image's temporal
step (transformers' `cu_seqlens`), the steps gathered into rows padded to the longest (no
attention across the whole sequence). The merger's output is put back in raster order, the
order of the prompt's placeholder tokens.

Decoder: the project's Llama decoder (`decoder.Decoder`, its KV cache and scanned layers) with
Qwen2 attention (q/k/v biases, no output bias, grouped-query) and M-RoPE: the rotary channels
are split into `mrope_section` (temporal, height, width) sections, each rotated by its own
position axis; positions are [3, B, L] (`rope_index`). A padded batch (`attention_mask`, as
transformers takes it, padding on either side) runs with each row's tokens packed to its front,
the decoder's right padding (per-row lengths, one KV cache).

Letters: N patches, M merged tokens (N / merge^2), S padded slots, W slots per window, D width,
H heads, K kv heads, Dh head size, B batch, L length, V vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models import hf_tables as tables, layers as L
from tvad_jax.models.attention import attention
from tvad_jax.models.configs import DTYPES, DecoderConfig, dtype_of
from tvad_jax.models.convert import (CheckpointError, Rule, apply_rules, check_shapes, read_config,
                                     read_pytorch_layout, reshape, transpose)
from tvad_jax.models.decoder import (Decoder, DecoderLayer, adapt_with_lora, cached_attention,
                                     init_cache)
from tvad_jax.models.generate import sample


# ------------------------------------------------------------------ configs
@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
    """The Qwen2.5-VL vision tower (defaults: Qwen2.5-VL-7B).

    Attributes:
      width, depth, heads, mlp_dim: D, blocks, H, gated MLP hidden size.
      patch_size, temporal_patch, in_channels: the Conv3d kernel (tp, P, P) over C channels.
      merge: merged tokens are merge x merge patches; out_width: the merger's output (the
        decoder width).
      window_size: window side in pixels (window_size / merge / patch_size merged tokens).
      full_blocks: blocks attending within a whole temporal step (`fullatt_block_indexes`).
      tokens_per_second: temporal M-RoPE positions per second of video.
      rms_eps: RMSNorm epsilon; dtype, remat: as in the other towers.
    """

    width: int = 1280
    depth: int = 32
    heads: int = 16
    mlp_dim: int = 3420
    patch_size: int = 14
    temporal_patch: int = 2
    in_channels: int = 3
    merge: int = 2
    out_width: int = 3584
    window_size: int = 112
    full_blocks: tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: int = 2
    rms_eps: float = 1e-6
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        if self.width % self.heads or (self.width // self.heads) % 4:
            raise ValueError(f"width {self.width} / heads {self.heads} must be a multiple of 4")
        if self.window_size % (self.merge * self.patch_size):
            raise ValueError(f"window_size {self.window_size} is not a multiple of merge x "
                             f"patch_size {self.merge * self.patch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")

    @property
    def window(self) -> int:
        """Window side in merged tokens."""
        return self.window_size // self.merge // self.patch_size

    @property
    def unit(self) -> int:
        """Patches per merged token."""
        return self.merge * self.merge

    @property
    def window_slots(self) -> int:
        """W, patch slots per (padded) window."""
        return self.window * self.window * self.unit


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
    """Qwen2.5-VL: vision tower, decoder (`DecoderConfig`), M-RoPE sections, special ids."""

    vision: QwenVisionConfig
    text: DecoderConfig
    mrope_section: tuple[int, int, int]
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int

    def __post_init__(self):
        if len(self.mrope_section) != 3 or 2 * sum(self.mrope_section) != \
                self.text.dim_per_head:
            raise ValueError(f"mrope_section {self.mrope_section}: three sections summing to "
                             f"head_dim / 2 = {self.text.dim_per_head // 2}")


def qwen25vl_7b(**text_overrides) -> QwenVLConfig:
    """Qwen2.5-VL-7B(-Instruct): vision 32 blocks x 1280 (full attention at 7, 15, 23, 31),
    decoder 28 layers x 3584 with 4 KV heads, vocabulary 152,064, untied head (8.29B
    parameters). `text_overrides` replace `DecoderConfig` fields (e.g. dtype, remat)."""
    text = dataclasses.replace(DecoderConfig(
        vocab_size=152064, width=3584, depth=28, heads=28, kv_heads=4, mlp_dim=18944,
        rope_theta=1e6, rms_eps=1e-6, max_length=128000, bos_token_id=151643,
        eos_token_id=151645, pad_token_id=151643), **text_overrides)
    return QwenVLConfig(vision=QwenVisionConfig(), text=text, mrope_section=(16, 24, 24),
                        image_token_id=151655, video_token_id=151656,
                        vision_start_token_id=151652, vision_end_token_id=151653)


# ------------------------------------------------------------------ rotary embeddings
def vision_angles(hw: jax.Array, head_dim: int, theta: float = 10000.0) -> jax.Array:
    """Patch (row, column) [S, 2] -> rotary angles [S, Dh]: the first quarter of the channels
    rotate with the row, the second with the column, repeated for the other half."""
    dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))   # Dh/4
    freqs = hw.astype(jnp.float32)[:, :, None] * inv_freq                          # S, 2, Dh/4
    freqs = freqs.reshape(hw.shape[0], dim)
    return jnp.concatenate([freqs, freqs], axis=-1)


def mrope_angles(positions: jax.Array, head_dim: int, sections: tuple[int, int, int],
                 theta: float) -> jax.Array:
    """M-RoPE: positions [3, B, L] -> angles [B, L, Dh]. Channel c < Dh/2 belongs to the
    section (temporal, height, width) of `sections` it falls in and takes that axis's
    position; channel c + Dh/2 repeats it."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    axis = np.repeat(np.arange(3), sections)                                   # Dh/2
    pos = jnp.moveaxis(positions.astype(jnp.float32)[axis], 0, -1)            # B, L, Dh/2
    freqs = pos * inv_freq
    return jnp.concatenate([freqs, freqs], axis=-1)


# ------------------------------------------------------------------ preprocessing
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """transformers' `smart_resize`: the (height, width) the processor resizes a frame to,
    multiples of `factor` (patch x merge) as close to the aspect ratio as possible, with
    min_pixels <= height * width <= max_pixels."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width)} above 200")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def normalize(frames) -> np.ndarray:
    """uint8 RGB frames [..., 3] -> float32 (x / 255 - CLIP mean) / CLIP std, the processor's
    rescale and normalisation."""
    return ((np.asarray(frames, np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD).astype(np.float32)


def patchify(cfg: QwenVisionConfig, frames) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, H, W, C] (already resized and normalised; H, W multiples of patch x merge)
    -> (pixel_values [N, C*tp*P*P], grid_thw [1, 3]) in `Qwen2VLImageProcessor`'s flattened
    layout. A T that is not a multiple of tp repeats the last frame (an image is T = 1)."""
    x = np.asarray(frames, np.float32).transpose(0, 3, 1, 2)                # T, C, H, W
    tp, P, m = cfg.temporal_patch, cfg.patch_size, cfg.merge
    if x.shape[0] % tp:
        x = np.concatenate([x] + [x[-1:]] * (tp - x.shape[0] % tp))
    T, C, H, W = x.shape
    gt, gh, gw = T // tp, H // P, W // P
    x = x.reshape(gt, tp, C, gh // m, m, P, gw // m, m, P)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)        # gt, gh/m, gw/m, m, m, C, tp, P, P
    return x.reshape(gt * gh * gw, C * tp * P * P), np.array([[gt, gh, gw]])


# ------------------------------------------------------------------ window layout
class WindowLayout(NamedTuple):
    """Static layout of a set of images/videos in padded window order (numpy arrays).

    Slots run over images, temporal steps, windows (raster), merged tokens inside a window
    (raster), patches inside a merged token; windows at the right and bottom edges are padded.
    """

    merged: np.ndarray       # [S / unit] raster merged-token id of each merged slot, -1: pad
    patch: np.ndarray        # [S] pixel_values row of each slot (0 on padding)
    valid: np.ndarray        # [S] bool
    segments: np.ndarray     # [G, Lg] slots of each image temporal step (-1: padding)
    segment_pos: np.ndarray  # [S] index of each slot in segments.reshape(-1)
    hw: np.ndarray           # [S, 2] the slot's patch row and column (rotary positions)
    token_slot: np.ndarray   # [M] merged slot of each raster merged token (the inverse order)


def _patch_hw(t: int, h: int, w: int, merge: int) -> np.ndarray:
    """(row, column) [t*h*w, 2] of the patches of one grid in pixel_values row order."""
    rows = np.arange(h).reshape(h // merge, 1, merge, 1)
    cols = np.arange(w).reshape(1, w // merge, 1, merge)
    grid = np.stack(np.broadcast_arrays(rows, cols), axis=-1)     # h/m, w/m, m, m, 2
    return np.tile(grid.reshape(-1, 2), (t, 1))


def _window_ids(t: int, gh: int, gw: int, n: int, offset: int) -> np.ndarray:
    """Merged-token ids of one grid (t x gh x gw merged) in padded window order [t, slots]."""
    nh, nw = -(-gh // n), -(-gw // n)
    ids = np.full((t, nh * n, nw * n), -1)
    ids[:, :gh, :gw] = offset + np.arange(t * gh * gw).reshape(t, gh, gw)
    return ids.reshape(t, nh, n, nw, n).transpose(0, 1, 3, 2, 4).reshape(t, -1)


def _segments(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive runs of `lengths` [G] slots -> (their slots [G, Lg] padded with -1 to the
    longest, the position of each slot in the flattened rows [S])."""
    starts = np.cumsum(lengths) - lengths
    j = np.arange(lengths.max())
    segments = np.where(j < lengths[:, None], starts[:, None] + j, -1)        # G, Lg
    flat = segments.reshape(-1)
    segment_pos = np.empty(int(lengths.sum()), np.int64)
    segment_pos[flat[flat >= 0]] = np.nonzero(flat >= 0)[0]
    return segments, segment_pos


def window_layout(cfg: QwenVisionConfig, grid_thw) -> WindowLayout:
    """The `WindowLayout` of grids [n, 3] (t, h, w in patches; h, w multiples of merge)."""
    grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m, n, unit = cfg.merge, cfg.window, cfg.unit
    merged, lengths, hw = [], [], []
    offset = 0
    for t, h, w in grid_thw.tolist():
        if h % m or w % m:
            raise ValueError(f"grid {(t, h, w)}: h and w must be multiples of merge {m}")
        ids = _window_ids(t, h // m, w // m, n, offset)
        merged.append(ids.reshape(-1))
        lengths.append(np.full(t, ids.shape[1] * unit))
        hw.append(_patch_hw(t, h, w, m))
        offset += t * (h // m) * (w // m)
    merged, lengths = np.concatenate(merged), np.concatenate(lengths)
    patch = (np.maximum(merged, 0)[:, None] * unit + np.arange(unit)).reshape(-1)
    valid = np.repeat(merged >= 0, unit)
    token_slot = np.empty(offset, np.int64)
    token_slot[merged[merged >= 0]] = np.nonzero(merged >= 0)[0]
    segments, segment_pos = _segments(lengths)
    return WindowLayout(merged=merged, patch=patch, valid=valid, segments=segments,
                        segment_pos=segment_pos, hw=np.concatenate(hw)[patch],
                        token_slot=token_slot)


# ------------------------------------------------------------------ vision tower
def _window_attention(q, k, v, valid, window: int):
    """q, k, v [S, H, Dh], valid [S] -> [S, H, Dh]: attention inside each window of W slots,
    padding keys masked."""
    S, H, Dh = q.shape
    q, k, v = (x.reshape(S // window, window, H, Dh) for x in (q, k, v))   # S/W, W, H, Dh
    mask = valid.reshape(S // window, 1, 1, window)
    return attention(q, k, v, mask).reshape(S, H, Dh)


def _segment_attention(q, k, v, valid, segments, segment_pos):
    """q, k, v [S, H, Dh] -> [S, H, Dh]: each slot attends to the real slots of its own
    segment (one image temporal step); segments [G, Lg], segment_pos [S]: `WindowLayout`'s."""
    index = jnp.maximum(segments, 0)                                          # G, Lg
    keys = (segments >= 0) & valid[index]
    o = attention(q[index], k[index], v[index], keys[:, None, None, :])
    return o.reshape(-1, *q.shape[1:])[segment_pos]


class VisionMLP(nn.Module):
    """down(silu(gate(x)) * up(x)) with biases; kernels gate|up [D, F], down [F, D]."""

    hidden: int
    dtype: L.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        def dense(features, axes, name):
            return L.Dense(features, dtype=self.dtype, kernel_init=L.kernel_init(axes),
                           bias_init=L.zeros(axes[1:]), name=name)

        gate = dense(self.hidden, ("embed", "mlp"), "gate")(x)
        up = dense(self.hidden, ("embed", "mlp"), "up")(x)
        h = L.constrain(jax.nn.silu(gate) * up, ("length", "mlp"))
        return dense(x.shape[-1], ("mlp", "embed"), "down")(h)


class VisionBlock(nn.Module):
    """One vision block as a scan body: x = x + attn(norm1(x)); x = x + mlp(norm2(x)).

    Call: x [S, D], full (this block's `full_blocks` flag), angles [S, Dh], valid [S],
    segments (the layout's segments and segment_pos) -> (x, x when `collect` else None).
    Params: norm1, attn (query/key/value/out with biases), norm2, mlp (gate/up/down with
    biases).
    """

    cfg: QwenVisionConfig
    collect: bool = False

    def setup(self):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        self.norm1 = L.RMSNorm(cfg.rms_eps, dtype)
        self.attn = L.Attention(cfg.heads, cfg.heads, cfg.width // cfg.heads, cfg.width,
                                use_bias=True, dtype=dtype)
        self.norm2 = L.RMSNorm(cfg.rms_eps, dtype)
        self.mlp = VisionMLP(cfg.mlp_dim, dtype)

    def attention(self, x, full, angles, valid, segments):
        """x [S, D] -> [S, D]: segment attention when `full`, else window attention."""
        q, k, v = (y[0] for y in self.attn.qkv(x[None]))                # S, H|K, Dh
        q, k = L.rotate(q, angles), L.rotate(k, angles)
        o = jax.lax.cond(full, lambda: _segment_attention(q, k, v, valid, *segments),
                         lambda: _window_attention(q, k, v, valid, self.cfg.window_slots))
        return self.attn.output(o)

    def forward(self, x, full, angles, valid, segments):
        x = L.constrain(x, ("length", "embed"))
        x = x + self.attention(self.norm1(x), full, angles, valid, segments)
        x = x + self.mlp(self.norm2(x))
        return L.constrain(x, ("length", "embed"))

    def __call__(self, x, full, angles, valid, segments):
        forward = (nn.remat(VisionBlock.forward, prevent_cse=False) if self.cfg.remat
                   else VisionBlock.forward)
        x = forward(self, x, full, angles, valid, segments)
        return x, (x if self.collect else None)


class PatchMerger(nn.Module):
    """RMSNorm, then each merged token's unit x D patch features -> MLP (GELU) -> out_width."""

    cfg: QwenVisionConfig

    @nn.compact
    def __call__(self, x):
        """x [S, D] -> [S / unit, out_width]."""
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        h = L.RMSNorm(cfg.rms_eps, dtype, name="norm")(x)
        h = h.reshape(1, -1, cfg.unit * cfg.width)                 # 1, S / unit, unit D
        return L.MLP(cfg.unit * cfg.width, cfg.out_width, "gelu", dtype=dtype, name="mlp")(h)[0]


class VisionTower(nn.Module):
    """The Qwen2.5-VL vision tower on a `WindowLayout` (see the module docstring).

    Params: patch_embed [tp, P, P, C, D], blocks (scanned `VisionBlock`s), merger.
    Call: pixel_values [N, C*tp*P*P] and `layout_arrays` (patch, valid, hw, token_slot,
    segments, segment_pos) -> (embeds [M, out_width] in raster order, block outputs
    [depth, S, D] in window order when `collect`, else None).
    """

    cfg: QwenVisionConfig
    collect: bool = False

    def setup(self):
        cfg = self.cfg
        self.patch_embed = self.param(
            "patch_embed", L.kernel_init((None, None, None, None, "embed"), stddev=0.02),
            (cfg.temporal_patch, cfg.patch_size, cfg.patch_size, cfg.in_channels, cfg.width),
            jnp.float32)
        self.blocks = nn.scan(
            VisionBlock, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.depth,
            metadata_params={nn.PARTITION_NAME: None})(cfg, self.collect, name="blocks")
        self.merger = PatchMerger(cfg)

    def embed(self, pixel_values):
        """pixel_values [N, C*tp*P*P] -> patch embeddings [N, D] (the Conv3d)."""
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        x = pixel_values.astype(dtype).reshape(-1, cfg.in_channels, cfg.temporal_patch,
                                               cfg.patch_size, cfg.patch_size)
        return jnp.einsum("ncupq,upqcd->nd", x, self.patch_embed.astype(dtype))

    def __call__(self, pixel_values, patch, valid, hw, token_slot, segments, segment_pos):
        cfg = self.cfg
        x = jnp.where(valid[:, None], self.embed(pixel_values)[patch], 0)       # S, D
        angles = vision_angles(hw, cfg.width // cfg.heads)                      # S, Dh
        full = jnp.asarray(np.isin(np.arange(cfg.depth), cfg.full_blocks))     # depth
        x, blocks = self.blocks(x, full, angles, valid, (segments, segment_pos))
        return self.merger(x)[token_slot], blocks


def layout_arrays(layout: WindowLayout) -> tuple:
    """The `VisionTower` call arguments of a layout: patch, valid, hw, token_slot, segments,
    segment_pos."""
    return tuple(jnp.asarray(a) for a in (layout.patch, layout.valid, layout.hw,
                                          layout.token_slot, layout.segments, layout.segment_pos))


@functools.partial(jax.jit, static_argnames=("cfg", "collect"))
def _vision(params, cfg: QwenVisionConfig, collect: bool, pixel_values, *layout):
    return VisionTower(cfg, collect).apply({"params": params}, pixel_values, *layout)


def vision_embeds(params: dict, cfg: QwenVLConfig, pixel_values, grid_thw) -> jax.Array:
    """transformers' `model.visual(pixel_values, grid_thw)`: [N, C*tp*P*P] -> [M, out_width],
    merged tokens in raster order (t, h/merge, w/merge) of each grid in turn."""
    layout = window_layout(cfg.vision, grid_thw)
    embeds, _ = _vision(params["vision"], cfg.vision, False,
                        jnp.asarray(pixel_values), *layout_arrays(layout))
    return embeds


def vision_blocks(params: dict, cfg: QwenVLConfig, pixel_values, grid_thw) -> jax.Array:
    """Every block's output [depth, N, D], rows in transformers' window order (padding
    dropped): row j is patch row unit * window_index[j // unit] + j % unit."""
    layout = window_layout(cfg.vision, grid_thw)
    _, blocks = _vision(params["vision"], cfg.vision, True,
                        jnp.asarray(pixel_values), *layout_arrays(layout))
    return blocks[:, np.nonzero(layout.valid)[0]]


# ------------------------------------------------------------------ decoder
class QwenAttention(L.Attention):
    """Qwen2 attention projections: q/k/v with biases, the output projection without."""

    def setup(self):
        def proj(heads, name):
            return L.Projection((heads, self.head_dim), ("embed", "heads", "kv"),
                                use_bias=True, dtype=self.dtype, name=name)

        self.query = proj(self.heads, "query")
        self.key = proj(self.kv_heads, "key")
        self.value = proj(self.kv_heads, "value")
        self.out = L.Projection((self.width,), ("heads", "kv", "embed"), in_dims=2,
                                use_bias=False, dtype=self.dtype, name="out")


class QwenDecoderLayer(DecoderLayer):
    """`DecoderLayer` with Qwen2 attention; its `positions` argument carries the M-RoPE
    angles [B, L, Dh] (computed once per call by `QwenDecoder`)."""

    def setup(self):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        self.input_norm = L.RMSNorm(cfg.rms_eps, dtype)
        self.attn = QwenAttention(cfg.heads, cfg.kv_heads, cfg.dim_per_head, cfg.width,
                                  dtype=dtype)
        self.post_norm = L.RMSNorm(cfg.rms_eps, dtype)
        self.mlp = L.GatedMLP(cfg.mlp_dim, dtype=dtype)

    def attention(self, x, kv, angles, start, key_lengths, lora):
        q, k, v = self.attn.qkv(x)
        if lora is not None:
            q, v = adapt_with_lora(q, x, lora, "query", 0), adapt_with_lora(v, x, lora, "value", 1)
        q, k = L.rotate(q, angles), L.rotate(k, angles)
        if kv is None:
            o = attention(q, k, v, is_causal=True, key_lengths=key_lengths)
            return self.attn.output(o), None
        o, kv = cached_attention(q, k, v, kv, start)
        return self.attn.output(o), kv


class QwenDecoder(Decoder):
    """`Decoder` with `QwenDecoderLayer`s: positions are M-RoPE [3, B, L] (same params,
    cache and call otherwise)."""

    mrope_section: tuple[int, int, int]
    layer_class = QwenDecoderLayer

    def layer_positions(self, positions, B, Lq):
        """M-RoPE angles of positions [3, B, L] (the layers rotate by angles)."""
        positions = jnp.broadcast_to(positions, (3, B, Lq))
        return mrope_angles(positions, self.cfg.dim_per_head, self.mrope_section,
                            self.cfg.rope_theta)


# ------------------------------------------------------------------ positions
def _vision_positions(t: int, gh: int, gw: int, step: int) -> np.ndarray:
    """M-RoPE positions [3, t*gh*gw] of one merged grid, from 0: temporal t * step, row, col."""
    tt, hh, ww = np.meshgrid(np.arange(t) * step, np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)])


def _next_grid(cfg: QwenVLConfig, kind: int, images: list, videos: list):
    """The (grid, seconds per grid) of the next vision block of `kind`, or None for a
    vision_start followed by neither placeholder."""
    queue = {cfg.image_token_id: images, cfg.video_token_id: videos}.get(kind)
    if queue is None:
        return None
    if not queue:
        raise ValueError(f"more {'image' if kind == cfg.image_token_id else 'video'} blocks in "
                         "input_ids than grids given")
    return queue.pop(0)


def _row_positions(cfg: QwenVLConfig, ids: np.ndarray, images: list, videos: list
                   ) -> np.ndarray:
    """M-RoPE positions [3, L] of one prompt; `images`, `videos`: lists of (grid (t, h, w),
    seconds per grid), consumed in prompt order."""
    m = cfg.vision.merge
    parts, cursor, next_pos = [], 0, 0
    for s in np.nonzero(ids[:-1] == cfg.vision_start_token_id)[0]:
        grid = _next_grid(cfg, int(ids[s + 1]), images, videos)
        if grid is None:
            continue
        (t, h, w), seconds = grid
        text = s + 1 - cursor                                   # text through vision_start
        parts.append(np.broadcast_to(next_pos + np.arange(text), (3, text)))
        step = int(seconds) * cfg.vision.tokens_per_second      # transformers casts to int
        parts.append(next_pos + text + _vision_positions(t, h // m, w // m, step))
        next_pos = int(parts[-1].max()) + 1
        cursor = s + 1 + t * (h // m) * (w // m)
    rest = len(ids) - cursor
    parts.append(np.broadcast_to(next_pos + np.arange(rest), (3, rest)))
    return np.concatenate(parts, axis=1)


def _grids(grid_thw, seconds, default: float) -> list:
    """[(grid (t, h, w), seconds per grid)] of a grid_thw array (None: none); seconds None:
    `default` for every grid."""
    grid_thw = np.zeros((0, 3)) if grid_thw is None else grid_thw
    grids = [tuple(g) for g in np.asarray(grid_thw, np.int64).reshape(-1, 3).tolist()]
    seconds = [default] * len(grids) if seconds is None else np.asarray(seconds).tolist()
    return list(zip(grids, seconds))


def rope_index(cfg: QwenVLConfig, input_ids, image_grid_thw=None, video_grid_thw=None,
               second_per_grid_ts=None, attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """transformers' `get_rope_index`: input_ids [B, L] -> (position_ids [3, B, L],
    rope_deltas [B, 1]), numpy int64.

    Text counts 0, 1, 2, ... on all three axes; a vision block starts at s (the position
    after its vision_start) with temporal s + t * int(second_per_grid_t) * tokens_per_second
    (0 for images; second_per_grid_ts defaults to 1 per video), height s + row, width
    s + column on the merged grid; text after it continues from the largest position + 1.
    rope_deltas = max position + 1 - L: a token decoded at cache slot p gets position
    p + rope_deltas on every axis. With `attention_mask` [B, L] (1 = token, 0 = padding)
    each row counts its tokens only and its padding gets position 1, as transformers does.
    """
    ids = np.asarray(input_ids, np.int64)
    mask = _attention_mask(ids, attention_mask)
    images = _grids(image_grid_thw, None, 0.0)
    videos = _grids(video_grid_thw, second_per_grid_ts, 1.0)
    positions = np.ones((3,) + ids.shape, np.int64)
    for b, (row, keep) in enumerate(zip(ids, mask)):
        positions[:, b, keep] = _row_positions(cfg, row[keep], images, videos)
    deltas = positions.max(axis=(0, 2)) + 1 - ids.shape[1]                     # B
    return positions, deltas[:, None]


def _attention_mask(ids: np.ndarray, attention_mask) -> np.ndarray:
    """The mask [B, L] bool of the prompt's tokens (all of them when None); a ValueError for
    a mask of another shape, values other than 0 / 1, or a row without tokens."""
    if attention_mask is None:
        return np.ones(ids.shape, bool)
    mask = np.asarray(attention_mask)
    if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"attention_mask must be 0/1 of the input_ids' shape {ids.shape}, "
                         f"got shape {mask.shape}")
    if not mask.any(axis=1).all():
        raise ValueError(f"attention_mask rows {np.flatnonzero(~mask.any(axis=1)).tolist()} "
                         "attend to no token")
    return mask.astype(bool)


def _packed(cfg: QwenVLConfig, input_ids, attention_mask
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's tokens moved to its front in order, as the decoder's right padding wants:
    (ids [B, L] padded with the pad id, mask [B, L], lengths [B], columns [B, L]: the input
    column each packed token came from)."""
    ids = np.asarray(input_ids, np.int64)
    mask = _attention_mask(ids, attention_mask)
    order = np.argsort(~mask, axis=1, kind="stable")                # tokens first, in order
    lengths = mask.sum(axis=1)
    packed_mask = np.arange(ids.shape[1]) < lengths[:, None]
    packed = np.where(packed_mask, np.take_along_axis(ids, order, 1), cfg.text.pad_token_id)
    return packed, packed_mask, lengths, order


# ------------------------------------------------------------------ full model
def _scatter(embeds: jax.Array, ids: np.ndarray, token_id: int, features: jax.Array,
             what: str) -> jax.Array:
    """embeds [B, L, D] with the rows where ids == token_id replaced by features [n, D] in
    row-major order (transformers' masked_scatter)."""
    mask = ids == token_id                                                     # B, L
    if int(mask.sum()) != features.shape[0]:
        raise ValueError(f"{what} features and {what} tokens do not match: tokens "
                         f"{int(mask.sum())}, features {features.shape[0]}")
    index = np.maximum(np.cumsum(mask.reshape(-1)).reshape(mask.shape) - 1, 0)
    return jnp.where(mask[..., None], features.astype(embeds.dtype)[index], embeds)


def _decoder(cfg: QwenVLConfig) -> QwenDecoder:
    return QwenDecoder(cfg.text, cfg.mrope_section)


def input_embeds(params: dict, cfg: QwenVLConfig, input_ids, pixel_values=None,
                 image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None
                 ) -> jax.Array:
    """Token embeddings [B, L, D] with the vision tower's embeddings in place of the image
    and video placeholder tokens (in order)."""
    ids = np.asarray(input_ids)
    embeds = _decoder(cfg).apply({"params": params["text"]}, jnp.asarray(ids),
                                 method=QwenDecoder.embed)
    if pixel_values is not None:
        embeds = _scatter(embeds, ids, cfg.image_token_id,
                          vision_embeds(params, cfg, pixel_values, image_grid_thw), "image")
    if pixel_values_videos is not None:
        embeds = _scatter(embeds, ids, cfg.video_token_id,
                          vision_embeds(params, cfg, pixel_values_videos, video_grid_thw),
                          "video")
    return embeds


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(params, cfg: QwenVLConfig, embeds, positions, lengths):
    out, _ = _decoder(cfg).apply({"params": params}, embeds, positions, lengths=lengths)
    return out


def logits(params: dict, cfg: QwenVLConfig, input_ids, pixel_values=None, image_grid_thw=None,
           pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None,
           attention_mask=None) -> jax.Array:
    """transformers' `Qwen2_5_VLForConditionalGeneration(...).logits`: [B, L, V] float32 of a
    full causal pass over input_ids with the images/videos in place. With `attention_mask`
    [B, L] (padding on either side) the rows are packed to the front and run with their
    lengths; the logits of the tokens come back to their columns, padding columns hold 0."""
    ids, mask, lengths, columns = _packed(cfg, input_ids, attention_mask)
    positions, _ = rope_index(cfg, ids, image_grid_thw, video_grid_thw, second_per_grid_ts,
                              mask)
    embeds = input_embeds(params, cfg, ids, pixel_values, image_grid_thw,
                          pixel_values_videos, video_grid_thw)
    padded = not mask.all()
    out = _logits(params["text"], cfg, embeds, jnp.asarray(positions, jnp.int32),
                  jnp.asarray(lengths, jnp.int32) if padded else None)
    if not padded:      # nothing moved: no second [B, L, V] buffer
        return out
    rows = np.arange(len(ids))[:, None]
    return jnp.zeros_like(out).at[rows, columns].set(jnp.where(mask[..., None], out, 0.0))


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens"))
def _decode(params, cfg: QwenVLConfig, embeds, positions, lengths, deltas, max_new_tokens: int,
            rng, temperature):
    """Prefill the cache with the prompt (right-padded, `lengths` [B] tokens per row), then
    sample max_new_tokens tokens: [B, new]."""
    model, variables = _decoder(cfg), {"params": params}
    B, Lp = embeds.shape[:2]
    cache = init_cache(cfg.text, B, Lp + max_new_tokens)
    out, cache = model.apply(variables, embeds, positions, cache, lengths)
    eos = -1 if cfg.text.eos_token_id is None else cfg.text.eos_token_id

    def step(carry, i):
        cache, last, done = carry
        token = jnp.where(done, cfg.text.pad_token_id,
                          sample(last, jax.random.fold_in(rng, i), temperature))
        new = model.apply(variables, token[:, None], method=QwenDecoder.embed)
        position = jnp.broadcast_to(cache["lengths"][:, None] + deltas, (3, B, 1))
        out, cache = model.apply(variables, new, position, cache)
        return (cache, out[:, 0], done | (token == eos)), token

    carry = (cache, out[jnp.arange(B), lengths - 1], jnp.zeros((B,), bool))
    _, tokens = jax.lax.scan(step, carry, jnp.arange(max_new_tokens))
    return tokens.T


def generate(params: dict, cfg: QwenVLConfig, input_ids, pixel_values=None,
             image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
             second_per_grid_ts=None, max_new_tokens: int = 32, temperature: float = 0.0,
             rng: jax.Array | None = None, attention_mask=None) -> jax.Array:
    """transformers' `generate` (greedy by default, KV cache): the prompt input_ids [B, L]
    followed by max_new_tokens new ids, [B, L + max_new_tokens] int32; after a row's EOS
    its tokens are the pad id. A token decoded at cache slot p has M-RoPE position
    p + rope_deltas on every axis. With `attention_mask` [B, L] (a batch of prompts padded
    on either side) each row runs packed to the front, its new tokens following its own."""
    ids, mask, lengths, _ = _packed(cfg, input_ids, attention_mask)
    positions, deltas = rope_index(cfg, ids, image_grid_thw, video_grid_thw,
                                   second_per_grid_ts, mask)
    deltas = deltas + ids.shape[1] - lengths[:, None]     # the next slot of a row is its length
    embeds = input_embeds(params, cfg, ids, pixel_values, image_grid_thw,
                          pixel_values_videos, video_grid_thw)
    new = _decode(params["text"], cfg, embeds, jnp.asarray(positions, jnp.int32),
                  jnp.asarray(lengths, jnp.int32), jnp.asarray(deltas, jnp.int32),
                  max_new_tokens, jax.random.key(0) if rng is None else rng, temperature)
    return jnp.concatenate([jnp.asarray(input_ids, jnp.int32), new], axis=1)


# ------------------------------------------------------------------ loading
F32 = tables.F32


def _linear(ours: str, theirs: str) -> list[Rule]:
    """A PyTorch Linear with bias -> a Flax Dense."""
    return [Rule(f"{ours}/kernel", f"{theirs}.weight", tables.as_f32(transpose)),
            Rule(f"{ours}/bias", f"{theirs}.bias", F32)]


def _fused_qkv(ours: str, theirs: str, width: int, heads: int) -> list[Rule]:
    """The fused qkv Linear [3D, D] (rows: q, k, v; each heads x Dh) -> query/key/value
    kernels [D, H, Dh] and biases [H, Dh]."""
    rules = []
    for i, name in enumerate(("query", "key", "value")):
        def part(x, i=i):
            return np.asarray(x)[i * width:(i + 1) * width]

        rules += [Rule(f"{ours}/{name}/kernel", f"{theirs}.weight",
                       tables.as_f32(part, transpose, reshape(width, heads, width // heads))),
                  Rule(f"{ours}/{name}/bias", f"{theirs}.bias",
                       tables.as_f32(part, reshape(heads, width // heads)))]
    return rules


def _conv3d(x: np.ndarray) -> np.ndarray:
    """PyTorch Conv3d [D, C, tp, P, P] -> our patch kernel [tp, P, P, C, D]."""
    return np.ascontiguousarray(np.transpose(x, (2, 3, 4, 1, 0)))


def vision_rules(cfg: QwenVisionConfig, prefix: str = "visual.") -> list[Rule]:
    """`VisionTower` params <- Qwen2.5-VL `visual.*` keys."""
    block = f"{prefix}blocks.{{layer}}"
    D, H = cfg.width, cfg.heads
    rules = [Rule("patch_embed", f"{prefix}patch_embed.proj.weight", tables.as_f32(_conv3d)),
             Rule("blocks/norm1/scale", f"{block}.norm1.weight", F32),
             Rule("blocks/norm2/scale", f"{block}.norm2.weight", F32),
             Rule("blocks/attn/out/kernel", f"{block}.attn.proj.weight",
                  tables.as_f32(transpose, reshape(H, D // H, D))),
             Rule("blocks/attn/out/bias", f"{block}.attn.proj.bias", F32),
             Rule("merger/norm/scale", f"{prefix}merger.ln_q.weight", F32)]
    rules += _fused_qkv("blocks/attn", f"{block}.attn.qkv", D, H)
    for name in ("gate", "up", "down"):
        rules += _linear(f"blocks/mlp/{name}", f"{block}.mlp.{name}_proj")
    return (rules + _linear("merger/mlp/fc1", f"{prefix}merger.mlp.0")
            + _linear("merger/mlp/fc2", f"{prefix}merger.mlp.2"))


def text_rules(cfg: DecoderConfig, prefix: str = "model.",
               lm_head: str = "lm_head.weight") -> list[Rule]:
    """`QwenDecoder` params <- Qwen2 keys: the Llama table plus the q/k/v biases."""
    attn = f"{prefix}layers.{{layer}}.self_attn"
    H, K, Dh = cfg.heads, cfg.kv_heads, cfg.dim_per_head
    return tables.llama_rules(cfg, prefix=prefix, lm_head=lm_head) + [
        Rule("layers/attn/query/bias", f"{attn}.q_proj.bias", tables.as_f32(reshape(H, Dh))),
        Rule("layers/attn/key/bias", f"{attn}.k_proj.bias", tables.as_f32(reshape(K, Dh))),
        Rule("layers/attn/value/bias", f"{attn}.v_proj.bias", tables.as_f32(reshape(K, Dh)))]


def _first(x):
    return x[0] if isinstance(x, list) else x


def vision_config(hf: dict) -> QwenVisionConfig:
    """`QwenVisionConfig` from a config.json's `vision_config` (transformers' defaults)."""
    get = hf.get
    return QwenVisionConfig(
        width=get("hidden_size", 3584), depth=get("depth", 32), heads=get("num_heads", 16),
        mlp_dim=get("intermediate_size", 3420), patch_size=get("patch_size", 14),
        temporal_patch=get("temporal_patch_size", 2),
        in_channels=get("in_channels", get("in_chans", 3)), merge=get("spatial_merge_size", 2),
        out_width=get("out_hidden_size", 3584), window_size=get("window_size", 112),
        full_blocks=tuple(get("fullatt_block_indexes", (7, 15, 23, 31))),
        tokens_per_second=get("tokens_per_second", 4))


def config_from_hf(hf: dict, source: str = "config.json") -> QwenVLConfig:
    """`QwenVLConfig` from a Qwen2.5-VL config.json (text fields under `text_config`, or at
    the top level in older files); unsupported variants are CheckpointErrors."""
    if hf.get("model_type") != "qwen2_5_vl":
        raise CheckpointError(f"{source}: not a Qwen2.5-VL config (model_type "
                              f"{hf.get('model_type')!r})")
    text = hf.get("text_config") or hf
    vision = hf.get("vision_config") or {}
    rope = text.get("rope_scaling") or hf.get("rope_scaling") or {}
    if "mrope_section" not in rope:
        raise CheckpointError(f"{source}: rope_scaling has no mrope_section")
    if text.get("use_sliding_window"):
        raise CheckpointError(f"{source}: sliding-window attention is not supported")
    if vision.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: vision hidden_act must be silu")
    tie = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    decoder = tables.decoder_config(
        {**text, "rope_scaling": None}, source, tie_embeddings=bool(tie),
        eos_token_id=_first(hf.get("eos_token_id", text.get("eos_token_id"))),
        pad_token_id=hf.get("pad_token_id", text.get("pad_token_id")) or 0)
    try:
        return QwenVLConfig(
            vision=vision_config(vision), text=decoder,
            mrope_section=tuple(rope["mrope_section"]),
            image_token_id=hf.get("image_token_id", 151655),
            video_token_id=hf.get("video_token_id", 151656),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
            vision_end_token_id=hf.get("vision_end_token_id", 151653))
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err


def abstract_params(cfg: QwenVLConfig, boxed: bool = False):
    """`jax.ShapeDtypeStruct` params {"vision", "text"} without allocating (any scale); with
    `boxed`, the logical-axis boxes are kept (for sharding)."""
    v = cfg.vision

    def init():
        key = jax.random.key(0)
        layout = window_layout(v, [[1, v.merge, v.merge]])
        pixels = jnp.zeros((v.unit, v.in_channels * v.temporal_patch * v.patch_size ** 2))
        vision = VisionTower(v).init(key, pixels, *layout_arrays(layout))
        text = _decoder(cfg).init(key, jnp.zeros((1, 2, cfg.text.width)),
                                  jnp.zeros((3, 1, 2), jnp.int32))
        return {"vision": vision["params"], "text": text["params"]}

    tree = jax.eval_shape(init)
    return tree if boxed else nn.meta.unbox(tree)


def _prefixes(weights: dict) -> tuple[str, str, str]:
    """(vision, decoder, lm_head) key prefixes: saved checkpoints (`visual.`, `model.`) or
    transformers' in-memory layout (`model.visual.`, `model.language_model.`)."""
    if any(k.startswith("model.visual.") for k in weights):
        return "model.visual.", "model.language_model.", "lm_head.weight"
    return "visual.", "model.", "lm_head.weight"


def load(directory: str | Path) -> tuple[QwenVLConfig, dict]:
    """A Qwen2.5-VL checkpoint directory (safetensors, sharded or not) -> (cfg, params).

    Every key must be used and every param found, with the model's shapes: otherwise a
    `CheckpointError` lists the keys. Params are float32 whatever the checkpoint dtype.
    """
    source = str(directory)
    cfg = config_from_hf(read_config(directory), source)
    weights = read_pytorch_layout(directory)
    vis, lang, head = _prefixes(weights)
    if cfg.text.tie_embeddings:
        weights = {k: w for k, w in weights.items() if k != head}
    parts = {"vision": (vision_rules(cfg.vision, vis), cfg.vision.depth,
                        {k: w for k, w in weights.items() if k.startswith(vis)}),
             "text": (text_rules(cfg.text, lang, head), cfg.text.depth,
                      {k: w for k, w in weights.items() if not k.startswith(vis)})}
    params, problems = {}, []
    for name, (rules, depth, subset) in parts.items():
        try:
            params[name] = apply_rules(rules, subset, depth, tables.IGNORE, source)
        except CheckpointError as err:
            problems.append(str(err).removeprefix(f"{source}: "))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    check_shapes(params, abstract_params(cfg), source)
    return cfg, jax.tree.map(jnp.asarray, params)
