"""Qwen2.5-VL: parity with transformers 4.57.6's PyTorch model on the shared tiny checkpoint.

`../shared/data/qwen2_5_vl-tiny` holds a random Qwen2.5-VL checkpoint (window attention with
full-attention blocks, M-RoPE, untied head) and `golden.npz`, the reference outputs of
transformers' PyTorch model in float32 (read in place, never copied; its README explains every
array). Checked here: the processor's pixel layout and the window order (exactly), within
1e-4 the vision tower's patch embedding, every block's output and the merged embeddings of an
image and a 4-frame video, M-RoPE positions and rope deltas (exactly), the decoder's input
embeddings and the logits of an image and a video prompt, and the 8 greedy tokens of each.
Also: loading errors and layouts, a tied head, bf16 and remat, unmerged q/v LoRA against the
merged weights, and the 7B config's parameter count (shapes only).
"""
from __future__ import annotations

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_data import qwen_tiny_dir

from tvad_jax.models import lora, qwen_vl as Q, vlm
from tvad_jax.models.configs import count_params
from tvad_jax.models.convert import CheckpointError, read_weights, write_checkpoint

ATOL = 1e-4
FIXTURE = qwen_tiny_dir()
KINDS = ("image", "video")


@pytest.fixture(scope="module")
def qwen():
    cfg, params = Q.load(FIXTURE / "model")
    golden = dict(np.load(FIXTURE / "golden.npz"))
    return types.SimpleNamespace(cfg=cfg, params=params, golden=golden)


def _vision_inputs(golden, kind):
    """(pixel_values, grid_thw) of the image or the video."""
    if kind == "image":
        return golden["pixel_values"], golden["image_grid_thw"]
    return golden["pixel_values_videos"], golden["video_grid_thw"]


def _prompt_inputs(golden, kind):
    """Keyword arguments of `logits` / `rope_index` for the image or the video prompt."""
    if kind == "image":
        return dict(pixel_values=golden["pixel_values"], image_grid_thw=golden["image_grid_thw"])
    return dict(pixel_values_videos=golden["pixel_values_videos"],
                video_grid_thw=golden["video_grid_thw"],
                second_per_grid_ts=golden["second_per_grid_ts"])


def test_vlm_load_dispatches_qwen_directories(qwen):
    cfg, params = vlm.load(FIXTURE / "model")
    assert cfg == qwen.cfg
    assert jax.tree.structure(params) == jax.tree.structure(qwen.params)


def test_config_from_checkpoint(qwen):
    cfg = qwen.cfg
    v, t = cfg.vision, cfg.text
    assert (v.width, v.depth, v.heads, v.mlp_dim, v.patch_size, v.out_width) == \
        (32, 4, 4, 64, 4, 48)
    assert (v.window, v.full_blocks, v.tokens_per_second) == (2, (1, 3), 2)
    assert (t.vocab_size, t.width, t.depth, t.heads, t.kv_heads, t.mlp_dim) == \
        (160, 48, 2, 4, 2, 96)
    assert t.rope_theta == 1e6 and not t.tie_embeddings and t.eos_token_id is None
    assert cfg.mrope_section == (1, 2, 3)
    assert (cfg.vision_start_token_id, cfg.image_token_id, cfg.video_token_id) == (150, 152, 153)


@pytest.mark.parametrize("kind", KINDS)
def test_patchify_is_the_processor_layout(qwen, kind):
    frames = qwen.golden["image"][None] if kind == "image" else qwen.golden["video_frames"]
    pixels, grid = Q.patchify(qwen.cfg.vision, frames)
    want_pixels, want_grid = _vision_inputs(qwen.golden, kind)
    np.testing.assert_array_equal(pixels, want_pixels)
    np.testing.assert_array_equal(grid, want_grid)


