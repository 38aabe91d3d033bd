"""LLaVA-1.5 layout checkpoints end to end, real-scale configs, loader errors.

A tiny LLaVA checkpoint (CLIP vision tower + projector + Llama) is written with safetensors in
both layouts. The reference for generation is built from transformers' Flax models only:
FlaxCLIPVisionModel's hidden_states[-2] without CLS, the projector in plain jax.numpy, and
FlaxLlamaForCausalLM fed those embeddings (its token embedding call intercepted), decoded
greedily by recomputing the whole sequence each step.
"""
from __future__ import annotations

import json
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_helpers import hf_reads_back, random_like

from tvad_jax.models import configs as C
from tvad_jax.models.convert import CheckpointError, to_pytorch_layout, write_checkpoint
from tvad_jax.models.generate import generate
from tvad_jax.models.vlm import (Backbone, abstract_params, load, load_clip, load_llama, load_llava,
                                 with_text)


def _hf_llava_mapping() -> dict[str, str]:
    """transformers' own `LlavaForConditionalGeneration._checkpoint_conversion_mapping` (classic
    layout -> >= 4.52 layout), read from its source: the module itself needs torch."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("transformers.models.llava")
    source = (spec.submodule_search_locations[0] + "/modeling_llava.py")
    tree = ast.parse(open(source).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LlavaForConditionalGeneration":
            for item in node.body:
                if (isinstance(item, ast.Assign)
                        and item.targets[0].id == "_checkpoint_conversion_mapping"):
                    return ast.literal_eval(item.value)
    raise AssertionError("mapping not found")


def _classic_to_new(key: str, mapping: dict[str, str]) -> str:
    for pattern, replacement in mapping.items():
        key, n = re.subn(pattern, replacement, key)
        if n:
            break
    return key


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from transformers import (CLIPVisionConfig, FlaxCLIPVisionModel, FlaxLlamaForCausalLM,
                              LlamaConfig, LlavaConfig)

    vcfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=4, image_size=32, patch_size=8)
    tcfg = LlamaConfig(vocab_size=103, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                       rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    hf_cfg = LlavaConfig(vision_config=vcfg.to_dict(), text_config=tcfg.to_dict(),
                         image_token_index=102, vision_feature_layer=-2,
                         vision_feature_select_strategy="default",
                         architectures=["LlavaForConditionalGeneration"])
    vision = FlaxCLIPVisionModel(vcfg, _do_init=False)
    lm = FlaxLlamaForCausalLM(tcfg, _do_init=False)
    vparams = random_like(vision.params_shape_tree, 11)
    lparams = random_like(lm.params_shape_tree, 3)
    rng = np.random.default_rng(13)
    proj = {"linear_1.weight": 0.2 * rng.standard_normal((48, 32)),
            "linear_1.bias": 0.2 * rng.standard_normal(48),
            "linear_2.weight": 0.2 * rng.standard_normal((48, 48)),
            "linear_2.bias": 0.2 * rng.standard_normal(48)}
    vstate, lstate = to_pytorch_layout(vparams), to_pytorch_layout(lparams)
    hf_reads_back(vision, vstate, vparams)
    hf_reads_back(lm, lstate, lparams)
    classic = {f"vision_tower.{k}": v for k, v in vstate.items()}
    classic.update({f"multi_modal_projector.{k}": v.astype(np.float32) for k, v in proj.items()})
    classic.update({f"language_model.{k}": v for k, v in lstate.items()})
    mapping = _hf_llava_mapping()
    assert len(mapping) == 4
    new = {_classic_to_new(k, mapping): v for k, v in classic.items()}
    assert "model.language_model.layers.0.mlp.up_proj.weight" in new and "lm_head.weight" in new
    config = hf_cfg.to_dict()
    tmp = tmp_path_factory.mktemp("llava")
    dirs = {"classic": write_checkpoint(tmp / "classic", classic, config),
            "new": write_checkpoint(tmp / "new", new, config)}
    # a bfloat16 copy of the classic layout (real checkpoints are often half precision)
    import ml_dtypes

    dirs["bf16"] = write_checkpoint(tmp / "bf16", {k: v.astype(ml_dtypes.bfloat16)
                                                   for k, v in classic.items()}, config)
    return types.SimpleNamespace(dirs=dirs, vision=vision, lm=lm, vparams=vparams,
                                 lparams=lparams, proj=proj, config=config, classic=classic)


PIXELS = np.random.default_rng(21).standard_normal((1, 32, 32, 3)).astype(np.float32)
PREFIX = np.array([1, 7, 19], np.int32)          # "USER:" before the image
PROMPT = np.array([40, 41, 42, 43, 44], np.int32)  # the question after it
NEW = 6


def _reference_tokens(llava) -> list[int]:
    """Image + prompt -> greedy tokens with transformers' Flax models (full recompute)."""
    hidden = jax.jit(lambda p: llava.vision(PIXELS.transpose(0, 3, 1, 2), params=p,
                                            output_hidden_states=True).hidden_states[-2])(
        llava.vparams)[:, 1:]                                                   # 1, 16, 32
    p = {k: jnp.asarray(v, jnp.float32) for k, v in llava.proj.items()}
    h = jax.nn.gelu(hidden @ p["linear_1.weight"].T + p["linear_1.bias"], approximate=False)
    image = h @ p["linear_2.weight"].T + p["linear_2.bias"]                      # 1, 16, 48
    table = llava.lparams["model"]["embed_tokens"]["embedding"]
    embeds = jnp.concatenate([table[PREFIX][None], image, table[PROMPT][None]], axis=1)
    size = embeds.shape[1] + NEW

    @jax.jit
    def logits(embeds, mask):
        def interceptor(next_fun, args, kwargs, context):
            if context.module.name == "embed_tokens" and context.method_name == "__call__":
                return embeds
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            return llava.lm(input_ids=jnp.zeros(mask.shape, jnp.int32), attention_mask=mask,
                            params=llava.lparams).logits

    tokens, n = [], embeds.shape[1]
    padded = jnp.zeros((1, size, 48)).at[:, :n].set(embeds)
    for _ in range(NEW):
        mask = (jnp.arange(size) < n)[None].astype(jnp.int32)
        token = int(jnp.argmax(logits(padded, mask)[0, n - 1]))
        tokens.append(token)
        padded = padded.at[0, n].set(table[token])
        n += 1
        if token == 2:
            break
    return tokens


