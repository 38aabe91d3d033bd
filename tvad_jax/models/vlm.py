"""The frozen LVLM backbone (vision E_v, text E_t, decoder D_l, LLaVA projector) and loaders.

    cfg, params = load_llava("/path/llava-1.5-7b-hf")     # or load_clip / load_llama / load
    bb = Backbone(cfg)
    video = bb.apply({"params": params}, pixels, method=Backbone.encode_video)
    tokens = bb.apply({"params": params}, pixels, method=Backbone.visual_tokens)
    text = bb.apply({"params": params}, ids, mask, method=Backbone.encode_text)
    new, cache = generate(params["decoder"], cfg.decoder, prompt_embeds, lengths, 32, rng)

Params: {"vision": ..., "text": ..., "projector": {"fc1", "fc2"}, "decoder": ...,
"logit_scale": []} for the towers the config has (logit_scale with embed_dim and a text tower).

Loaders read a Hugging Face directory (config.json + model.safetensors, sharded safetensors or
flax_model.msgpack): the architecture comes from config.json, keys are mapped by the tables of
`hf_tables`, and every checkpoint key must be used (or be a known buffer) and every param found,
with shapes checked against the model: otherwise a `CheckpointError` lists the keys. Params are
float32 whatever the checkpoint dtype. LLaVA checkpoints have no text tower: combine with a CLIP
checkpoint's via `with_text(llava, clip)`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models import hf_tables as tables, qwen_vl
from tvad_jax.models.configs import BackboneConfig, DecoderConfig, dtype_of
from tvad_jax.models.convert import (CheckpointError, Rule, apply_rules, check_shapes, read_config,
                                     read_pytorch_layout)
from tvad_jax.models.decoder import Decoder
from tvad_jax.models.layers import MLP
from tvad_jax.models.text import TextOutput, TextTransformer
from tvad_jax.models.vit import VisionOutput, VisionTransformer


class Backbone(nn.Module):
    """Composite of the towers in `cfg` (absent towers have no params).

    Methods (use with `apply(..., method=Backbone.x)`):
      encode_video(pixels [B, T, H, W, 3]) -> VisionOutput (hidden at cfg.vision.feature_layers)
      encode_text(ids [B, L], mask [B, L]) -> TextOutput (features, pooled, embeds)
      visual_tokens(pixels) -> [B, T' * N / token_pool^2, D_dec] ("patch", CLS dropped) or
        [B, T' * (1 + N), D_dec] ("full"): the ViT hidden state `cfg.vision_feature_layer`
        (LLaVA: -2, before post-LN), patches average-pooled `token_pool` x `token_pool`,
        through the projector, flattened tubelet-major.
      encode_video_and_tokens(pixels) -> (VisionOutput, tokens): both from one ViT pass.
      project(features [..., S, D_v]) -> [..., S, D_dec]: the projector alone.
      embed_tokens(ids [B, L]) -> [B, L, D_dec]; decode(embeds, positions, cache, lengths) ->
        (logits, cache): `Decoder.__call__`.
    """

    cfg: BackboneConfig

    def setup(self):
        cfg = self.cfg
        if cfg.vision is not None:
            self.vision = VisionTransformer(cfg.vision, cfg.embed_dim)
        if cfg.text is not None:
            self.text = TextTransformer(cfg.text, cfg.embed_dim)
            if cfg.embed_dim is not None:
                self.logit_scale = self.param("logit_scale", nn.initializers.constant(
                    float(np.log(1 / 0.07))), (), jnp.float32)
        if cfg.projector_dim is not None:
            self.projector = MLP(cfg.projector_dim, cfg.decoder.width, cfg.projector_activation,
                                 dtype=dtype_of(cfg.vision.dtype))
        if cfg.decoder is not None:
            self.decoder = Decoder(cfg.decoder)

    def _need(self, *names):
        for name in names:
            if getattr(self.cfg, name if name != "projector" else "projector_dim") is None:
                raise ValueError(f"this backbone has no {name}")

    def encode_video(self, pixels: jax.Array) -> VisionOutput:
        self._need("vision")
        return self.vision(pixels)

    def encode_text(self, ids: jax.Array, mask: jax.Array | None = None) -> TextOutput:
        self._need("text")
        return self.text(ids, mask)

    def project(self, features: jax.Array) -> jax.Array:
        self._need("projector")
        return self.projector(features)

    def _tokens(self, h: jax.Array) -> jax.Array:
        if self.cfg.vision_feature_select == "patch":
            h = h[:, :, 1:]                                     # B, T', N, D_v
        pool = self.cfg.token_pool
        if pool > 1:                                            # B, T', N / pool^2, D_v
            b, t, n, d = h.shape
            g = math.isqrt(n)
            h = h.reshape(b, t, g // pool, pool, g // pool, pool, d).mean(axis=(3, 5))
            h = h.reshape(b, t, -1, d)
        tokens = self.projector(h)                              # B, T', S, D_dec
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])

    def visual_tokens(self, pixels: jax.Array) -> jax.Array:
        self._need("vision", "projector")
        out = self.vision(pixels, layers=(self.cfg.vision_feature_layer,))
        return self._tokens(out.hidden[0])

    def encode_video_and_tokens(self, pixels: jax.Array) -> tuple[VisionOutput, jax.Array]:
        self._need("vision", "projector")
        wanted = self.cfg.vision.layer_indices
        out = self.vision(pixels, layers=wanted + (self.cfg.vision_feature_layer,))
        tokens = self._tokens(out.hidden[-1])
        return out.replace(hidden=out.hidden[:-1]), tokens

    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        self._need("decoder")
        return self.decoder.embed(ids)

    def decode(self, embeds, positions, cache=None, lengths=None):
        self._need("decoder")
        return self.decoder(embeds, positions, cache, lengths)

    def __call__(self, pixels=None, ids=None, mask=None) -> dict:
        """Runs every tower present (used by `init`): a dict of their outputs."""
        out = {}
        if self.cfg.vision is not None and pixels is not None:
            if self.cfg.projector_dim is not None:
                out["video"], out["tokens"] = self.encode_video_and_tokens(pixels)
            else:
                out["video"] = self.encode_video(pixels)
        if self.cfg.text is not None and ids is not None:
            out["text"] = self.encode_text(ids, mask)
            if self.cfg.embed_dim is not None:
                out["logit_scale"] = self.logit_scale
        if self.cfg.decoder is not None and ids is not None:
            embeds = self.decoder.embed(ids)
            out["logits"], _ = self.decoder(embeds, jnp.arange(ids.shape[1])[None])
        return out


def _dummy_inputs(cfg: BackboneConfig):
    pixels = ids = None
    if cfg.vision is not None:
        v = cfg.vision
        pixels = jnp.zeros((1, v.tubelet, v.image_size, v.image_size, 3), jnp.float32)
    if cfg.text is not None or cfg.decoder is not None:
        ids = jnp.zeros((1, 2), jnp.int32)
    return pixels, ids


def init_params(cfg: BackboneConfig, rng: jax.Array) -> dict:
    """Random params of a `Backbone` (float32, logical-axis boxes removed); compiled, since
    running the model's forward op by op to initialize it takes ~20 s even at the tiny size."""
    pixels, ids = _dummy_inputs(cfg)
    return jax.jit(lambda r: nn.meta.unbox(Backbone(cfg).init(r, pixels, ids)["params"]))(rng)


def abstract_params(cfg: BackboneConfig, boxed: bool = False) -> Any:
    """`jax.ShapeDtypeStruct` params of a `Backbone` without allocating (any scale). With
    `boxed`, the logical-axis boxes are kept (for `nn.get_partition_spec`)."""
    pixels, ids = _dummy_inputs(cfg)
    tree = jax.eval_shape(lambda: Backbone(cfg).init(jax.random.key(0), pixels, ids))["params"]
    return tree if boxed else nn.meta.unbox(tree)


def decoder_abstract_params(cfg: DecoderConfig) -> Any:
    return abstract_params(BackboneConfig(decoder=cfg))["decoder"]


# ------------------------------------------------------------------ loading
def _load_parts(weights: dict[str, np.ndarray], parts: list[tuple[list[Rule], int, tuple]],
                source: str) -> dict:
    """Apply each part's rules to the keys under its prefixes; keys under no part go to the
    depth-0 parts (prefix ()). All problems are reported in one CheckpointError."""
    params, problems, claimed = {}, [], set()
    for rules, depth, prefixes in parts:
        if not prefixes:
            continue
        subset = {k: v for k, v in weights.items() if k.startswith(prefixes)}
        claimed.update(subset)
        try:
            _merge(params, apply_rules(rules, subset, depth, tables.IGNORE, source))
        except CheckpointError as err:
            problems.append(str(err).removeprefix(f"{source}: "))
    rest = {k: v for k, v in weights.items() if k not in claimed}
    top = [r for rules, _, prefixes in parts if not prefixes for r in rules]
    try:
        _merge(params, apply_rules(top, rest, 0, tables.IGNORE, source))
    except CheckpointError as err:
        problems.append(str(err).removeprefix(f"{source}: "))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    return params


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _finish(cfg: BackboneConfig, params: dict, source: str) -> dict:
    """Add what checkpoints lack (zero temporal embedding), check shapes, to jnp arrays."""
    if cfg.vision is not None and "vision" in params:
        params["vision"].setdefault(
            "time_embed", np.zeros((cfg.vision.max_tubelets, cfg.vision.width), np.float32))
    check_shapes(params, abstract_params(cfg), source)
    return jax.tree.map(jnp.asarray, params)


def _expect(config: dict, allowed: tuple[str, ...], loader: str, source: str) -> str:
    arch = tables.architecture(config, source)
    if arch not in allowed:
        raise CheckpointError(f"{source}: {loader} expects {' or '.join(allowed)}, "
                              f"the checkpoint is {arch!r}")
    return arch


def load_clip(directory: str | Path, **vision_overrides) -> tuple[BackboneConfig, dict]:
    """A CLIP checkpoint (CLIPModel, CLIPVisionModel or CLIPTextModel, with or without
    projections) -> (BackboneConfig with vision and/or text, params). `vision_overrides`
    replace `VisionConfig` fields (e.g. feature_layers, attention, max_frames, dtype)."""
    source = str(directory)
    config = read_config(directory)
    arch = _expect(config, ("clip", "clip_vision_model", "clip_text_model"), "load_clip",
                   source)
    weights = read_pytorch_layout(directory)
    vision = text = None
    parts: list[tuple[list[Rule], int, tuple]] = []
    if arch == "clip":
        vision = tables.vision_config(config.get("vision_config") or {}, source,
                                      **vision_overrides)
        text = tables.text_config(config.get("text_config") or {}, source)
        embed_dim = config.get("projection_dim", 512)
    elif arch == "clip_vision_model":
        vision = tables.vision_config(config, source, **vision_overrides)
        embed_dim = config.get("projection_dim") if "visual_projection.weight" in weights else None
    else:
        text = tables.text_config(config, source)
        embed_dim = config.get("projection_dim") if "text_projection.weight" in weights else None
    top: list[Rule] = []
    if vision is not None:
        parts.append((tables.prefixed(tables.clip_vision_rules(vision), "vision"), vision.depth,
                      ("vision_model.",)))
        if embed_dim is not None:
            top.append(Rule("vision/proj/kernel", "visual_projection.weight",
                            tables.as_f32(tables.transpose)))
    if text is not None:
        parts.append((tables.prefixed(tables.clip_text_rules(text), "text"), text.depth,
                      ("text_model.",)))
        if embed_dim is not None:
            top.append(Rule("text/proj/kernel", "text_projection.weight",
                            tables.as_f32(tables.transpose)))
    if vision is not None and text is not None:
        top.append(Rule("logit_scale", "logit_scale", tables.F32))
    elif "logit_scale" in weights:
        weights = {k: v for k, v in weights.items() if k != "logit_scale"}
    parts.append((top, 0, ()))
    cfg = BackboneConfig(vision=vision, text=text, embed_dim=embed_dim)
    params = _load_parts(weights, parts, source)
    if text is not None and embed_dim is not None and "logit_scale" not in params:
        params["logit_scale"] = np.asarray(np.log(1 / 0.07), np.float32)
    return cfg, _finish(cfg, params, source)


def load_llama(directory: str | Path, **overrides) -> tuple[DecoderConfig, dict]:
    """A LlamaForCausalLM checkpoint -> (DecoderConfig, `Decoder` params). `overrides` replace
    `DecoderConfig` fields (e.g. dtype, remat)."""
    source = str(directory)
    config = read_config(directory)
    _expect(config, ("llama",), "load_llama", source)
    cfg = tables.decoder_config(config, source, **overrides)
    weights = read_pytorch_layout(directory)
    if cfg.tie_embeddings:
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    head = ([] if cfg.tie_embeddings else
            [Rule("lm_head/kernel", "lm_head.weight", tables.as_f32(tables.transpose))])
    params = _load_parts(weights, [(tables.llama_rules(cfg, lm_head=None), cfg.depth,
                                    ("model.",)), (head, 0, ())], source)
    full = _finish(BackboneConfig(decoder=cfg), {"decoder": params}, source)
    return cfg, full["decoder"]


def load_llava(directory: str | Path, **vision_overrides) -> tuple[BackboneConfig, dict]:
    """A LlavaForConditionalGeneration checkpoint (classic or transformers >= 4.52 layout) ->
    (BackboneConfig with vision, projector and decoder, params)."""
    source = str(directory)
    config = read_config(directory)
    _expect(config, ("llava",), "load_llava", source)
    cfg = tables.llava_backbone_config(config, source)
    if vision_overrides:
        cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, **vision_overrides))
    weights = read_pytorch_layout(directory)
    if any(k.startswith("model.vision_tower.") for k in weights):
        vis, proj, lang, head = ("model.vision_tower.vision_model.",
                                 "model.multi_modal_projector.", "model.language_model.",
                                 "lm_head.weight")
    elif any(k.startswith("vision_tower.") for k in weights):
        vis, proj, lang, head = ("vision_tower.vision_model.", "multi_modal_projector.",
                                 "language_model.model.", "language_model.lm_head.weight")
    else:
        raise CheckpointError(f"{source}: no LLaVA vision tower keys (vision_tower.* or "
                              "model.vision_tower.*)")
    dec = cfg.decoder
    if dec.tie_embeddings:
        weights = {k: v for k, v in weights.items() if k != head}
    vision_prefix = vis.removesuffix("vision_model.")
    head_rules = ([Rule("decoder/lm_head/kernel", head, tables.as_f32(tables.transpose))]
                  if not dec.tie_embeddings else [])
    parts = [
        (tables.prefixed(tables.clip_vision_rules(cfg.vision, prefix=vis), "vision"),
         cfg.vision.depth, (vision_prefix,)),
        (tables.prefixed(tables.projector_rules(proj), "projector"), 0, (proj,)),
        (tables.prefixed(tables.llama_rules(dec, prefix=lang, lm_head=None), "decoder"),
         dec.depth, (lang,)),
        (head_rules, 0, ()),
    ]
    params = _load_parts(weights, parts, source)
    return cfg, _finish(cfg, params, source)


