"""Configs of the backbone towers: frozen typed dataclasses and named constructors.

    VisionConfig    video ViT (CLIP vision architecture, 2-frame tubelets)
    TextConfig      CLIP text tower
    DecoderConfig   Llama-family causal decoder
    BackboneConfig  the composite (vision, text, decoder, LLaVA projector)

Named configs: `clip_vit_l14_336()` (CLIP ViT-L/14-336, vision + text), `llama_7b()`
(Llama-2 7B / Vicuna-7B-v1.5), `llava15_7b()` (LLaVA-1.5-7B layout plus the CLIP text tower the
paper uses as E_t), `small_backbone()` (a CPU-sized backbone for benchmarks), and `tiny_*()`
for tests. Real-scale configs are for `jax.eval_shape` planning here (`count_params`), and for
loading real checkpoints elsewhere.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_tanh", "silu")
# DecoderConfig.remat_policy -> the jax.checkpoint policy of a rematerialized layer
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_saveable}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Video ViT with the CLIP vision architecture (pre-LN blocks, CLS token, pre/post LN).

    Attributes:
      width, depth, heads, mlp_dim: D, number of layers, H, MLP hidden size.
      patch_size, image_size: square patches P of square frames; N = (image_size / P)^2.
      tubelet: frames merged per token (temporal kernel and stride of the patch embedding); T
        must be a multiple of it and T' = T / tubelet.
      max_frames: longest clip; the learnable temporal embedding has max_frames // tubelet rows.
      feature_layers: hidden states `VisionTransformer` returns in `hidden`. A float in (0, 1]
        is a fraction of depth (rounded half up, at least layer 1); an int is a layer index as
        in CLIP's `hidden_states`: 0 the embeddings after pre-LN, i the output of layer i
        (1-based), negative counts from the end (-1 the last layer). The default is the paper's
        {1, 8, 16, 32} of 32 as fractions.
      attention: "frame": the 1+N tokens of each tubelet attend within the tubelet (what an
        image-trained CLIP expects); "joint": all T' x (1+N) tokens attend to each other.
      stem: how pixels become patch tokens. "tubelet": one linear map of each (tubelet, P, P)
        block (CLIP's and Qwen's patch embedding); "conv": log2(P) 3x3 stride-2 convolutions
        (GELU between them) on each frame and its difference to the previous frame, then the
        tubelet's frames concatenated and mapped to D (early convolutions: a small tower
        trained from scratch learns local attributes and motion much sooner; P a power of 2).
      motion_spans: the "conv" stem's differences: each frame minus the frame `s` frames
        earlier in the clip, for each s (the clip's first frame where that is before it).
        (1,) is backbone v3-v5's; a longer span makes slow motion visible inside one patch
        (a walker moves ~0.4 px per frame at 96 px, a runner 1-2 px).
      activation: MLP activation ("quick_gelu" for OpenAI CLIP, "gelu" exact erf GELU).
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype, "float32" or "bfloat16" (params are always float32).
      remat: rematerialize each layer in the backward pass.
    """

    width: int = 192
    depth: int = 6
    heads: int = 3
    mlp_dim: int = 768
    patch_size: int = 8
    image_size: int = 96
    tubelet: int = 2
    max_frames: int = 64
    feature_layers: tuple[float | int, ...] = (1 / 32, 0.25, 0.5, 1.0)
    attention: str = "frame"
    stem: str = "tubelet"
    motion_spans: tuple[int, ...] = (1,)
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        _check(self.stem in ("tubelet", "conv"), f"stem must be 'tubelet' or 'conv', got "
               f"{self.stem!r}")
        _check(self.stem != "conv" or (self.patch_size >= 2
                                       and self.patch_size & (self.patch_size - 1) == 0),
               f"stem 'conv' needs a power-of-2 patch_size, got {self.patch_size}")
        _check(len(self.motion_spans) > 0 and all(
                   isinstance(s, int) and not isinstance(s, bool) and s >= 1
                   for s in self.motion_spans),
               f"motion_spans must be positive frame counts, got {self.motion_spans!r}")
        _check(self.stem == "conv" or self.motion_spans == (1,),
               f"motion_spans {self.motion_spans!r} needs stem 'conv'")
        _check(self.width % self.heads == 0, f"width {self.width} not divisible by heads "
               f"{self.heads}")
        _check(self.image_size % self.patch_size == 0,
               f"image_size {self.image_size} not divisible by patch_size {self.patch_size}")
        _check(self.attention in ("frame", "joint"), f"attention must be 'frame' or 'joint', "
               f"got {self.attention!r}")
        _check(self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}")
        _check(self.dtype in DTYPES, f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        _check(self.max_frames % self.tubelet == 0, "max_frames must be a multiple of tubelet")
        resolve_layers(self.feature_layers, self.depth)  # validates

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames it takes (square)."""
        return (self.image_size, self.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w), the patch grid of a frame."""
        side = self.image_size // self.patch_size
        return (side, side)

    @property
    def num_patches(self) -> int:
        """N, patches per frame."""
        return self.grid[0] * self.grid[1]

    @property
    def max_tubelets(self) -> int:
        return self.max_frames // self.tubelet

    @property
    def layer_indices(self) -> tuple[int, ...]:
        """`feature_layers` as hidden-state indices in [0, depth]."""
        return resolve_layers(self.feature_layers, self.depth)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """CLIP text tower (causal pre-LN transformer, final LN).

    Attributes:
      vocab_size, width, depth, heads, mlp_dim: as usual; max_length: position embeddings L_max.
      eos_token_id: the token whose features are `pooled` (first occurrence in each row).
      pad_token_id: the id tokenizers pad with (documentation for callers; padding is given to
        the model by the attention mask).
      pool: "eos" (features at the first `eos_token_id`) or "argmax" (at the largest token id:
        CLIP's legacy rule, which Hugging Face applies when a config says eos_token_id == 2).
      activation, layer_norm_eps, dtype, remat: as in `VisionConfig`.
    """

    vocab_size: int = 49408
    width: int = 512
    depth: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    max_length: int = 77
    eos_token_id: int = 49407
    pad_token_id: int = 0
    pool: str = "eos"
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        _check(self.width % self.heads == 0, f"width {self.width} not divisible by heads "
               f"{self.heads}")
        _check(self.pool in ("eos", "argmax"), f"pool must be 'eos' or 'argmax', got {self.pool!r}")
        _check(self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}")
        _check(self.dtype in DTYPES, f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Llama-family decoder (RMSNorm, RoPE, SwiGLU MLP, grouped-query attention).

    Attributes:
      vocab_size, width, depth, heads, mlp_dim: V, D, layers, query heads H, SwiGLU hidden size.
      kv_heads: key/value heads (GQA when < heads; heads must be a multiple).
      head_dim: per-head size; None means width // heads.
      rope_theta: RoPE base; rms_eps: RMSNorm epsilon.
      max_length: longest sequence the model was trained for (default cache length).
      tie_embeddings: logits use the token embedding matrix (no separate lm_head).
      bos_token_id, eos_token_id, pad_token_id: special tokens (eos ends `generate`; pad fills
        the tokens after it).
      dtype, remat: as in `VisionConfig`.
      remat_policy: what a rematerialized layer keeps for the backward pass: "full" nothing
        but its input (its whole forward runs again), "dots" the outputs of its matrix
        products (`jax.checkpoint_policies.dots_saveable`: only the elementwise work runs
        again, for more memory). Used only with `remat`.
    """

    vocab_size: int = 32000
    width: int = 4096
    depth: int = 32
    heads: int = 32
    kv_heads: int = 32
    mlp_dim: int = 11008
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_length: int = 4096
    tie_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int | None = 2
    pad_token_id: int = 0
    dtype: str = "float32"
    remat: bool = False
    remat_policy: str = "full"

    def __post_init__(self):
        _check(self.heads % self.kv_heads == 0, f"heads {self.heads} not a multiple of "
               f"kv_heads {self.kv_heads}")
        _check(self.head_dim is not None or self.width % self.heads == 0,
               f"width {self.width} not divisible by heads {self.heads}")
        _check(self.dtype in DTYPES, f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        _check(self.remat_policy in REMAT_POLICIES, f"remat_policy must be one of "
               f"{tuple(REMAT_POLICIES)}, got {self.remat_policy!r}")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.width // self.heads


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """The frozen LVLM backbone: vision encoder E_v, text encoder E_t, decoder D_l, projector.

    Any tower may be None (a CLIP checkpoint has no decoder, a LLaVA one no text tower).

    Attributes:
      projector_dim: hidden size of the LLaVA projector MLP (vision width -> projector_dim ->
        decoder width); LLaVA-1.5 uses the decoder width. None: no projector.
      embed_dim: CLIP's joint image-text embedding size (visual/text projections); None: none.
      vision_feature_layer: the ViT hidden state the projector reads (index as in
        `VisionConfig.feature_layers`, ints only); LLaVA-1.5 uses -2, the penultimate layer.
      vision_feature_select: "patch" drops the CLS tokens before projecting (LLaVA's
        "default"), "full" keeps them.
      projector_activation: "gelu" (exact, LLaVA) or another name of `ACTIVATIONS`.
      token_pool: average-pool the patch grid by this factor per side before projecting
        (1 = every patch is a token, as LLaVA; 2 = 2 x 2 patches per token, the token count of
        Qwen2-VL's merger), with vision_feature_select "patch".
    """

    vision: VisionConfig | None = None
    text: TextConfig | None = None
    decoder: DecoderConfig | None = None
    projector_dim: int | None = None
    embed_dim: int | None = None
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    projector_activation: str = "gelu"
    token_pool: int = 1

    def __post_init__(self):
        _check(self.vision_feature_select in ("patch", "full"),
               f"vision_feature_select must be 'patch' or 'full', got "
               f"{self.vision_feature_select!r}")
        _check(self.projector_activation in ACTIVATIONS,
               f"unknown activation {self.projector_activation!r}")
        if self.projector_dim is not None:
            _check(self.vision is not None and self.decoder is not None,
                   "a projector needs both a vision tower and a decoder")
        if self.vision is not None:
            resolve_layers((self.vision_feature_layer,), self.vision.depth)
            grid = self.vision.grid[0]
            _check(self.token_pool == 1 or (self.vision_feature_select == "patch" and
                                            grid % self.token_pool == 0),
                   f"token_pool {self.token_pool} needs vision_feature_select 'patch' and "
                   f"must divide the {grid} x {grid} patch grid")


def resolve_layers(layers: tuple[float | int, ...], depth: int) -> tuple[int, ...]:
    """Hidden-state indices in [0, depth] of `layers` (fractions of depth or indices)."""
    out = []
    for layer in layers:
        if isinstance(layer, (bool, np.bool_)):
            raise ValueError(f"feature layer {layer!r} is neither a fraction nor an index")
        if isinstance(layer, (float, np.floating)):
            _check(0 < layer <= 1, f"fractional feature layer {layer} not in (0, 1]")
            out.append(max(1, min(depth, math.floor(layer * depth + 0.5))))
        elif isinstance(layer, (int, np.integer)):
            index = int(layer) + depth + 1 if layer < 0 else int(layer)
            _check(0 <= index <= depth, f"feature layer {layer} out of range for depth {depth}")
            out.append(index)
        else:
            raise ValueError(f"feature layer {layer!r} is neither a fraction nor an index")
    return tuple(out)


def dtype_of(name: str) -> Any:
    return DTYPES[name]


def count_params(tree: Any) -> int:
    """Number of parameters in a params tree (arrays, ShapeDtypeStructs or boxed params)."""

    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def param_bytes(tree: Any) -> int:

    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(nn.meta.unbox(tree))))


# ------------------------------------------------------------------ named configs
def clip_vit_l14_336_vision(**overrides) -> VisionConfig:
    """OpenAI CLIP ViT-L/14 at 336 px (the vision tower of LLaVA-1.5): 24 layers, D=1024."""
    return dataclasses.replace(VisionConfig(
        width=1024, depth=24, heads=16, mlp_dim=4096, patch_size=14, image_size=336,
        activation="quick_gelu", layer_norm_eps=1e-5), **overrides)


def clip_text_l14(**overrides) -> TextConfig:
    """The text tower of CLIP ViT-L/14 (-336): 12 layers, D=768."""
    return dataclasses.replace(TextConfig(
        vocab_size=49408, width=768, depth=12, heads=12, mlp_dim=3072, max_length=77,
        eos_token_id=49407, pad_token_id=49407, pool="eos"), **overrides)


def clip_vit_l14_336(**vision_overrides) -> BackboneConfig:
    """openai/clip-vit-large-patch14-336: vision + text towers, 768-d joint embedding."""
    return BackboneConfig(vision=clip_vit_l14_336_vision(**vision_overrides),
                          text=clip_text_l14(), embed_dim=768)


def llama_7b(**overrides) -> DecoderConfig:
    """Llama-2 7B (the architecture of Vicuna-7B-v1.5): 32 layers, D=4096, 32 heads."""
    return dataclasses.replace(DecoderConfig(
        vocab_size=32000, width=4096, depth=32, heads=32, kv_heads=32, mlp_dim=11008,
        rope_theta=10000.0, rms_eps=1e-5, max_length=4096), **overrides)


def llava15_7b(**vision_overrides) -> BackboneConfig:
    """LLaVA-1.5-7B (llava-hf layout: vocab 32064 with <image> and <pad>) plus CLIP ViT-L/14's
    text tower as the paper's text encoder E_t (a LLaVA checkpoint has none: load it from the
    CLIP checkpoint)."""
    return BackboneConfig(vision=clip_vit_l14_336_vision(**vision_overrides),
                          text=clip_text_l14(), decoder=llama_7b(vocab_size=32064),
                          projector_dim=4096, embed_dim=768, vision_feature_layer=-2)


def small_backbone(**vision_overrides) -> BackboneConfig:
    """A CPU-sized backbone for benchmarks: ViT 192 x 6 on 96 px frames with 8 px patches,
    text 128 x 4, decoder 256 x 4 with a 2048-token vocabulary."""
    vision = dataclasses.replace(VisionConfig(width=192, depth=6, heads=3, mlp_dim=768,
                                              patch_size=8, image_size=96), **vision_overrides)
    text = TextConfig(vocab_size=2048, width=128, depth=4, heads=4, mlp_dim=512, max_length=32,
                      eos_token_id=2, pool="eos")
    decoder = DecoderConfig(vocab_size=2048, width=256, depth=4, heads=4, kv_heads=4,
                            mlp_dim=688, max_length=1024)
    return BackboneConfig(vision=vision, text=text, decoder=decoder, projector_dim=256,
                          embed_dim=128)


def default_backbone(vocab_size: int = 1024, image_size: int = 96) -> BackboneConfig:
    """The shipped default, sized to pretrain on 2 CPU cores: ViT 128 x 4 with joint
    space-time attention on 96 px frames and 8 px patches (12 x 12 per tubelet: a person
    spans about one patch across and two down) from the convolutional stem over frames and
    their differences (backbone v3), 3 x 3-pooled visual tokens (16 per tubelet),
    text 128 x 3 (48 tokens), decoder 192 x 3; token ids of the benchmark's BPE tokenizer
    (`tvad_jax.models.tokenizer`: pad 0, bos 1, eos 2)."""
    vision = VisionConfig(width=128, depth=4, heads=4, mlp_dim=512, patch_size=8,
                          image_size=image_size, max_frames=16,
                          feature_layers=(0.25, 0.5, 0.75, 1.0), attention="joint",
                          stem="conv")
    text = TextConfig(vocab_size=vocab_size, width=128, depth=3, heads=4, mlp_dim=512,
                      max_length=48, eos_token_id=2, pad_token_id=0, pool="eos")
    decoder = DecoderConfig(vocab_size=vocab_size, width=192, depth=3, heads=4, kv_heads=4,
                            mlp_dim=512, max_length=512, bos_token_id=1, eos_token_id=2,
                            pad_token_id=0)
    return BackboneConfig(vision=vision, text=text, decoder=decoder, projector_dim=192,
                          embed_dim=128, token_pool=3)


def tiny_vision(**overrides) -> VisionConfig:
    return dataclasses.replace(VisionConfig(
        width=32, depth=2, heads=4, mlp_dim=64, patch_size=8, image_size=32, max_frames=8,
        feature_layers=(0, 1, 2)), **overrides)


def tiny_text(**overrides) -> TextConfig:
    return dataclasses.replace(TextConfig(
        vocab_size=99, width=32, depth=2, heads=4, mlp_dim=64, max_length=16, eos_token_id=98,
        pad_token_id=0), **overrides)


def tiny_decoder(**overrides) -> DecoderConfig:
    return dataclasses.replace(DecoderConfig(
        vocab_size=101, width=32, depth=2, heads=4, kv_heads=2, mlp_dim=64, max_length=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0), **overrides)


def tiny_backbone(**overrides) -> BackboneConfig:
    return dataclasses.replace(BackboneConfig(
        vision=tiny_vision(), text=tiny_text(), decoder=tiny_decoder(), projector_dim=32,
        embed_dim=16, vision_feature_layer=-2), **overrides)