def test_preprocessing_matches_the_image_processor(qwen):
    """smart_resize, rescale + CLIP normalisation and the patch layout against transformers'
    `Qwen2VLImageProcessor` (numpy path, no resizing: the resize is the next test's)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import (Qwen2VLImageProcessor,
                                                                        smart_resize)

    for size in [(32, 48), (100, 30), (1000, 2000), (7, 9), (224, 336), (4000, 3000)]:
        assert Q.smart_resize(*size) == smart_resize(*size)
        assert Q.smart_resize(*size, factor=8, max_pixels=4096) == \
            smart_resize(*size, factor=8, max_pixels=4096)
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    processor = Qwen2VLImageProcessor(do_resize=False, patch_size=4, temporal_patch_size=2,
                                      merge_size=2)
    want = processor(images=[image], return_tensors="np")
    pixels, grid = Q.patchify(qwen.cfg.vision, Q.normalize(image)[None])
    np.testing.assert_allclose(pixels, want["pixel_values"], atol=1e-6)
    np.testing.assert_array_equal(grid, want["image_grid_thw"])


@pytest.mark.parametrize("size", [(50, 70), (480, 856), (33, 400)])
def test_the_processors_resize_is_pil_bicubic_to_the_smart_size(qwen, size):
    """Frames resized by `data.video_io.resize_frames` with PIL's bicubic filter to
    `smart_resize`'s size, then normalised and patchified, are `Qwen2VLImageProcessor`'s pixel
    values to the bit (its own resize and size limits), for an image and for a 3-frame video
    (the processor's deprecated video path: the frames stacked in time)."""
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    from tvad_jax.data.video_io import resize_frames

    v = qwen.cfg.vision
    processor = Qwen2VLImageProcessor(patch_size=v.patch_size, merge_size=v.merge,
                                      temporal_patch_size=v.temporal_patch)
    frames = np.random.default_rng(1).integers(0, 256, (3, *size, 3), dtype=np.uint8)
    h, w = Q.smart_resize(*size, factor=v.patch_size * v.merge,
                          min_pixels=processor.min_pixels, max_pixels=processor.max_pixels)
    resized = resize_frames(frames, h, w, Image.BICUBIC)
    for ours, key, grid_key, (images, videos) in [
            (resized[:1], "pixel_values", "image_grid_thw", ([frames[0]], None)),
            (resized, "pixel_values_videos", "video_grid_thw", (None, [list(frames)]))]:
        out = processor(images=images, videos=videos, return_tensors="np")
        pixels, grid = Q.patchify(v, Q.normalize(ours))
        np.testing.assert_array_equal(pixels, out[key])
        np.testing.assert_array_equal(grid, out[grid_key])


def _windows(layout, window_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(window_index, cu_window_seqlens) of a layout: its merged ids without padding, and
    the boundaries of its non-empty windows in patches."""
    per_window = layout.valid.reshape(-1, window_slots).sum(axis=1)
    cu = np.concatenate([[0], np.cumsum(per_window[per_window > 0])])
    return layout.merged[layout.merged >= 0], cu


def _transformers_windows(grid_thw, merge: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """transformers' `get_window_index` in numpy, line by line (its padding of a full extra
    window row/column when the grid divides evenly, then `unique_consecutive`)."""
    window_index, cu, offset = [], [0], 0
    for t, h, w in np.asarray(grid_thw).tolist():
        gh, gw = h // merge, w // merge
        pad_h, pad_w = window - gh % window, window - gw % window
        nh, nw = (gh + pad_h) // window, (gw + pad_w) // window
        index = np.pad(np.arange(t * gh * gw).reshape(t, gh, gw),
                       ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        index = index.reshape(t, nh, window, nw, window).transpose(0, 1, 3, 2, 4)
        index = index.reshape(t, nh * nw, window, window)
        seqlens = (index != -100).sum(axis=(2, 3)).reshape(-1)
        flat = index.reshape(-1)
        window_index.append(flat[flat != -100] + offset)
        cu += (np.cumsum(seqlens) * merge * merge + cu[-1]).tolist()
        offset += t * gh * gw
    cu = np.asarray(cu)
    return np.concatenate(window_index), cu[np.concatenate([[True], cu[1:] != cu[:-1]])]


@pytest.mark.parametrize("kind", KINDS)
def test_window_layout_is_transformers_window_order(qwen, kind):
    """The padded window layout without its padding is `get_window_index`'s order, its
    windows are `cu_window_seqlens`, its segments `cu_seqlens`."""
    _, grid = _vision_inputs(qwen.golden, kind)
    layout = Q.window_layout(qwen.cfg.vision, grid)
    window_index, cu = _windows(layout, qwen.cfg.vision.window_slots)
    np.testing.assert_array_equal(window_index, qwen.golden[f"vision_{kind}_window_index"])
    np.testing.assert_array_equal(cu, qwen.golden[f"vision_{kind}_cu_window_seqlens"])
    ported = _transformers_windows(grid, qwen.cfg.vision.merge, qwen.cfg.vision.window)
    np.testing.assert_array_equal(ported[0], window_index)           # the port itself
    np.testing.assert_array_equal(ported[1], cu)
    real = (layout.segments >= 0) & layout.valid[np.maximum(layout.segments, 0)]
    cu_seg = np.concatenate([[0], np.cumsum(real.sum(axis=1))])
    np.testing.assert_array_equal(cu_seg, qwen.golden[f"vision_{kind}_cu_seqlens"])
    assert (layout.patch[layout.token_slot * qwen.cfg.vision.unit]
            == np.arange(len(layout.token_slot)) * qwen.cfg.vision.unit).all()


def test_partial_windows_follow_transformers(qwen):
    """Grids whose merged size is not a multiple of the window (the golden grids all are):
    the padded layout keeps transformers' window order and boundaries."""
    v = qwen.cfg.vision
    for grid in ([[1, 6, 10]], [[2, 10, 6]], [[1, 2, 2]], [[1, 6, 10], [3, 4, 14], [1, 8, 8]]):
        want = _transformers_windows(grid, v.merge, v.window)
        for got, expected in zip(_windows(Q.window_layout(v, grid), v.window_slots), want):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_vision_tower_matches_transformers(qwen, kind):
    pixels, grid = _vision_inputs(qwen.golden, kind)
    cfg, params, golden = qwen.cfg, qwen.params, qwen.golden
    patch = Q.VisionTower(cfg.vision).apply(
        {"params": params["vision"]}, jnp.asarray(pixels), method=Q.VisionTower.embed)
    np.testing.assert_allclose(patch, golden[f"vision_{kind}_patch_embed"], atol=ATOL)
    blocks = Q.vision_blocks(params, cfg, pixels, grid)
    np.testing.assert_allclose(blocks, golden[f"vision_{kind}_block_outputs"], atol=ATOL)
    embeds = Q.vision_embeds(params, cfg, pixels, grid)
    np.testing.assert_allclose(embeds, golden[f"vision_{kind}_embeds"], atol=ATOL)


def test_padded_windows_stay_inside_their_image(qwen):
    """A grid with partial windows gives the same finite embeddings alone and beside another
    image (its padding slots and the other image never reach its tokens)."""
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((60, 96)).astype(np.float32)           # grid 1 x 6 x 10
    other = qwen.golden["pixel_values_videos"]
    alone = Q.vision_embeds(qwen.params, qwen.cfg, pixels, [[1, 6, 10]])
    both = Q.vision_embeds(qwen.params, qwen.cfg, np.concatenate([pixels, other]),
                           np.concatenate([[[1, 6, 10]], qwen.golden["video_grid_thw"]]))
    assert alone.shape == (15, 48) and np.isfinite(alone).all()
    np.testing.assert_allclose(both[:15], alone, atol=1e-5)
    np.testing.assert_allclose(both[15:], qwen.golden["vision_video_embeds"], atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_rope_index_matches_transformers(qwen, kind):
    inputs = {k: v for k, v in _prompt_inputs(qwen.golden, kind).items()
              if not k.startswith("pixel_values")}
    positions, deltas = Q.rope_index(qwen.cfg, qwen.golden[f"{kind}_input_ids"], **inputs)
    np.testing.assert_array_equal(positions, qwen.golden[f"{kind}_position_ids"])
    np.testing.assert_array_equal(deltas, qwen.golden[f"{kind}_rope_deltas"])


def test_rope_index_of_text_only(qwen):
    positions, deltas = Q.rope_index(qwen.cfg, np.array([[5, 6, 7], [8, 9, 10]]))
    np.testing.assert_array_equal(positions, np.broadcast_to(np.arange(3), (3, 2, 3)))
    np.testing.assert_array_equal(deltas, [[0], [0]])


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers(qwen, kind):
    golden = qwen.golden
    ids = golden[f"{kind}_input_ids"]
    inputs = _prompt_inputs(golden, kind)
    seconds = inputs.pop("second_per_grid_ts", None)
    embeds = Q.input_embeds(qwen.params, qwen.cfg, ids, **inputs)
    np.testing.assert_allclose(embeds, golden[f"{kind}_lm_hidden_states"][0], atol=ATOL)
    out = Q.logits(qwen.params, qwen.cfg, ids, second_per_grid_ts=seconds, **inputs)
    assert out.shape == golden[f"{kind}_logits"].shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, golden[f"{kind}_logits"], atol=ATOL)


def test_placeholder_count_must_match_features(qwen):
    golden = qwen.golden
    ids = np.delete(golden["image_input_ids"], 10, axis=1)      # 23 placeholders, 24 features
    with pytest.raises(ValueError, match="image features and image tokens do not match"):
        Q.input_embeds(qwen.params, qwen.cfg, ids, pixel_values=golden["pixel_values"],
                       image_grid_thw=golden["image_grid_thw"])


def test_in_memory_layout_loads_the_same_params(qwen, tmp_path):
    """transformers' `model.visual.*` / `model.language_model.*` names load identically."""
    weights = read_weights(FIXTURE / "model")
    renamed = {("model." + k if k.startswith("visual.") else
                k.replace("model.", "model.language_model.", 1) if k.startswith("model.")
                else k): w for k, w in weights.items()}
    config = json.loads((FIXTURE / "model" / "config.json").read_text())
    _, params = Q.load(write_checkpoint(tmp_path / "renamed", renamed, config))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(qwen.params)):
        np.testing.assert_array_equal(a, b)


