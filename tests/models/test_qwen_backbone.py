"""Qwen2.5-VL as a T-VAD backbone on the shared tiny checkpoint: the AHD's patch grid against
transformers' block outputs, E_t against its hidden states, the prompt positions against the
M-RoPE rule written out here, and a prompt with text before the video (the chat format's
prefix) against transformers' positions and logits."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from shared_data import qwen_tiny_dir

from tvad_jax.models import qwen_backbone as qb, qwen_vl
from tvad_jax.models.tvad import TVADConfig, prompt_positions, text_logits

TINY = qwen_tiny_dir()


@pytest.fixture(scope="module")
def qwen():
    cfg, params = qwen_vl.load(TINY / "model")
    golden = dict(np.load(TINY / "golden.npz"))
    return cfg, {"vision": params["vision"], "decoder": params["text"]}, golden


def test_encode_reads_blocks_on_the_raster_patch_grid(qwen):
    cfg, params, g = qwen
    bcfg = qb.backbone_config(cfg, image_size=32)
    bcfg = dataclasses.replace(bcfg, vision=dataclasses.replace(bcfg.vision,
                                                                feature_layers=(1, 2, 4)))
    hidden, visual = jax.jit(lambda p, f: qb.encode(bcfg, p, f))(params, g["video_frames"][None])
    assert hidden.shape == (1, 3, 2, 1 + 64, 32) and visual.shape == (1, 32, 48)
    np.testing.assert_allclose(visual[0], g["vision_video_embeds"], atol=1e-4)
    # transformers' rows are in window order: row j is pixel_values row
    # 4 * window_index[j // 4] + j % 4; pixel_values rows run (t, h/2, w/2, 2, 2)
    blocks, index = g["vision_video_block_outputs"], g["vision_video_window_index"]
    j = np.arange(blocks.shape[1])
    by_row = np.empty_like(blocks)
    by_row[:, 4 * index[j // 4] + j % 4] = blocks
    raster = np.arange(128).reshape(2, 4, 4, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 64)
    for i, layer in enumerate((1, 2, 4)):
        want = by_row[layer - 1][raster]                                   # T', h*w, D
        np.testing.assert_allclose(hidden[0, i, :, 1:], want, atol=1e-4)
        np.testing.assert_allclose(hidden[0, i, :, 0], want.mean(1), atol=1e-4)


def test_encode_keeps_a_frames_aspect(qwen):
    """A (height, width) frame size: transformers' 32 x 48 image (its processor repeats the
    frame into one temporal patch) on the 8 x 12 patch grid, in raster order."""
    cfg, params, g = qwen
    bcfg = qb.backbone_config(cfg, image_size=(32, 48))
    v = dataclasses.replace(bcfg.vision, feature_layers=(4,))
    assert (v.frame_size, v.grid, v.num_patches, v.tokens_per_tubelet) == ((32, 48), (8, 12),
                                                                          96, 24)
    frames = np.repeat(g["image"][None, None], 2, axis=1)                 # 1, 2, 32, 48, 3
    hidden, visual = qb.encode(dataclasses.replace(bcfg, vision=v), params, frames)
    assert hidden.shape == (1, 1, 1, 1 + 96, 32)
    np.testing.assert_allclose(visual[0], g["vision_image_embeds"], atol=1e-4)
    blocks, index = g["vision_image_block_outputs"], g["vision_image_window_index"]
    j = np.arange(blocks.shape[1])
    by_row = np.empty_like(blocks)
    by_row[:, 4 * index[j // 4] + j % 4] = blocks
    raster = np.arange(96).reshape(4, 6, 2, 2).transpose(0, 2, 1, 3).reshape(96)
    np.testing.assert_allclose(hidden[0, 0, 0, 1:], by_row[3][raster], atol=1e-4)
    with pytest.raises(ValueError, match=r"expected \[B, T, 32, 48, 3\]"):
        qb.encode(bcfg, params, np.zeros((1, 2, 48, 32, 3), np.float32))
    with pytest.raises(ValueError, match="not a multiple"):
        qb.backbone_config(cfg, image_size=(32, 44))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_text_features_are_the_decoders_hidden_states(qwen, layer):
    cfg, params, g = qwen
    bcfg = qb.backbone_config(cfg, text_layer=layer)
    ids = g["image_input_ids"][:, :5]       # text before vision_start: causal, positions 0..4
    feats = qb.text_token_features(bcfg, params, ids, np.ones(ids.shape, bool))
    want = g["image_lm_hidden_states"][layer, :, :5]
    if layer == 1:                          # an inner layer goes through the final RMSNorm
        scale = np.asarray(params["decoder"]["norm"]["scale"])
        want = want / np.sqrt((want ** 2).mean(-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(feats, want, atol=1e-4)


def test_prompt_positions_follow_mrope(qwen):
    cfg, _, _ = qwen
    bcfg = qb.backbone_config(cfg, image_size=16)       # 4 x 4 patches: 2 x 2 tokens a step
    positions, delta = qb.prompt_positions(bcfg, visual_tokens=8, length=14)
    t, r, c = np.meshgrid(np.arange(2) * 2, np.arange(2), np.arange(2), indexing="ij")
    vision = 1 + np.stack([t.ravel(), r.ravel(), c.ravel()])           # after vision_start
    rest = vision.max() + 1 + np.arange(14 - 9)                         # vision_end, text
    want = np.concatenate([np.zeros((3, 1)), vision, np.broadcast_to(rest, (3, 5))], axis=1)
    np.testing.assert_array_equal(positions[:, 0], want)
    assert delta == rest[-1] + 1 - 14
    with pytest.raises(ValueError, match="whole tubelets"):
        qb.prompt_positions(bcfg, visual_tokens=7, length=14)


@pytest.mark.parametrize("prompt, size", [("video", 32), ("image", (32, 48))])
def test_a_prefix_before_the_video_block_gives_transformers_positions_and_logits(qwen, prompt,
                                                                                 size):
    """transformers' prompts are 5 text ids, the visual block, 4 text ids: T-VAD's prompt
    with those 5 ids as the prefix, the tower's tokens and the 4 ids as text matches its
    M-RoPE positions, rope delta and logits; for the video's square frames and, as a one-step
    video of 32 x 48 frames, for the image (whose positions a single temporal step shares)."""
    cfg, params, g = qwen
    bcfg = qb.backbone_config(cfg, image_size=size)
    ids = g[f"{prompt}_input_ids"][0]
    start, end = np.flatnonzero(ids == 150)[0], np.flatnonzero(ids == 151)[0]
    prefix, text = tuple(int(i) for i in ids[:start]), ids[None, end + 1:]
    visual = g[f"vision_{prompt}_embeds"][None]                          # 1, 32 or 24, 48
    positions, delta = prompt_positions(bcfg, visual.shape[1], len(ids), len(prefix))
    np.testing.assert_array_equal(positions, g[f"{prompt}_position_ids"])
    assert delta == g[f"{prompt}_rope_deltas"][0, 0]
    tcfg = TVADConfig(variant="plain").for_backbone(bcfg)
    logits = text_logits(tcfg, bcfg, params["decoder"], None, None, visual, None, text,
                         np.asarray([text.shape[1]]), prefix=prefix)
    np.testing.assert_allclose(logits, g[f"{prompt}_logits"][:, end + 1:], atol=1e-4)
