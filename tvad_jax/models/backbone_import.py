"""Hugging Face checkpoint directories -> a T-VAD backbone (`tvad backbone import`).

    tokenizer = decoder_tokenizer([qwen_dir])     # read and checked before any weight
    cfg, params, text_tokenizer = import_backbone([qwen_dir], tokenizer)
    cfg, params, text_tokenizer = import_backbone([llava_dir, clip_dir], tokenizer)
    cfg, params, text_tokenizer = import_backbone([clip_dir, llama_dir], tokenizer)
    backbone_io.save_backbone(out, cfg, params, tokenizer, text_tokenizer=text_tokenizer)

Combinations (by each config.json's architecture, in any order):

* Qwen2.5-VL alone: the "qwen2_5_vl" family (`models.qwen_backbone`): vision tower, decoder,
  E_t from the decoder; frames of `image_size` pixels (a side or (height, width)).
* LLaVA-1.5 + CLIP: LLaVA's vision tower, projector and decoder, the CLIP text tower as E_t
  (with CLIP's own tokenizer, saved as the text tokenizer).
* CLIP + Llama: CLIP's vision and text towers, the Llama decoder, and a projector (vision
  width -> decoder width, LLaVA's GELU MLP) initialized at random with `seed`: it is not
  trained by T-VAD, so such a backbone needs a projector from elsewhere to describe videos.

The decoder's tokenizer (from `tokenizer_dir`, default the decoder's directory) gets what
T-VAD's dialogue needs: the three anomaly prompt tokens, a bos (`<|im_start|>` where the
tokenizer has none: Qwen) and a pad (the eos where it has none). Token ids past the decoder's
vocabulary grow its embedding (and untied head) by rows equal to the mean row; the decoder's
bos/eos/pad ids become the tokenizer's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from tvad_jax.models import hf_tables, qwen_backbone, qwen_vl, vlm
from tvad_jax.models.configs import BackboneConfig, DecoderConfig
from tvad_jax.models.convert import CheckpointError, read_config
from tvad_jax.models.layers import MLP
from tvad_jax.models.tokenizer import ANOMALY_TOKENS, load_tokenizer

QWEN_BOS = "<|im_start|>"


def architectures(sources: Sequence[str | Path]) -> dict[str, Path]:
    """{architecture: directory} of the sources; a CheckpointError for an unknown or repeated
    architecture and for a combination that is not one of the module docstring's."""
    found: dict[str, Path] = {}
    for source in map(Path, sources):
        arch = hf_tables.architecture(read_config(source), str(source))
        arch = "clip" if arch.startswith("clip") else arch
        if arch in found:
            raise CheckpointError(f"{source}: a second {arch} checkpoint (the first: "
                                  f"{found[arch]})")
        found[arch] = source
    if set(found) not in ({"qwen2_5_vl"}, {"llava", "clip"}, {"clip", "llama"}):
        raise CheckpointError(f"{', '.join(map(str, sources))}: expected Qwen2.5-VL alone, "
                              f"LLaVA + CLIP or CLIP + Llama, got {' + '.join(sorted(found))}")
    return found