def test_bad_checkpoints_name_the_keys(tmp_path):
    weights = read_weights(FIXTURE / "model")
    config = json.loads((FIXTURE / "model" / "config.json").read_text())
    del weights["visual.blocks.2.norm1.weight"]
    weights["visual.blocks.0.attn.q_norm.weight"] = np.ones(8, np.float32)
    with pytest.raises(CheckpointError) as err:
        Q.load(write_checkpoint(tmp_path / "keys", weights, config))
    assert "missing keys (1): visual.blocks.2.norm1.weight" in str(err.value)
    assert "unknown keys (1): visual.blocks.0.attn.q_norm.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="not a Qwen2.5-VL config"):
        Q.load(write_checkpoint(tmp_path / "arch", weights, dict(config, model_type="llava")))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_matches_transformers(qwen, kind):
    golden = qwen.golden
    out = Q.generate(qwen.params, qwen.cfg, golden[f"{kind}_input_ids"], max_new_tokens=8,
                     **_prompt_inputs(golden, kind))
    np.testing.assert_array_equal(out, golden[f"{kind}_greedy_8"])


def _padded_batch(golden, left: bool = True):
    """The image prompt (35 tokens) and the video prompt (43) as one batch: the image row
    padded to 43 on the left (transformers' batched generation) or the right, with its mask."""
    image, video = golden["image_input_ids"][0], golden["video_input_ids"][0]
    pad = np.full(len(video) - len(image), 7)                  # any id: the mask hides it
    tokens, padding = np.ones_like(image), np.zeros_like(pad)
    ids = np.stack([np.concatenate((pad, image) if left else (image, pad)), video])
    mask = np.stack([np.concatenate((padding, tokens) if left else (tokens, padding)),
                     np.ones_like(video)])
    inputs = {**_prompt_inputs(golden, "image"), **_prompt_inputs(golden, "video")}
    return ids, mask, inputs, (mask[0] == 1)


