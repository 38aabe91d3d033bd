"""CLIP text tower: parity with transformers' FlaxCLIPTextModelWithProjection on one checkpoint.

A tiny random text-only CLIP (with projection) is written in PyTorch layout; transformers' own
PyTorch->Flax converter reads it back to the HF Flax params, HF's model runs on them, and our
`load_clip` reads the same file.
"""
from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_helpers import hf_reads_back, random_like

from tvad_jax.models.convert import to_pytorch_layout, write_checkpoint
from tvad_jax.models.text import TextTransformer, mean_pool
from tvad_jax.models.vlm import Backbone, load_clip

ATOL = 2e-5


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from transformers import CLIPTextConfig, FlaxCLIPTextModelWithProjection

    hf_cfg = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=99, max_position_embeddings=16,
                            eos_token_id=98, pad_token_id=0, projection_dim=16,
                            architectures=["CLIPTextModelWithProjection"])
    model = FlaxCLIPTextModelWithProjection(hf_cfg, _do_init=False)
    params = random_like(model.params_shape_tree, seed=3)
    directory = tmp_path_factory.mktemp("clip_text")
    write_checkpoint(directory, to_pytorch_layout(params), hf_cfg.to_dict())
    hf_reads_back(model, directory, params)
    # right-padded rows; EOS (98) at different places, row 2 has 97 > ... after EOS
    ids = np.array([[5, 17, 9, 98, 0, 0, 0, 0],
                    [4, 98, 30, 7, 0, 0, 0, 0],
                    [6, 7, 8, 9, 10, 11, 12, 98]], np.int32)
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0], [1] * 8], np.int32)
    hf = jax.jit(lambda p: model(input_ids=ids, attention_mask=mask, params=p,
                                 output_hidden_states=True))(params)
    cfg, ours = load_clip(directory)
    run = jax.jit(lambda p, i, m: Backbone(cfg).apply({"params": p}, i, m,
                                                      method=Backbone.encode_text))
    return types.SimpleNamespace(hf=hf, cfg=cfg, params=ours, out=run(ours, ids, mask), ids=ids,
                                 mask=mask)


def test_config_and_params_from_checkpoint(text):
    cfg = text.cfg
    assert cfg.vision is None and cfg.decoder is None and cfg.embed_dim == 16
    assert (cfg.text.width, cfg.text.depth, cfg.text.heads, cfg.text.max_length) == (32, 2, 4, 16)
    assert cfg.text.pool == "eos" and cfg.text.eos_token_id == 98
    assert text.params["text"]["layers"]["attn"]["query"]["kernel"].shape == (2, 32, 4, 8)


def test_token_features_match_hf(text):
    out, hf, mask = text.out, text.hf, text.mask.astype(bool)
    assert out.features.shape == (3, 8, 32)
    # every position (padded ones too: both sides mask padded keys the same way)
    np.testing.assert_allclose(out.features, hf.last_hidden_state, atol=ATOL)
    np.testing.assert_allclose(out.features[mask], np.asarray(hf.last_hidden_state)[mask],
                               atol=ATOL)


def test_pooled_and_projection_match_hf(text):
    out, hf = text.out, text.hf
    # HF's WithProjection model returns text_embeds = projection of the EOS features
    np.testing.assert_allclose(out.embeds, hf.text_embeds, atol=ATOL)
    np.testing.assert_allclose(out.pooled, out.features[np.arange(3), [3, 1, 7]], atol=0)


def test_mean_pool_is_eq2(text):
    out, mask = text.out, text.mask
    pooled = mean_pool(out.features, mask)
    feats = np.asarray(out.features, np.float64)
    want = np.stack([feats[b, :mask[b].sum()].mean(0) for b in range(3)])
    np.testing.assert_allclose(pooled, want, atol=1e-6)
    # leading dims: [N_c, L, D] prompts of several classes at once
    stacked = mean_pool(jnp.stack([out.features, out.features]), jnp.stack([mask, mask]))
    np.testing.assert_allclose(stacked[1], want, atol=1e-6)
    np.testing.assert_allclose(mean_pool(out.features), feats.mean(1), atol=1e-6)


def test_legacy_argmax_pooling(text):
    """CLIP configs with eos_token_id == 2 pool at the largest id (Hugging Face's rule)."""
    cfg = dataclasses.replace(text.cfg.text, pool="argmax")
    tower = TextTransformer(cfg)
    params = {k: v for k, v in text.params["text"].items() if k != "proj"}
    ids = text.ids.copy()
    ids[0, 1] = 97                                   # largest id of row 0 now at position 1
    out = jax.jit(lambda p: tower.apply({"params": p}, ids, text.mask))(params)
    np.testing.assert_array_equal(out.pooled, out.features[np.arange(3), ids.argmax(-1)])
    from tvad_jax.models.hf_tables import text_config

    assert text_config({"eos_token_id": 2}).pool == "argmax"
    assert text_config({"eos_token_id": 49407}).pool == "eos"
