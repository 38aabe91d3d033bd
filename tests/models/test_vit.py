"""Video ViT: parity with transformers' FlaxCLIPModel vision tower on the same checkpoint.

The checkpoint is a tiny random CLIP written in PyTorch layout (safetensors + config.json).
Transformers' own PyTorch->Flax converter reads it back to exactly the HF Flax params (so the
file is what HF expects), HF's Flax model runs on those, and our loader reads the same file.
"""
from __future__ import annotations

import dataclasses
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_helpers import hf_reads_back, random_like

from tvad_jax.models import configs as C
from tvad_jax.models.convert import to_pytorch_layout, write_checkpoint
from tvad_jax.models.vit import VisionTransformer
from tvad_jax.models.vlm import Backbone, load_clip

ATOL = 2e-5


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(directory, HF outputs, pixels [2, H, W, 3], ids, mask) of a tiny random CLIP."""
    from transformers import CLIPConfig, FlaxCLIPModel

    hf_cfg = CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, vocab_size=99, max_position_embeddings=16,
                         eos_token_id=98, pad_token_id=0),
        projection_dim=16)
    model = FlaxCLIPModel(hf_cfg, _do_init=False)
    params = random_like(model.params_shape_tree, seed=0)
    directory = tmp_path_factory.mktemp("clip")
    write_checkpoint(directory, to_pytorch_layout(params), hf_cfg.to_dict())
    hf_reads_back(model, directory, params)
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    ids = np.array([[5, 17, 9, 98, 0, 0, 0], [4, 98, 30, 7, 97, 3, 1]], np.int32)
    mask = np.array([[1, 1, 1, 1, 0, 0, 0], [1] * 7], np.int32)
    out = jax.jit(lambda p: model(input_ids=ids, pixel_values=pixels.transpose(0, 3, 1, 2),
                                  attention_mask=mask, params=p, output_hidden_states=True)
                  )(params)
    return types.SimpleNamespace(dir=directory, out=out, pixels=pixels, ids=ids, mask=mask,
                                 hf_cfg=hf_cfg)


@pytest.fixture(scope="module")
def ours(clip):
    cfg, params = load_clip(clip.dir, feature_layers=(0, 1, -1), attention="frame",
                            max_frames=8)
    return cfg, params


def _video(pixels):
    """Two clips of 4 frames: [a, a, b, b] and [b, b, a, a] -> tubelets (a, b) and (b, a)."""
    a, b = pixels
    return jnp.asarray(np.stack([np.stack([a, a, b, b]), np.stack([b, b, a, a])]))


@pytest.fixture(scope="module")
def frame_out(clip, ours):
    """Our frame-attention outputs on `_video(pixels)` ([2 clips, 4 frames])."""
    cfg, params = ours
    encode = jax.jit(lambda p, x: Backbone(cfg).apply({"params": p}, x,
                                                      method=Backbone.encode_video))
    return encode(params, _video(clip.pixels))


def test_hidden_states_match_hf(clip, ours, frame_out):
    cfg, _ = ours
    out, hf = frame_out, clip.out.vision_model_output
    assert len(out.hidden) == 3 and cfg.vision.layer_indices == (0, 1, 2)
    for ours_h, index in zip(out.hidden, (0, 1, 2)):
        assert ours_h.shape == (2, 2, 17, 32)
        ref = np.asarray(hf.hidden_states[index])                # [2 images, 17, 32]
        np.testing.assert_allclose(ours_h[:, 0], ref, atol=ATOL)  # tubelet 0: a, b
        np.testing.assert_allclose(ours_h[:, 1], ref[::-1], atol=ATOL)
    np.testing.assert_allclose(out.pooled[:, 0], hf.pooler_output, atol=ATOL)
    # final = post-LN of the last layer for every token; its CLS is HF's pooler output
    np.testing.assert_allclose(out.final[:, 0, 0], hf.pooler_output, atol=ATOL)
    embeds = out.embeds[:, 0] / jnp.linalg.norm(out.embeds[:, 0], axis=-1, keepdims=True)
    np.testing.assert_allclose(embeds, clip.out.image_embeds, atol=ATOL)


def test_tubelet_embedding_is_inflated(ours):
    cfg, params = ours
    kernel = params["vision"]["patch_embed"]
    assert kernel.shape == (2, 8, 8, 3, 32)
    np.testing.assert_array_equal(kernel[0], kernel[1])
    np.testing.assert_array_equal(params["vision"]["time_embed"], np.zeros((4, 32)))


def test_joint_attention_mixes_tubelets(clip, ours, frame_out):
    cfg, params = ours
    joint = VisionTransformer(dataclasses.replace(cfg.vision, attention="joint"), 16)
    run_joint = jax.jit(lambda x: joint.apply({"params": params["vision"]}, x))
    video = _video(clip.pixels)
    out = run_joint(video)
    np.testing.assert_allclose(out.hidden[0], frame_out.hidden[0], atol=1e-6)  # embeddings
    assert float(jnp.abs(out.hidden[2] - frame_out.hidden[2]).max()) > 1e-3  # tubelets mix
    # a clip of one tubelet: joint attention is CLIP's attention over one frame
    single = run_joint(video[:, :2])
    np.testing.assert_allclose(single.hidden[2][:, 0], clip.out.vision_model_output
                               .hidden_states[2], atol=ATOL)


def test_bfloat16_close_to_float32(clip, ours, frame_out):
    cfg, params = ours
    bf16 = VisionTransformer(dataclasses.replace(cfg.vision, dtype="bfloat16"), 16)
    out = jax.jit(lambda p, x: bf16.apply({"params": p}, x))(params["vision"],
                                                               _video(clip.pixels))
    assert out.final.dtype == jnp.bfloat16
    assert params["vision"]["patch_embed"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.final, np.float32), frame_out.final, atol=0.1)


def test_feature_layers_fractions_and_indices():
    assert C.resolve_layers((1 / 32, 0.25, 0.5, 1.0), 32) == (1, 8, 16, 32)
    assert C.resolve_layers((1 / 32, 0.25, 0.5, 1.0), 24) == (1, 6, 12, 24)
    assert C.resolve_layers((0, 3, -1, -2), 6) == (0, 3, 6, 5)
    for bad in ((0.0,), (1.5,), (7,), (-8,), ("1",), (True,)):
        with pytest.raises(ValueError):
            C.resolve_layers(bad, 6)
    with pytest.raises(ValueError, match="attention"):
        C.tiny_vision(attention="global")


def test_input_shape_errors(ours):
    cfg, params = ours
    vit = VisionTransformer(cfg.vision)
    with pytest.raises(ValueError, match="multiple of 2"):
        jax.eval_shape(lambda: vit.apply({"params": params["vision"]},
                                         jnp.zeros((1, 3, 32, 32, 3))))
    with pytest.raises(ValueError, match="max_frames"):
        jax.eval_shape(lambda: vit.apply({"params": params["vision"]},
                                         jnp.zeros((1, 10, 32, 32, 3))))


def _conv_stride2(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 stride-2 "SAME" convolution by loops: [H, W, C_in] -> [H/2, W/2, C_out] (even H, W:
    one row and column of zero padding after, none before)."""
    h, w, _ = x.shape
    padded = np.pad(x, ((0, 1), (0, 1), (0, 0)))
    out = np.zeros((h // 2, w // 2, kernel.shape[-1]))
    for i in range(h // 2):
        for j in range(w // 2):
            out[i, j] = np.einsum("abc,abcd->d", padded[2 * i:2 * i + 3, 2 * j:2 * j + 3], kernel)
    return out + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


@pytest.mark.parametrize("spans", [(1,), (1, 3)])
def test_conv_stem_matches_loops_and_sees_motion(spans):
    cfg = C.tiny_vision(stem="conv", motion_spans=spans)     # P 8: 3 convs, 8 -> 16 -> 32
    vit = VisionTransformer(cfg)
    rng = np.random.default_rng(0)
    still = np.repeat(rng.random((1, 1, 32, 32, 3), np.float32), 4, axis=1)
    moving = np.stack([np.roll(still[0, 0], k, axis=1) for k in range(4)])[None]  # 1 px/frame
    params = nn.meta.unbox(vit.init(jax.random.key(0), jnp.asarray(still))["params"])
    params = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32),
                          params)                            # nonzero biases too
    tokens = np.asarray(vit.apply({"params": params}, jnp.asarray(moving),
                                  method=VisionTransformer._patch_tokens))
    assert tokens.shape == (1, 2, 4, 4, cfg.width)
    frames = moving[0].astype(np.float64)
    differences = [frames - frames[[max(t - span, 0) for t in range(4)]] for span in spans]
    per_frame = []
    for frame in np.concatenate([frames] + differences, axis=-1):
        x = frame
        for i in range(3):
            conv = params[f"stem_{i}"]
            x = _conv_stride2(x if i == 0 else _gelu(x), np.asarray(conv["kernel"]),
                              np.asarray(conv["bias"]))
        per_frame.append(x)                                  # [4, 4, D]
    per_frame = np.stack(per_frame).reshape(2, 2, 4, 4, cfg.width)     # [T', t, h, w, D]
    tubelets = np.concatenate([per_frame[:, 0], per_frame[:, 1]], axis=-1)
    expected = tubelets @ np.asarray(params["stem_proj"]["kernel"])
    np.testing.assert_allclose(tokens[0], expected, rtol=1e-4, atol=1e-4)
    # A still clip's tubelets embed alike; the same frames in motion do not.
    still_tokens = np.asarray(vit.apply({"params": params}, jnp.asarray(still),
                                        method=VisionTransformer._patch_tokens))
    np.testing.assert_allclose(still_tokens[0, 0], still_tokens[0, 1], atol=1e-5)
    assert np.abs(tokens[0, 1] - still_tokens[0, 1]).max() > 0.1


def test_conv_stem_config_errors():
    with pytest.raises(ValueError, match="power-of-2"):
        C.tiny_vision(stem="conv", patch_size=14, image_size=28)
    with pytest.raises(ValueError, match="stem"):
        C.tiny_vision(stem="linear")
    with pytest.raises(ValueError, match="motion_spans"):
        C.tiny_vision(stem="conv", motion_spans=(1, 0))
    with pytest.raises(ValueError, match="needs stem 'conv'"):
        C.tiny_vision(motion_spans=(4,))