def load(directory: str | Path) -> tuple[Any, dict]:
    """Any supported checkpoint: dispatches on config.json's architecture (Qwen2.5-VL to
    `qwen_vl.load`, which returns its own `QwenVLConfig`)."""
    arch = tables.architecture(read_config(directory), str(directory))
    if arch == "qwen2_5_vl":
        return qwen_vl.load(directory)
    if arch == "llama":
        return load_llama(directory)
    if arch == "llava":
        return load_llava(directory)
    return load_clip(directory)


def with_text(llava: tuple[BackboneConfig, dict], clip: tuple[BackboneConfig, dict]
              ) -> tuple[BackboneConfig, dict]:
    """A LLaVA backbone plus a CLIP checkpoint's text tower (and joint embedding)."""
    (lcfg, lparams), (ccfg, cparams) = llava, clip
    if ccfg.text is None:
        raise ValueError("the CLIP checkpoint has no text tower")
    cfg = dataclasses.replace(lcfg, text=ccfg.text, embed_dim=ccfg.embed_dim)
    params = dict(lparams, text=cparams["text"])
    if ccfg.embed_dim is not None:
        params["logit_scale"] = cparams.get("logit_scale", jnp.asarray(np.log(1 / 0.07)))
        if "proj" in cparams.get("vision", {}):
            params["vision"] = dict(params["vision"], proj=cparams["vision"]["proj"])
        else:
            raise ValueError("the CLIP checkpoint has no visual projection for embed_dim")
    return cfg, params