@pytest.mark.parametrize("left", [True, False])
def test_a_padded_batch_gives_each_prompts_own_logits_and_tokens(qwen, left):
    """transformers' batched inputs: prompts of different lengths, padded, with an
    attention_mask: every row's positions, logits and greedy tokens are those of its prompt
    alone (the golden references)."""
    golden = qwen.golden
    ids, mask, inputs, image_cols = _padded_batch(golden, left)
    seconds = inputs.pop("second_per_grid_ts")
    positions, deltas = Q.rope_index(qwen.cfg, ids, golden["image_grid_thw"],
                                     golden["video_grid_thw"], seconds, attention_mask=mask)
    np.testing.assert_array_equal(positions[:, 0, image_cols], golden["image_position_ids"][:, 0])
    np.testing.assert_array_equal(positions[:, 0, ~image_cols], 1)        # as transformers
    np.testing.assert_array_equal(positions[:, 1], golden["video_position_ids"][:, 0])
    np.testing.assert_array_equal(deltas, [[-18 - 8], [-28]])
    out = Q.logits(qwen.params, qwen.cfg, ids, second_per_grid_ts=seconds,
                   attention_mask=mask, **inputs)
    np.testing.assert_allclose(out[0, image_cols], golden["image_logits"][0], atol=ATOL)
    np.testing.assert_array_equal(out[0, ~image_cols], 0.0)
    np.testing.assert_allclose(out[1], golden["video_logits"][0], atol=ATOL)
    new = Q.generate(qwen.params, qwen.cfg, ids, max_new_tokens=8, attention_mask=mask,
                     second_per_grid_ts=seconds, **inputs)
    np.testing.assert_array_equal(new[:, :ids.shape[1]], ids)
    np.testing.assert_array_equal(new[0, ids.shape[1]:], golden["image_greedy_8"][0, -8:])
    np.testing.assert_array_equal(new[1], golden["video_greedy_8"][0])


