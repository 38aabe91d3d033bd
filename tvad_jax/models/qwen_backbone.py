"""Qwen2.5-VL as T-VAD's frozen backbone: the clip encoding the AHD and the feature cache
read, the class text features E_t from the decoder, and the decoder's M-RoPE positions of
T-VAD's prompts.

    bcfg = backbone_config(qwen_vl_cfg, image_size=(252, 448))    # or 336: square frames
    hidden, visual = encode(bcfg, params, frames)   # [B, I, T', 1+N, D_v], [B, S_v, D]
    feats = text_token_features(bcfg, params, ids, mask)                  # [S, L, D]
    positions, delta = prompt_positions(bcfg, visual_tokens=S_v, length=L)

Params: {"vision": the vision tower, "decoder": the Qwen2 decoder} (`qwen_vl`'s "text").

The AHD's patch grid: the AHD reads chosen vision blocks on the patch grid *before* the 2 x 2
merger (`feature_layers`, as in `VisionConfig`: 0 the patch embeddings, i the output of block
i; the default {1/32, 1/4, 1/2, 1} of depth is the paper's {1, 8, 16, 32} of 32). The blocks
work in window order; `encode` gathers each tubelet's (= temporal patch's) h x w patches back
into raster order (row-major; h, w = the frame's sides / patch_size), and puts in front of them the
mean of those patches as the leading "CLS-like" token the AHD's `patch_grid` drops: a
[T', 1 + h*w, D_v] layout like the ViT's, so that the cache, the AHD and every reader stay as
they are. The visual tokens P_V are the merger's output (raster order per tubelet, S_v =
T' x (h/2) x (w/2)).

Text features (eq. 2): Qwen2.5-VL has no text tower, so E_t is the decoder: the hidden states
of decoder layer `text_layer` (0 = the token embeddings; k = the output of layer k, through the
final RMSNorm so that every layer has the last one's scale), mean-pooled over each sentence's
tokens. The default is the middle layer (0.5 of depth: 14 of 28 for 7B): the token embeddings
carry no context ("X occurs" and "X not occurs" differ by one averaged-in word, the failure the
AHD's `center_text` note describes), and the last layers of a decoder-only LM are shaped for
next-token prediction; middle layers are the usual choice for sentence features of a decoder.

Decoder positions: the visual tokens enter as a video block, [<|vision_start|> P_V
<|vision_end|>] (the embeddings of those two ids), with M-RoPE positions from `qwen_vl.
rope_index` (one second per temporal grid step), after the text before it (the chat format's
system prompt and user-turn opening, counting 0, 1, ...; none in the plain format); everything
after it (anomaly prompts, text) counts on from the block's largest position + 1, so slot p
has position p + delta on all three axes, which is how generation continues.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models import qwen_vl
from tvad_jax.models.configs import DecoderConfig, resolve_layers
from tvad_jax.models.qwen_vl import QwenDecoder, QwenVisionConfig, QwenVLConfig, VisionTower

FAMILY = "qwen2_5_vl"


@dataclasses.dataclass(frozen=True)
class QwenVideoConfig(QwenVisionConfig):
    """The vision tower as T-VAD uses it: frames of `image_size` pixels, a side (square) or
    (height, width), each a multiple of patch_size x merge (the processor's `smart_resize`
    keeps a video's aspect: e.g. (476, 868) for 480 x 856 frames), and the blocks the AHD
    reads (`feature_layers`)."""

    image_size: int | tuple[int, int] = 336
    feature_layers: tuple[float | int, ...] = (1 / 32, 0.25, 0.5, 1.0)

    def __post_init__(self):
        super().__post_init__()
        unit = self.patch_size * self.merge
        if len(self.frame_size) != 2 or any(s < unit or s % unit for s in self.frame_size):
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size x "
                             f"merge = {unit} (a side, or (height, width) with both sides)")
        resolve_layers(self.feature_layers, self.depth)   # validates

    @property
    def tubelet(self) -> int:
        """Frames per temporal patch (T' = T / tubelet)."""
        return self.temporal_patch

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of T-VAD's frames."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w), the patch grid of a frame (the AHD's)."""
        return tuple(s // self.patch_size for s in self.frame_size)

    @property
    def num_patches(self) -> int:
        """N = h x w, patches per tubelet."""
        return self.grid[0] * self.grid[1]

    @property
    def tokens_per_tubelet(self) -> int:
        """Visual tokens per tubelet after the merger."""
        return self.num_patches // self.merge ** 2

    @property
    def layer_indices(self) -> tuple[int, ...]:
        return resolve_layers(self.feature_layers, self.depth)


@dataclasses.dataclass(frozen=True)
class QwenBackboneConfig:
    """A Qwen2.5-VL backbone: `vision` (with T-VAD's frame size and AHD blocks), `decoder`,
    M-RoPE sections, the vision special ids and `text_layer` (fraction of depth or index, as
    feature layers; see the module docstring)."""

    vision: QwenVideoConfig
    decoder: DecoderConfig
    mrope_section: tuple[int, int, int]
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    text_layer: float | int = 0.5

    def __post_init__(self):
        resolve_layers((self.text_layer,), self.decoder.depth)   # validates
        self.qwen()                                               # validates the sections

    @property
    def text_layer_index(self) -> int:
        return resolve_layers((self.text_layer,), self.decoder.depth)[0]

    @property
    def text_width(self) -> int:
        """D_t, the width of the class text features."""
        return self.decoder.width

    def qwen(self) -> QwenVLConfig:
        """The `qwen_vl` config of this backbone (for its functions)."""
        return QwenVLConfig(self.vision, self.decoder, self.mrope_section, self.image_token_id,
                            self.video_token_id, self.vision_start_token_id,
                            self.vision_end_token_id)


def backbone_config(cfg: QwenVLConfig, image_size: int | tuple[int, int] = 336,
                    text_layer: float | int = 0.5, **decoder_overrides) -> QwenBackboneConfig:
    """The T-VAD backbone config of a Qwen2.5-VL config."""
    vision = QwenVideoConfig(**dataclasses.asdict(cfg.vision), image_size=image_size)
    decoder = dataclasses.replace(cfg.text, **decoder_overrides)
    return QwenBackboneConfig(vision, decoder, tuple(cfg.mrope_section), cfg.image_token_id,
                              cfg.video_token_id, cfg.vision_start_token_id,
                              cfg.vision_end_token_id, text_layer)


def config_from_dict(data: dict) -> QwenBackboneConfig:
    """Inverse of `dataclasses.asdict` on a `QwenBackboneConfig` (JSON lists -> tuples)."""
    def tuples(d: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    fields = tuples(data)
    fields["vision"] = QwenVideoConfig(**tuples(data["vision"]))
    fields["decoder"] = DecoderConfig(**tuples(data["decoder"]))
    return QwenBackboneConfig(**fields)


def decoder_module(bcfg: QwenBackboneConfig, decoder: DecoderConfig | None = None
                   ) -> QwenDecoder:
    """The Qwen2 decoder (of `decoder`, default the backbone's own config)."""
    return QwenDecoder(decoder or bcfg.decoder, bcfg.mrope_section)


def abstract_params(bcfg: QwenBackboneConfig, boxed: bool = False) -> dict:
    """ShapeDtypeStruct params {"vision", "decoder"} (any scale, nothing allocated; `boxed`
    keeps the logical-axis boxes)."""
    tree = qwen_vl.abstract_params(bcfg.qwen(), boxed)
    return {"vision": tree["vision"], "decoder": tree["text"]}


# ------------------------------------------------------------------ clip encoding
def _pixel_values(v: QwenVideoConfig, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] -> pixel_values [B * T' * h * w, C*tp*P*P] in the processor's
    layout (`qwen_vl.patchify` per clip, in jnp)."""
    B, T, H, W, C = frames.shape
    tp, P, m = v.temporal_patch, v.patch_size, v.merge
    x = frames.reshape(B, T // tp, tp, H // P // m, m, P, W // P // m, m, P, C)
    x = x.transpose(0, 1, 3, 6, 4, 7, 9, 2, 5, 8)      # B, T', h/m, w/m, m, m, C, tp, P, P
    return x.reshape(-1, C * tp * P * P)


def raster_slots(v: QwenVideoConfig, layout: qwen_vl.WindowLayout, clips: int) -> np.ndarray:
    """[clips * T' * h * w] the window-layout slot of every patch in raster order (clip,
    tubelet, row, column); pixel_values rows run over 2 x 2 merge blocks first."""
    (h, w), m = v.grid, v.merge
    r, c = np.arange(h)[:, None], np.arange(w)[None, :]
    within = ((r // m) * (w // m) + c // m) * m * m + (r % m) * m + c % m        # h, w
    steps = len(layout.patch[layout.valid]) // (h * w)                           # clips * T'
    rows = (np.arange(steps)[:, None, None] * h * w + within).reshape(-1)
    slots = np.nonzero(layout.valid)[0]
    slot_of_row = np.empty(len(slots), np.int64)
    slot_of_row[layout.patch[slots]] = slots
    return slot_of_row[rows]


def encode(bcfg: QwenBackboneConfig, params: dict, frames: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
    """Normalised frames [B, T, H, W, 3] ((H, W) = frame_size, T a multiple of tubelet) ->
    (hidden [B, I, T', 1+N, D_v]: the AHD's blocks on the raster patch grid after a mean
    token, visual [B, S_v, D]: the merger's tokens), one vision-tower pass for both."""
    v = bcfg.vision
    B, T, H, W, _ = frames.shape
    if (H, W) != v.frame_size or T % v.tubelet:
        raise ValueError(f"frames {frames.shape}: expected [B, T, {v.frame_size[0]}, "
                         f"{v.frame_size[1]}, 3] with T a multiple of {v.tubelet}")
    steps = T // v.tubelet
    layout = qwen_vl.window_layout(v, [[steps, *v.grid]] * B)
    pixels = _pixel_values(v, frames.astype(jnp.float32))
    tower = VisionTower(v, collect=True)
    variables = {"params": params["vision"]}
    embeds, blocks = tower.apply(variables, pixels, *qwen_vl.layout_arrays(layout))
    states = blocks                                                   # depth, S, D_v
    if 0 in v.layer_indices:
        patches = tower.apply(variables, pixels, method=VisionTower.embed)[layout.patch]
        states = jnp.concatenate([patches[None], blocks])
    first = 0 if 0 in v.layer_indices else 1
    picked = states[np.asarray(v.layer_indices) - first][:, raster_slots(v, layout, B)]
    picked = picked.reshape(len(v.layer_indices), B, steps, v.num_patches, v.width)
    picked = picked.transpose(1, 0, 2, 3, 4)                          # B, I, T', N, D_v
    hidden = jnp.concatenate([picked.mean(axis=3, keepdims=True), picked], axis=3)
    return hidden, embeds.reshape(B, steps * v.tokens_per_tubelet, -1)


# ------------------------------------------------------------------ text side
def tokenize(bcfg: QwenBackboneConfig, tokenizer, sentences: list[str]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(ids [S, L], mask [S, L]) of sentences for `text_token_features`: each sentence's own
    tokens (no special tokens), right-padded to the longest."""
    rows = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]
    length = max(map(len, rows))
    ids = np.full((len(rows), length), bcfg.decoder.pad_token_id, np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    return ids, np.arange(length)[None] < np.asarray([len(r) for r in rows])[:, None]


def text_token_features(bcfg: QwenBackboneConfig, params: dict, ids: jax.Array,
                        mask: jax.Array) -> jax.Array:
    """Token features [S, L, D] of the decoder's layer `text_layer` (see the module docstring;
    causal, so right padding leaves the real tokens as they are)."""
    k = bcfg.text_layer_index
    dec = decoder_module(bcfg)
    embeds = dec.apply({"params": params["decoder"]}, ids, method=QwenDecoder.embed)
    if k == 0:
        return embeds
    cfg = dataclasses.replace(bcfg.decoder, depth=k)
    layers = jax.tree.map(lambda x: x[:k], params["decoder"]["layers"])
    h, _ = decoder_module(bcfg, cfg).apply(
        {"params": dict(params["decoder"], layers=layers)}, embeds,
        jnp.arange(ids.shape[1])[None], method=QwenDecoder.features)
    return h


# ------------------------------------------------------------------ decoder prompts
def visual_block(bcfg: QwenBackboneConfig, decoder_params, visual: jax.Array) -> jax.Array:
    """visual [B, S_v, D] -> [B, S_v + 2, D] between the vision_start / vision_end
    embeddings."""
    ids = jnp.asarray([[bcfg.vision_start_token_id, bcfg.vision_end_token_id]])
    ends = decoder_module(bcfg).apply({"params": decoder_params}, ids, method=QwenDecoder.embed)
    ends = jnp.broadcast_to(ends, (visual.shape[0],) + ends.shape[1:]).astype(visual.dtype)
    return jnp.concatenate([ends[:, :1], visual, ends[:, 1:]], axis=1)


def prompt_positions(bcfg: QwenBackboneConfig, visual_tokens: int, length: int,
                     prefix: int = 0) -> tuple[np.ndarray, int]:
    """M-RoPE positions [3, 1, length] of a prompt that opens with `prefix` text ids, then
    `visual_block` of `visual_tokens` tokens, and its delta (slot p >= length has position
    p + delta)."""
    v = bcfg.vision
    steps, rest = divmod(visual_tokens, v.tokens_per_tubelet)
    if rest or length < prefix + visual_tokens + 2:
        raise ValueError(f"{visual_tokens} visual tokens are not whole tubelets of "
                         f"{v.tokens_per_tubelet}, or do not fit {length} after {prefix} ids")
    ids = np.zeros((1, length), np.int64)           # text ids: any but the vision block's
    end = prefix + visual_tokens + 1
    ids[0, prefix], ids[0, end] = bcfg.vision_start_token_id, bcfg.vision_end_token_id
    ids[0, prefix + 1:end] = bcfg.video_token_id
    positions, deltas = qwen_vl.rope_index(bcfg.qwen(), ids,
                                           video_grid_thw=[[steps, *v.grid]])
    return positions.astype(np.int32), int(deltas[0, 0])
