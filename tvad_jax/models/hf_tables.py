"""Hugging Face key tables and config translation for CLIP, Llama and LLaVA-1.5 checkpoints.

Each table is a list of `convert.Rule`s: our params path <- their key (PyTorch layout), with a
hook. Our paths are relative to the tower (`VisionTransformer`, `TextTransformer`, `Decoder`,
projector MLP); `prefixed` puts them under a parent path. `{layer}` keys are stacked on a
leading axis, which is how our `nn.scan`ned layers store params.

PyTorch Linear weights are [out, in]; ours are Flax kernels [in, out] with attention heads
split out: query/key/value [D, H, Dh], out [H, Dh, D].

Architectures (read from config.json `model_type`, else `architectures`):
  clip               CLIPModel: vision_model.*, text_model.*, visual_projection.weight,
                     text_projection.weight, logit_scale
  clip_vision_model  CLIPVisionModel(WithProjection): vision_model.* (+ visual_projection)
  clip_text_model    CLIPTextModel(WithProjection): text_model.* (+ text_projection)
  llama              LlamaForCausalLM: model.*, lm_head.weight
  llava              LlavaForConditionalGeneration, classic layout (vision_tower.*,
                     multi_modal_projector.*, language_model.model.*, language_model.lm_head)
                     or the transformers >= 4.52 layout (model.vision_tower.*,
                     model.multi_modal_projector.*, model.language_model.*, lm_head.weight)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tvad_jax.models.configs import (ACTIVATIONS, BackboneConfig, DecoderConfig, TextConfig,
                                     VisionConfig)
from tvad_jax.models.convert import (CheckpointError, Rule, astype, chain, conv_to_hwio, inflate,
                                     reshape, transpose)

# Buffers that PyTorch checkpoints may carry and we do not need.
IGNORE = (r"(^|\.)position_ids$", r"rotary_emb\.inv_freq$", r"num_batches_tracked$")

F32 = astype(np.float32)

_HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh",
           "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}


def as_f32(*hooks):
    return chain(*hooks, F32)


def prefixed(rules: list[Rule], ours: str) -> list[Rule]:
    """The same rules with our paths under `ours` (e.g. "vision")."""
    return [dataclasses.replace(r, ours=f"{ours}/{r.ours}") for r in rules]


# ------------------------------------------------------------------ tables
def _attention_rules(ours: str, theirs: str, names: tuple[str, str, str, str], D: int,
                     H: int, K: int, Dh: int, bias: bool) -> list[Rule]:
    q, k, v, o = names

    def rule(ours_name, their_name, *shape):
        return Rule(f"{ours}/{ours_name}/kernel", f"{theirs}.{their_name}.weight",
                    as_f32(transpose, reshape(*shape)))

    rules = [rule("query", q, D, H, Dh), rule("key", k, D, K, Dh), rule("value", v, D, K, Dh),
             rule("out", o, H, Dh, D)]
    if bias:
        rules += [Rule(f"{ours}/query/bias", f"{theirs}.{q}.bias", as_f32(reshape(H, Dh))),
                  Rule(f"{ours}/key/bias", f"{theirs}.{k}.bias", as_f32(reshape(K, Dh))),
                  Rule(f"{ours}/value/bias", f"{theirs}.{v}.bias", as_f32(reshape(K, Dh))),
                  Rule(f"{ours}/out/bias", f"{theirs}.{o}.bias", F32)]
    return rules


def _ln(ours: str, theirs: str) -> list[Rule]:
    return [Rule(f"{ours}/scale", f"{theirs}.weight", F32),
            Rule(f"{ours}/bias", f"{theirs}.bias", F32)]


def _dense(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{ours}/kernel", f"{theirs}.weight", as_f32(transpose))]
    if bias:
        rules.append(Rule(f"{ours}/bias", f"{theirs}.bias", F32))
    return rules


def _clip_encoder_rules(prefix: str, width: int, heads: int) -> list[Rule]:
    layer = f"{prefix}encoder.layers.{{layer}}"
    Dh = width // heads
    return (_ln("layers/ln1", f"{layer}.layer_norm1")
            + _attention_rules("layers/attn", f"{layer}.self_attn",
                               ("q_proj", "k_proj", "v_proj", "out_proj"),
                               width, heads, heads, Dh, bias=True)
            + _ln("layers/ln2", f"{layer}.layer_norm2")
            + _dense("layers/mlp/fc1", f"{layer}.mlp.fc1")
            + _dense("layers/mlp/fc2", f"{layer}.mlp.fc2"))


def clip_vision_rules(cfg: VisionConfig, prefix: str = "vision_model.",
                      projection: str | None = None) -> list[Rule]:
    """`VisionTransformer` params <- CLIP vision keys. The 2-D patch kernel is inflated over
    `cfg.tubelet` frames; `time_embed` is not in CLIP checkpoints (the loader adds zeros).
    `projection`: the key of the visual projection (e.g. "visual_projection.weight")."""
    rules = [Rule("patch_embed", f"{prefix}embeddings.patch_embedding.weight",
                  as_f32(conv_to_hwio, inflate(cfg.tubelet))),
             Rule("cls", f"{prefix}embeddings.class_embedding", F32),
             Rule("pos_embed", f"{prefix}embeddings.position_embedding.weight", F32)]
    rules += _ln("pre_ln", f"{prefix}pre_layrnorm")
    rules += _clip_encoder_rules(prefix, cfg.width, cfg.heads)
    rules += _ln("post_ln", f"{prefix}post_layernorm")
    if projection:
        rules.append(Rule("proj/kernel", projection, as_f32(transpose)))
    return rules


def clip_text_rules(cfg: TextConfig, prefix: str = "text_model.",
                    projection: str | None = None) -> list[Rule]:
    """`TextTransformer` params <- CLIP text keys (+ the text projection key)."""
    rules = [Rule("token_embed", f"{prefix}embeddings.token_embedding.weight", F32),
             Rule("pos_embed", f"{prefix}embeddings.position_embedding.weight", F32)]
    rules += _clip_encoder_rules(prefix, cfg.width, cfg.heads)
    rules += _ln("final_ln", f"{prefix}final_layer_norm")
    if projection:
        rules.append(Rule("proj/kernel", projection, as_f32(transpose)))
    return rules


def llama_rules(cfg: DecoderConfig, prefix: str = "model.",
                lm_head: str | None = "lm_head.weight") -> list[Rule]:
    """`Decoder` params <- Llama keys; `lm_head` None (or a tied config): no lm_head rule."""
    layer = f"{prefix}layers.{{layer}}"
    D, H, K, Dh = cfg.width, cfg.heads, cfg.kv_heads, cfg.dim_per_head
    rules = [Rule("embed", f"{prefix}embed_tokens.weight", F32),
             Rule("layers/input_norm/scale", f"{layer}.input_layernorm.weight", F32),
             Rule("layers/post_norm/scale", f"{layer}.post_attention_layernorm.weight", F32),
             Rule("norm/scale", f"{prefix}norm.weight", F32)]
    rules += _attention_rules("layers/attn", f"{layer}.self_attn",
                              ("q_proj", "k_proj", "v_proj", "o_proj"), D, H, K, Dh, bias=False)
    for name in ("gate", "up", "down"):
        rules += _dense(f"layers/mlp/{name}", f"{layer}.mlp.{name}_proj", bias=False)
    if lm_head and not cfg.tie_embeddings:
        rules.append(Rule("lm_head/kernel", lm_head, as_f32(transpose)))
    return rules


def projector_rules(prefix: str = "multi_modal_projector.") -> list[Rule]:
    """LLaVA projector (linear_1, GELU, linear_2) <- our MLP fc1/fc2."""
    return _dense("fc1", f"{prefix}linear_1") + _dense("fc2", f"{prefix}linear_2")


# ------------------------------------------------------------------ configs
def architecture(config: dict, source: str = "config.json") -> str:
    """One of "clip", "clip_vision_model", "clip_text_model", "llama", "llava",
    "qwen2_5_vl"."""
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    by_arch = {"CLIPModel": "clip", "CLIPVisionModel": "clip_vision_model",
               "CLIPVisionModelWithProjection": "clip_vision_model",
               "CLIPTextModel": "clip_text_model", "CLIPTextModelWithProjection": "clip_text_model",
               "LlamaForCausalLM": "llama", "LlavaForConditionalGeneration": "llava",
               "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl"}
    known = ("clip", "clip_vision_model", "clip_text_model", "llama", "llava", "qwen2_5_vl")
    if model_type in known:
        return model_type
    for arch in archs:
        if arch in by_arch:
            return by_arch[arch]
    raise CheckpointError(
        f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
        f"known model types: {', '.join(known)}")


def _act(name: str, source: str) -> str:
    if name not in _HF_ACT or _HF_ACT[name] not in ACTIVATIONS:
        raise CheckpointError(f"{source}: unsupported activation {name!r}")
    return _HF_ACT[name]


def vision_config(hf: dict, source: str = "config.json", **overrides) -> VisionConfig:
    """Our `VisionConfig` from a CLIPVisionConfig dict (missing keys: Hugging Face defaults)."""
    get = hf.get
    return VisionConfig(**{**dict(
        width=get("hidden_size", 768), depth=get("num_hidden_layers", 12),
        heads=get("num_attention_heads", 12), mlp_dim=get("intermediate_size", 3072),
        patch_size=get("patch_size", 32), image_size=get("image_size", 224),
        activation=_act(get("hidden_act", "quick_gelu"), source),
        layer_norm_eps=get("layer_norm_eps", 1e-5)), **overrides})


def text_config(hf: dict, source: str = "config.json", **overrides) -> TextConfig:
    """Our `TextConfig` from a CLIPTextConfig dict. CLIP's legacy eos_token_id == 2 means
    pooling at the largest token id (as Hugging Face does)."""
    get = hf.get
    eos = get("eos_token_id", 49407)
    return TextConfig(**{**dict(
        vocab_size=get("vocab_size", 49408), width=get("hidden_size", 512),
        depth=get("num_hidden_layers", 12), heads=get("num_attention_heads", 8),
        mlp_dim=get("intermediate_size", 2048), max_length=get("max_position_embeddings", 77),
        eos_token_id=eos, pad_token_id=get("pad_token_id", 1) or 0,
        pool="argmax" if eos == 2 else "eos",
        activation=_act(get("hidden_act", "quick_gelu"), source),
        layer_norm_eps=get("layer_norm_eps", 1e-5)), **overrides})


def decoder_config(hf: dict, source: str = "config.json", **overrides) -> DecoderConfig:
    """Our `DecoderConfig` from a LlamaConfig dict; unsupported variants are CheckpointErrors."""
    get = hf.get
    if get("attention_bias") or get("mlp_bias"):
        raise CheckpointError(f"{source}: Llama with attention/MLP biases is not supported")
    if get("rope_scaling"):
        raise CheckpointError(f"{source}: rope_scaling {get('rope_scaling')} is not supported")
    if _act(get("hidden_act", "silu"), source) != "silu":
        raise CheckpointError(f"{source}: Llama hidden_act must be silu, got {get('hidden_act')}")
    heads = get("num_attention_heads", 32)
    eos = get("eos_token_id", 2)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return DecoderConfig(**{**dict(
        vocab_size=get("vocab_size", 32000), width=get("hidden_size", 4096),
        depth=get("num_hidden_layers", 32), heads=heads,
        kv_heads=get("num_key_value_heads") or heads, mlp_dim=get("intermediate_size", 11008),
        head_dim=get("head_dim"), rope_theta=float(get("rope_theta", 10000.0)),
        rms_eps=get("rms_norm_eps", 1e-6), max_length=get("max_position_embeddings", 2048),
        tie_embeddings=bool(get("tie_word_embeddings", False)),
        bos_token_id=get("bos_token_id", 1) if get("bos_token_id", 1) is not None else 1,
        eos_token_id=eos, pad_token_id=get("pad_token_id") or 0), **overrides})


def llava_backbone_config(hf: dict, source: str = "config.json") -> BackboneConfig:
    """`BackboneConfig` (vision, decoder, projector; no text tower) of a LLaVA config dict."""
    vision = vision_config(hf.get("vision_config") or {}, source)
    decoder = decoder_config(hf.get("text_config") or {}, source)
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise CheckpointError(f"{source}: vision_feature_layer {layer!r} (a list) is not "
                              "supported")
    if hf.get("multimodal_projector_bias", True) is False:
        raise CheckpointError(f"{source}: a projector without biases is not supported")
    strategy = hf.get("vision_feature_select_strategy", "default")
    return BackboneConfig(
        vision=vision, decoder=decoder, projector_dim=decoder.width,
        vision_feature_layer=layer,
        vision_feature_select={"default": "patch", "full": "full"}.get(strategy, strategy),
        projector_activation=_act(hf.get("projector_hidden_act", "gelu"), source))