def test_both_layouts_load_the_same_params(llava):
    cfg_a, a = load_llava(llava.dirs["classic"])
    cfg_b, b = load_llava(llava.dirs["new"])
    assert cfg_a == cfg_b
    assert cfg_a.text is None and cfg_a.projector_dim == 48 and cfg_a.vision_feature_layer == -2
    assert cfg_a.decoder.width == 48 and cfg_a.vision.depth == 3
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    # the generic loader dispatches on config.json
    assert load(llava.dirs["new"])[0] == cfg_a
    # half-precision checkpoints become float32 params
    _, c = load_llava(llava.dirs["bf16"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(c))
    np.testing.assert_allclose(c["decoder"]["embed"], a["decoder"]["embed"], rtol=1e-2)


def test_image_and_prompt_generate_like_transformers(llava):
    cfg, params = load_llava(llava.dirs["new"])
    bb = Backbone(cfg)

    @jax.jit
    def prompt_embeds(params, pixels, prefix, prompt):
        video, tokens = bb.apply({"params": params}, pixels,
                                 method=Backbone.encode_video_and_tokens)
        text = [bb.apply({"params": params}, ids[None], method=Backbone.embed_tokens)
                for ids in (prefix, prompt)]
        return video, jnp.concatenate([text[0], tokens, text[1]], axis=1)

    # one image as a 2-frame clip of identical frames: T' = 1, N = 16 visual tokens
    clip = np.repeat(PIXELS[:, None], 2, axis=1)
    video, embeds = prompt_embeds(params, clip, PREFIX, PROMPT)
    assert embeds.shape == (1, 3 + 16 + 5, 48)
    assert [h.shape for h in video.hidden] == [(1, 1, 17, 32)] * len(cfg.vision.layer_indices)
    tokens, cache = generate(params["decoder"], cfg.decoder, embeds, None, NEW,
                             jax.random.key(0))
    want = _reference_tokens(llava)
    assert tokens.shape == (1, NEW) and len(set(want)) > 3   # a non-degenerate answer
    assert list(np.asarray(tokens[0, :len(want)])) == want
    assert int(cache["lengths"][0]) == embeds.shape[1] + len(want)


def test_real_scale_configs_build_abstractly():
    """LLaVA-1.5-7B: parameter counts of the published model, without allocating."""
    boxed = abstract_params(C.llava15_7b(), boxed=True)
    counts = {k: C.count_params(v) for k, v in boxed.items()}
    assert counts["decoder"] == 6_738_939_904            # Vicuna-7B with 32064 tokens
    assert counts["projector"] == 20_979_712
    vision = C.clip_vit_l14_336_vision()
    # ours adds: a second temporal tap of the patch kernel, the temporal embedding, and
    # CLIP's visual projection (LLaVA keeps no projection)
    extra = 14 * 14 * 3 * 1024 + vision.max_tubelets * 1024 + 1024 * 768
    assert counts["vision"] - extra == 303_507_456       # CLIPVisionModel ViT-L/14-336
    assert counts["decoder"] + counts["projector"] + counts["vision"] - extra == 7_063_427_072
    assert C.count_params(abstract_params(C.clip_vit_l14_336())["text"]) == 123_650_304
    assert C.count_params(abstract_params(C.BackboneConfig(decoder=C.llama_7b()))) == \
        6_738_415_616
    specs = nn.get_partition_spec(boxed)
    assert specs["decoder"]["layers"]["attn"]["query"]["kernel"] == \
        jax.sharding.PartitionSpec(None, "embed", "heads", "kv")
    assert specs["decoder"]["lm_head"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")
    assert specs["vision"]["layers"]["mlp"]["fc1"]["kernel"] == \
        jax.sharding.PartitionSpec(None, "embed", "mlp")
    assert C.param_bytes(boxed) == 4 * sum(counts.values())


def test_with_text_adds_a_clip_text_tower(llava, tmp_path):
    from transformers import CLIPConfig, FlaxCLIPModel

    hf_cfg = CLIPConfig(vision_config=llava.config["vision_config"],
                        text_config=dict(hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         vocab_size=99, max_position_embeddings=16),
                        projection_dim=16)
    model = FlaxCLIPModel(hf_cfg, _do_init=False)
    clip_dir = write_checkpoint(tmp_path / "clip", to_pytorch_layout(
        random_like(model.params_shape_tree, 3)), hf_cfg.to_dict())
    cfg, params = with_text(load_llava(llava.dirs["new"]), load_clip(clip_dir))
    assert cfg.text.width == 32 and cfg.embed_dim == 16 and cfg.decoder is not None
    want = jax.tree.map(lambda x: x.shape, abstract_params(cfg))
    assert jax.tree.map(lambda x: x.shape, params) == want


def test_bad_checkpoint_directories(llava, tmp_path):
    config, classic = llava.config, llava.classic
    with pytest.raises(CheckpointError, match="checkpoint directory not found|missing config"):
        load_llava(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_llava(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"unknown architecture \(model_type='blip_2'"):
        load(write_checkpoint(tmp_path / "arch", classic, {"model_type": "blip_2"}))
    with pytest.raises(CheckpointError,
                       match="load_llama expects llama, the checkpoint is 'llava'"):
        load_llama(llava.dirs["classic"])
    no_vision = {k: v for k, v in classic.items() if not k.startswith("vision_tower.")}
    with pytest.raises(CheckpointError, match="no LLaVA vision tower keys"):
        load_llava(write_checkpoint(tmp_path / "novision", no_vision, config))
    bad = dict(classic)
    bad["multi_modal_projector.linear_2.weight"] = np.zeros((48, 40), np.float32)
    del bad["language_model.model.norm.weight"]
    bad["language_model.model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as err:
        load_llava(write_checkpoint(tmp_path / "keys", bad, config))
    assert "missing keys (1): language_model.model.norm.weight" in str(err.value)
    assert "unknown keys (1): language_model.model.extra.weight" in str(err.value)
    del bad["language_model.model.extra.weight"]
    bad["language_model.model.norm.weight"] = classic["language_model.model.norm.weight"]
    with pytest.raises(CheckpointError, match=r"projector/fc2/kernel: checkpoint \(40, 48\), "
                       r"model \(48, 48\)"):
        load_llava(write_checkpoint(tmp_path / "shape", bad, config))


def test_token_pool_averages_patch_features_before_projecting():
    from tvad_jax.models.configs import tiny_backbone
    from tvad_jax.models.vlm import Backbone, init_params

    cfg = tiny_backbone(token_pool=2)                # 32 px, 8 px patches: 4 x 4 grid
    params = init_params(cfg, jax.random.key(0))
    pixels = jax.random.normal(jax.random.key(1), (1, 2, 32, 32, 3))
    model = Backbone(cfg)
    tokens = model.apply({"params": params}, pixels, method=Backbone.visual_tokens)
    hidden = model.apply({"params": params}, pixels, method=Backbone.encode_video)
    layer = model.apply({"params": params}, pixels, (cfg.vision_feature_layer,),
                        method=lambda m, x, layers: m.vision(x, layers=layers)).hidden[0]
    patches = np.asarray(layer)[:, :, 1:].reshape(1, 1, 4, 4, -1)
    pooled = patches.reshape(1, 1, 2, 2, 2, 2, -1).mean(axis=(3, 5)).reshape(1, 1, 4, -1)
    expected = model.apply({"params": params}, jnp.asarray(pooled), method=Backbone.project)
    assert tokens.shape == (1, 4, cfg.decoder.width) and hidden.hidden
    np.testing.assert_allclose(np.asarray(tokens), np.asarray(expected).reshape(1, 4, -1),
                               atol=1e-5)
