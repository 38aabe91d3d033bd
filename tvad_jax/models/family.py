"""Backbone families: what T-VAD needs from a frozen backbone, once per architecture.

    fam = family(bcfg)                       # LLAVA (vlm.Backbone) or QWEN (Qwen2.5-VL)
    hidden, visual = fam.encode(bcfg, params, frames)      # AHD layers, visual tokens P_V
    ids, mask = fam.tokenize(bcfg, tokenizer, sentences)   # class sentences for E_t
    feats = fam.text_features(bcfg, params, ids, mask)     # [S, L, D_t] (eq. 2)
    dec = fam.decoder(bcfg)                                # the decoder module
    block = fam.visual_block(bcfg, decoder_params, visual) # P_V as the decoder sees it
    positions, delta = fam.positions(bcfg, S_v, L, P)      # of [P ids, block, ..., text]

"llava" is the project's own composite (`vlm.Backbone`: a ViT with a CLS token, a CLIP text
tower as E_t, a Llama decoder behind a projector; the shipped default, LLaVA-1.5 and CLIP +
Llama imports); "qwen2_5_vl" is `models.qwen_backbone`. Positions are what the family's
decoder takes for a prompt of length L that opens with P text ids (the chat format's prefix)
and then the visual block of S_v visual tokens: [1, L] (RoPE) or [3, 1, L] (M-RoPE),
broadcast over the batch; slot p >= L continues at position p + delta (0 for "llava").
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from tvad_jax.models import qwen_backbone, vlm
from tvad_jax.models.configs import BackboneConfig, DecoderConfig
from tvad_jax.models.decoder import Decoder
from tvad_jax.models.qwen_backbone import QwenBackboneConfig


@dataclasses.dataclass(frozen=True)
class _Llava:
    name: str = "llava"
    block_extra: int = 0                      # visual block length - visual tokens
    encoder_parts: tuple[str, ...] = ("vision", "projector")   # params the encoder reads

    def encode(self, bcfg: BackboneConfig, params, frames) -> tuple[jax.Array, jax.Array]:
        out, tokens = vlm.Backbone(bcfg).apply({"params": params}, frames,
                                           method=vlm.Backbone.encode_video_and_tokens)
        return jax.numpy.stack(out.hidden, axis=1), tokens

    def tokenize(self, bcfg: BackboneConfig, tokenizer, sentences) -> tuple[np.ndarray,
                                                                            np.ndarray]:
        """<bos> sentence <eos>, cut and padded to the text tower's max_length. The ends are
        the tokenizer's (a CLIP config's legacy ids, eos 2 and pad 1, are ordinary tokens of
        its vocabulary); the mask marks the tokens written, whatever the pad id."""
        length = bcfg.text.max_length
        eos = bcfg.text.eos_token_id if tokenizer.eos_token_id is None else tokenizer.eos_token_id
        ids = np.full((len(sentences), length), bcfg.text.pad_token_id, np.int32)
        mask = np.zeros((len(sentences), length), bool)
        for row, sentence in enumerate(sentences):
            tokens = [tokenizer.bos_token_id,
                      *tokenizer(sentence, add_special_tokens=False)["input_ids"]][:length - 1]
            tokens.append(eos)
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = True
        return ids, mask

    def text_features(self, bcfg: BackboneConfig, params, ids, mask) -> jax.Array:
        return vlm.Backbone(bcfg).apply({"params": params}, ids, mask,
                                    method=vlm.Backbone.encode_text).features

    def text_width(self, bcfg: BackboneConfig) -> int:
        return bcfg.text.width

    def decoder(self, bcfg: BackboneConfig, decoder: DecoderConfig | None = None) -> nn.Module:
        return Decoder(decoder or bcfg.decoder)

    def visual_block(self, bcfg: BackboneConfig, decoder_params, visual) -> jax.Array:
        return visual

    def positions(self, bcfg: BackboneConfig, visual_tokens: int, length: int,
                  prefix: int = 0) -> tuple[np.ndarray, int]:
        return np.arange(length, dtype=np.int32)[None], 0

    def abstract_params(self, bcfg: BackboneConfig, boxed: bool = False) -> Any:
        return vlm.abstract_params(bcfg, boxed)


@dataclasses.dataclass(frozen=True)
class _Qwen:
    name: str = qwen_backbone.FAMILY
    block_extra: int = 2                      # <|vision_start|>, <|vision_end|>
    encoder_parts: tuple[str, ...] = ("vision",)

    def encode(self, bcfg, params, frames):
        return qwen_backbone.encode(bcfg, params, frames)

    def tokenize(self, bcfg, tokenizer, sentences):
        return qwen_backbone.tokenize(bcfg, tokenizer, sentences)

    def text_features(self, bcfg, params, ids, mask):
        return qwen_backbone.text_token_features(bcfg, params, ids, mask)

    def text_width(self, bcfg) -> int:
        return bcfg.text_width

    def decoder(self, bcfg, decoder=None):
        return qwen_backbone.decoder_module(bcfg, decoder)

    def visual_block(self, bcfg, decoder_params, visual):
        return qwen_backbone.visual_block(bcfg, decoder_params, visual)

    def positions(self, bcfg, visual_tokens, length, prefix=0):
        return qwen_backbone.prompt_positions(bcfg, visual_tokens, length, prefix)

    def abstract_params(self, bcfg, boxed=False):
        return qwen_backbone.abstract_params(bcfg, boxed)


LLAVA, QWEN = _Llava(), _Qwen()
FAMILIES = {f.name: f for f in (LLAVA, QWEN)}


def family(bcfg) -> _Llava | _Qwen:
    """The family of a backbone config."""
    return QWEN if isinstance(bcfg, QwenBackboneConfig) else LLAVA