def prepare_tokenizer(tokenizer, source: str):
    """The tokenizer with T-VAD's special tokens (see the module docstring)."""
    missing = [t for t in ANOMALY_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                     replace_additional_special_tokens=False)
    if tokenizer.eos_token is None:
        raise CheckpointError(f"{source}: the tokenizer has no eos token")
    if tokenizer.bos_token is None:
        if QWEN_BOS not in tokenizer.get_vocab():
            raise CheckpointError(f"{source}: the tokenizer has no bos token (nor {QWEN_BOS})")
        tokenizer.bos_token = QWEN_BOS
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def fit_decoder(cfg: DecoderConfig, params: dict, tokenizer) -> tuple[DecoderConfig, dict]:
    """The decoder with the tokenizer's special ids and room for all its ids."""
    size = max(cfg.vocab_size, len(tokenizer))
    grow = size - cfg.vocab_size
    params = dict(params)
    if grow:
        embed = np.asarray(params["embed"])
        params["embed"] = np.concatenate([embed, np.repeat(embed.mean(0, keepdims=True), grow,
                                                           0)])
        if not cfg.tie_embeddings:
            head = np.asarray(params["lm_head"]["kernel"])                       # D, V
            params["lm_head"] = {"kernel": np.concatenate(
                [head, np.repeat(head.mean(1, keepdims=True), grow, 1)], axis=1)}
    cfg = dataclasses.replace(cfg, vocab_size=size, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    return cfg, params


def decoder_tokenizer(sources: Sequence[str | Path], tokenizer_dir: str | Path | None = None):
    """The decoder's tokenizer (from `tokenizer_dir`, default the decoder's directory) with
    what T-VAD's dialogue needs (`prepare_tokenizer`); reads no weights, so that a tokenizer
    the import cannot use fails before a 7B checkpoint is loaded."""
    found = architectures(sources)
    source = Path(tokenizer_dir or found.get("qwen2_5_vl") or found.get("llava")
                  or found["llama"])
    return prepare_tokenizer(load_tokenizer(source), str(source))


def import_backbone(sources: Sequence[str | Path], tokenizer,
                    image_size: int | tuple[int, int] = 336, text_layer: float | int = 0.5,
                    token_pool: int = 2, seed: int = 0):
    """(backbone config, float32 params, text tokenizer or None) of Hugging Face directories
    (see the module docstring), the decoder fitted to `tokenizer` (`decoder_tokenizer`'s).
    `image_size` and `text_layer`: Qwen2.5-VL's frame size and E_t layer; `token_pool`:
    LLaVA-family visual tokens per tubelet = patches / token_pool^2."""
    found = architectures(sources)
    if "qwen2_5_vl" in found:
        qcfg, params = qwen_vl.load(found["qwen2_5_vl"])
        try:
            bcfg = qwen_backbone.backbone_config(qcfg, image_size, text_layer)
        except ValueError as err:
            raise CheckpointError(f"{found['qwen2_5_vl']}: {err}") from None
        decoder, dec_params = fit_decoder(bcfg.decoder, params["text"], tokenizer)
        return (dataclasses.replace(bcfg, decoder=decoder),
                {"vision": params["vision"], "decoder": dec_params}, None)
    clip_cfg, clip_params = vlm.load_clip(found["clip"])
    if clip_cfg.text is None:
        raise CheckpointError(f"{found['clip']}: no CLIP text tower (E_t)")
    text_tokenizer = load_tokenizer(found["clip"])
    if "llava" in found:
        bcfg, params = vlm.with_text(vlm.load_llava(found["llava"]), (clip_cfg, clip_params))
    else:
        dec_cfg, dec_params = vlm.load_llama(found["llama"])
        bcfg = dataclasses.replace(clip_cfg, decoder=dec_cfg, projector_dim=dec_cfg.width,
                                   vision_feature_layer=-2, projector_activation="gelu")
        projector = MLP(dec_cfg.width, dec_cfg.width, "gelu").init(
            jax.random.key(seed), np.zeros((1, clip_cfg.vision.width), np.float32))["params"]
        params = dict(clip_params, decoder=dec_params, projector=projector)
    decoder, dec_params = fit_decoder(bcfg.decoder, params["decoder"], tokenizer)
    bcfg = dataclasses.replace(bcfg, decoder=decoder, token_pool=token_pool)
    return bcfg, dict(params, decoder=dec_params), text_tokenizer


def describe(cfg) -> str:
    """One line naming the towers of an imported backbone."""
    if isinstance(cfg, BackboneConfig):
        return (f"vision {cfg.vision.depth} x {cfg.vision.width} ({cfg.vision.image_size} px), "
                f"text {cfg.text.depth} x {cfg.text.width}, decoder {cfg.decoder.depth} x "
                f"{cfg.decoder.width} (vocabulary {cfg.decoder.vocab_size}), AHD layers "
                f"{list(cfg.vision.layer_indices)}")
    h, w = cfg.vision.frame_size
    return (f"Qwen2.5-VL: vision {cfg.vision.depth} x {cfg.vision.width} "
            f"({h}x{w} px frames), decoder {cfg.decoder.depth} x {cfg.decoder.width} "
            f"(vocabulary {cfg.decoder.vocab_size}), AHD blocks "
            f"{list(cfg.vision.layer_indices)}, E_t decoder layer {cfg.text_layer_index}")