def test_a_bad_attention_mask_is_refused(qwen):
    ids = qwen.golden["image_input_ids"]
    with pytest.raises(ValueError, match="0/1 of the input_ids' shape"):
        Q.rope_index(qwen.cfg, ids, attention_mask=np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"rows \[0\] attend to no token"):
        Q.rope_index(qwen.cfg, ids, attention_mask=np.zeros_like(ids))


def test_bfloat16_and_remat(qwen):
    """bf16 compute stays near the float32 reference; remat recomputes each block in the
    backward pass (more matmuls in the gradient's jaxpr, traced only)."""
    cfg, golden = qwen.cfg, qwen.golden
    bf16 = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, dtype="bfloat16"),
                               text=dataclasses.replace(cfg.text, dtype="bfloat16"))
    out = Q.logits(qwen.params, bf16, golden["image_input_ids"], **_prompt_inputs(golden, "image"))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, golden["image_logits"], atol=0.2)
    pixels, grid = _vision_inputs(golden, "image")
    args = Q.layout_arrays(Q.window_layout(cfg.vision, grid))

    def loss(vision_cfg, p):
        return Q.VisionTower(vision_cfg).apply({"params": p}, pixels, *args)[0].mean()

    def matmuls(vision_cfg):
        jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(vision_cfg, p)))(qwen.params["vision"])
        return str(jaxpr).count("dot_general")

    assert matmuls(dataclasses.replace(cfg.vision, remat=True)) > matmuls(cfg.vision)


def test_tied_head_checkpoint(qwen, tmp_path):
    weights = read_weights(FIXTURE / "model")
    del weights["lm_head.weight"]
    config = json.loads((FIXTURE / "model" / "config.json").read_text())
    cfg, params = Q.load(write_checkpoint(tmp_path / "tied", weights,
                                          dict(config, tie_word_embeddings=True)))
    assert cfg.text.tie_embeddings and "lm_head" not in params["text"]
    out = Q.logits(params, cfg, qwen.golden["image_input_ids"][:, :5])
    assert out.shape == (1, 5, 160) and np.isfinite(out).all()


def test_real_scale_config_builds_abstractly():
    """Qwen2.5-VL-7B's params as shapes only: 8,292,166,656, the published checkpoint's."""
    cfg = Q.qwen25vl_7b()
    tree = Q.abstract_params(cfg)
    assert tree["vision"]["blocks"]["attn"]["query"]["kernel"].shape == (32, 1280, 16, 80)
    assert tree["text"]["layers"]["attn"]["key"]["bias"].shape == (28, 4, 128)
    assert count_params(tree) == 8_292_166_656


def test_decoder_lora_equals_merged(qwen):
    """Unmerged q/v LoRA (rate 0) on the last layer gives the merged decoder's logits."""
    cfg, text = qwen.cfg, qwen.params["text"]
    adapters = lora.init_lora(text, rank=2, layers=1, rng=jax.random.key(1))
    adapters = {path: dict(ab, b=0.5 * jax.random.normal(jax.random.key(i), ab["b"].shape))
                for i, (path, ab) in enumerate(sorted(adapters.items()))}
    golden, inputs = qwen.golden, _prompt_inputs(qwen.golden, "image")
    embeds = Q.input_embeds(qwen.params, cfg, golden["image_input_ids"], **inputs)
    positions = jnp.asarray(Q.rope_index(cfg, golden["image_input_ids"],
                                         image_grid_thw=inputs["image_grid_thw"])[0])
    decoder = Q.QwenDecoder(cfg.text, cfg.mrope_section)

    def run(params, hook):
        return decoder.apply({"params": params}, embeds, positions, None, None, hook)[0]

    @jax.jit
    def both(ad):
        hook = lora.decoder_lora(ad, cfg.text.depth, 4.0, 2, rng=jax.random.key(2))
        return run(text, hook), run(lora.merge(text, ad, 4.0, 2), None)

    unmerged, merged = both(adapters)
    assert not np.allclose(merged, golden["image_logits"], atol=1e-3)
    np.testing.assert_allclose(unmerged, merged, atol=1e-5)
