"""`tvad backbone import` end to end on the shared tiny Qwen2.5-VL checkpoint: import (with a
chat template), then `tvad train tvad` (stage 1, stage 2 with LoRA on q/v) and `tvad detect`
on the imported folder; a chat template kept or refused; bad sources fail in one line before
anything is written. LLaVA-1.5 + CLIP and CLIP + Llama on tiny random directories: vision
tower, E_t, prompt tokens and greedy decoding of the imported folder against the loaders and
transformers' CLIP text tower."""
from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from byte_tokenizers import CHATML, VIDEO, byte_tokenizer, chatml, chatml_tokenizer
from hf_helpers import random_like
from shared_data import qwen_tiny_dir

from tvad_jax.data.dialogues import chat_format
from tvad_jax.models import backbone_io, vlm
from tvad_jax.models.convert import to_pytorch_layout, write_checkpoint
from tvad_jax.models.qwen_backbone import QwenBackboneConfig
from tvad_jax.models.tokenizer import ANOMALY_TOKENS, VIDEO_TOKEN, load_tokenizer

QWEN = qwen_tiny_dir() / "model"


@pytest.mark.slow   # ~2 min: T-VAD stages on the tiny Qwen2.5-VL; the imports have fast tests
def test_import_then_train_and_detect(tvad, tiny_backbone, tmp_path):
    """Imported at 32 x 48 frames (the processor keeps a video's aspect), prepared at that
    size and resized bicubically as its processor does: both stages, then detection on a video
    of another size, seen as the model's frames were."""
    cfg, tokenizer_dir = tiny_backbone
    tokenizer = load_tokenizer(tokenizer_dir)       # speaking ChatML with its own markers
    tokenizer.chat_template = chatml("<s>", "</s>", VIDEO_TOKEN)
    tokenizer.save_pretrained(str(tmp_path / "chat"))
    out = tmp_path / "qwen"
    result = tvad("backbone", "import", QWEN, out, "--tokenizer", tmp_path / "chat",
                  "--image-size", "32x48")
    assert result.code == 0, result.err
    assert "(32x48 px frames)" in result.out
    assert "prepare.height=32 prepare.width=48 prepare.resample=bicubic" in result.out
    bcfg, params, tokenizer = backbone_io.load_backbone(out)
    assert isinstance(bcfg, QwenBackboneConfig) and bcfg.vision.grid == (8, 12)
    assert bcfg.decoder.vocab_size == len(tokenizer) > 160          # the table grew
    assert bcfg.decoder.eos_token_id == tokenizer.eos_token_id
    assert all(t in tokenizer.get_vocab() for t in ANOMALY_TOKENS)
    assert chat_format(tokenizer).prefix                            # the template's
    np.testing.assert_allclose(params["decoder"]["embed"][160:],     # new rows: the mean row
                               np.broadcast_to(params["decoder"]["embed"][:160].mean(0),
                                               (len(tokenizer) - 160, 48)), atol=1e-3)

    args = ["--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
            f"runs_dir={tmp_path / 'runs'}", f"tvad.backbone={out}", "prepare.height=32",
            "prepare.width=48", "prepare.resample=bicubic",
            f"prepare.out_dir={tmp_path / 'prepared'}",
            "tvad.stage1.train.loop.steps=2", "tvad.stage2.phase_a.loop.steps=2",
            "tvad.stage2.phase_b.loop.steps=2"]
    result = tvad("train", "tvad", "--run-dir", tmp_path / "run", *args)
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "stage2-B" / "summary.json").read_text())
    assert summary["status"] == "completed"
    model = json.loads((tmp_path / "run" / "model" / "tvad.json").read_text())
    assert model["tvad"]["ahd"]["grid"] == [8, 12] and model["resample"] == "bicubic"
    result = tvad("eval", "run", tmp_path / "run", "--plot")       # heatmaps on 32 x 48 frames
    assert result.code == 0, result.err
    scores = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    assert 0 <= scores["micro_auc"] <= 1 and 0 <= scores["rbdc"] <= 1
    assert list((tmp_path / "run").glob("heatmap_*.png"))
    video = sorted(Path(cfg.synth.out_dir).glob("Scene*/*.mp4"))[0]
    result = tvad("detect", tmp_path / "run" / "model", video, "--no-overlay",
                  "--max-new-tokens", 4, "--runs-root", tmp_path / "detect")
    assert result.code == 0, result.err
    line, = (tmp_path / "detect").glob("*/detections.jsonl")
    row = json.loads(line.read_text())
    assert row["frames"] == 32 and 0 <= row["max_score"] <= 1 and row["answer"] is not None


def test_bad_sources_fail_in_one_line_and_write_nothing(tvad, tmp_path, capsys):
    out = tmp_path / "out"
    tvad("backbone", "import", tmp_path / "absent", out).failed_with("absent")
    tvad("backbone", "import", QWEN, QWEN, out).failed_with("a second qwen2_5_vl")
    tvad("backbone", "import", QWEN, out).failed_with(str(QWEN), "no tokenizer.json")
    tvad("backbone", "import", QWEN, out, "--tokenizer", backbone_io.SHIPPED_DIR,
         "--image-size", 50).failed_with("image_size 50 is not a multiple")
    with pytest.raises(SystemExit) as usage:                   # argparse: exit 2, one line
        tvad("backbone", "import", QWEN, out, "--image-size", "32x")
    assert usage.value.code == 2
    assert "argument --image-size: '32x' is neither a side nor HEIGHTxWIDTH" in \
        capsys.readouterr().err
    tvad("backbone", "import", QWEN, out, "--tokenizer", backbone_io.SHIPPED_DIR,
         "--image-size", "32x44").failed_with("image_size (32, 44) is not a multiple")
    assert not out.exists()
    out.mkdir()
    tvad("backbone", "import", QWEN, out).failed_with(str(out), "exists")


def test_import_keeps_a_chat_template_it_can_read_and_refuses_one_it_cannot(tvad, tmp_path):
    """A ChatML tokenizer's template survives the import and gives the dialogue its turns; a
    template without a video item fails in one line naming the tokenizer, nothing written,
    before any weight is read (a checkpoint without its weights fails on the template), and
    imports with --no-chat-template as plain turns."""
    chatml_tokenizer(directory=tmp_path / "chatml")
    out = tmp_path / "qwen"
    result = tvad("backbone", "import", QWEN, out, "--tokenizer", tmp_path / "chatml",
                  "--image-size", 32)
    assert result.code == 0, result.err
    assert "dialogue in the chat template" in result.out
    tokenizer = backbone_io.load_backbone(out)[2]
    fmt = chat_format(tokenizer)
    assert tokenizer.decode(list(fmt.prefix)) == \
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n"
    assert tokenizer.decode(list(fmt.end)) == "<|im_end|>"

    chatml_tokenizer(CHATML.replace(VIDEO, ""), directory=tmp_path / "textonly")
    out = tmp_path / "plain"
    tvad("backbone", "import", QWEN, out, "--tokenizer", tmp_path / "textonly",
         "--image-size", 32).failed_with(str(tmp_path / "textonly"), "--no-chat-template")
    assert not out.exists()
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_bytes((QWEN / "config.json").read_bytes())
    tvad("backbone", "import", tmp_path / "config_only", out, "--tokenizer",
         tmp_path / "textonly").failed_with(str(tmp_path / "textonly"), "--no-chat-template")
    result = tvad("backbone", "import", QWEN, out, "--tokenizer", tmp_path / "textonly",
                  "--image-size", 32, "--no-chat-template")
    assert result.code == 0, result.err
    tokenizer = backbone_io.load_backbone(out)[2]
    assert tokenizer.chat_template is None
    assert chat_format(tokenizer).opening == (tokenizer.bos_token_id,)   # <|im_start|>


def test_import_takes_a_processors_chat_template_only_when_given(tvad, tmp_path):
    """A tokenizer without a template beside a processor's chat_template.json (as Hugging Face
    repositories keep it): the import says it is not used and speaks plain turns; with
    --chat-template it speaks it; a file that is not a template fails naming it."""
    source = tmp_path / "tokenizer"
    chatml_tokenizer(None, directory=source)
    (source / "chat_template.json").write_text(json.dumps({"chat_template": CHATML}))
    result = tvad("backbone", "import", QWEN, tmp_path / "plain", "--tokenizer", source,
                  "--image-size", 32)
    assert result.code == 0, result.err
    assert f"{source / 'chat_template.json'} (a processor's) is not used" in result.out
    assert backbone_io.load_backbone(tmp_path / "plain")[2].chat_template is None
    result = tvad("backbone", "import", QWEN, tmp_path / "chat", "--tokenizer", source,
                  "--image-size", 32, "--chat-template", source / "chat_template.json")
    assert result.code == 0, result.err
    tokenizer = backbone_io.load_backbone(tmp_path / "chat")[2]
    assert tokenizer.decode(list(chat_format(tokenizer).closing)) == \
        "<|im_end|>\n<|im_start|>assistant\n"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"template": CHATML}))
    tvad("backbone", "import", QWEN, tmp_path / "none", "--tokenizer", source,
         "--chat-template", bad).failed_with(str(bad), '{"chat_template"')
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------ LLaVA + CLIP, CLIP + Llama
# Tiny random Hugging Face directories written like tests/models/test_vlm.py's (transformers'
# Flax models, PyTorch layout), each with a byte-level tokenizer laid out like the real one:
# Llama's <unk> <s> </s> first, <s> written before every text (LLaVA-1.5 adds <image> and <pad>
# at the end of a padded table), CLIP's <|startoftext|> <|endoftext|> last with its legacy
# config ids (bos 0, eos 2, pad 1) as in openai/clip-vit-*.

FRAMES = np.random.default_rng(5).standard_normal((1, 2, 32, 32, 3)).astype(np.float32)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              image_size=32, patch_size=8)


def _llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                       architectures=["LlamaForCausalLM"])


def _f16(tree):
    """What a backbone folder stores (float16) read back as float32."""
    return jax.tree.map(lambda x: np.asarray(x).astype(np.float16).astype(np.float32), tree)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny CLIP, LLaVA-1.5 (transformers >= 4.52 layout) and Llama directories."""
    from transformers import (CLIPConfig, FlaxCLIPModel, FlaxCLIPVisionModel, FlaxLlamaForCausalLM,
                              LlavaConfig)

    root = tmp_path_factory.mktemp("hf")
    llama_words = ("<unk>", "<s>", "</s>")
    clip_tok = byte_tokenizer(last=("<|startoftext|>", "<|endoftext|>"),
                              ends=("<|startoftext|>", "<|endoftext|>"), directory=root / "clip",
                              bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    clip_cfg = CLIPConfig(vision_config=VISION, projection_dim=16, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=len(clip_tok), max_position_embeddings=96, bos_token_id=0, eos_token_id=2,
        pad_token_id=1))
    clip = FlaxCLIPModel(clip_cfg, _do_init=False)
    clip_params = random_like(clip.params_shape_tree, 1)
    write_checkpoint(root / "clip", to_pytorch_layout(clip_params), clip_cfg.to_dict())

    llama_tok = byte_tokenizer(llama_words, ends=("<s>", None), directory=root / "llama",
                               unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    llama_cfg = _llama_config(len(llama_tok))             # the table grows for the new tokens
    llama = FlaxLlamaForCausalLM(llama_cfg, _do_init=False)
    write_checkpoint(root / "llama", to_pytorch_layout(random_like(llama.params_shape_tree, 2)),
                     llama_cfg.to_dict())

    llava_tok = byte_tokenizer(llama_words, ("<image>", "<pad>"), ends=("<s>", None),
                               directory=root / "llava", unk_token="<unk>", bos_token="<s>",
                               eos_token="</s>", pad_token="<pad>")
    text_cfg = _llama_config(len(llava_tok) + 8)           # padded: room for the new tokens
    vision = FlaxCLIPVisionModel(clip_cfg.vision_config, _do_init=False)
    lm = FlaxLlamaForCausalLM(text_cfg, _do_init=False)
    rng = np.random.default_rng(4)
    weights = {f"model.vision_tower.{k}": v for k, v in to_pytorch_layout(
        random_like(vision.params_shape_tree, 3)).items()}     # not CLIP's own vision tower
    lstate = to_pytorch_layout(random_like(lm.params_shape_tree, 4))
    weights["lm_head.weight"] = lstate.pop("lm_head.weight")
    weights.update({f"model.language_model.{k.removeprefix('model.')}": v
                    for k, v in lstate.items()})
    for name, shape in (("linear_1.weight", (48, 32)), ("linear_1.bias", (48,)),
                        ("linear_2.weight", (48, 48)), ("linear_2.bias", (48,))):
        weights[f"model.multi_modal_projector.{name}"] = (
            0.2 * rng.standard_normal(shape)).astype(np.float32)
    llava_cfg = LlavaConfig(vision_config=clip_cfg.vision_config.to_dict(),
                            text_config=text_cfg.to_dict(),
                            image_token_index=llava_tok.convert_tokens_to_ids("<image>"),
                            architectures=["LlavaForConditionalGeneration"])
    write_checkpoint(root / "llava", weights, llava_cfg.to_dict())
    return types.SimpleNamespace(root=root, clip_cfg=clip_cfg, clip_params=clip_params,
                                 clip_tok=clip_tok, llama_len=len(llama_tok),
                                 llava_vocab=text_cfg.vocab_size)


def _clip_text_reference(hf_dirs, tcfg):
    """[2, D_t] class features by transformers' FlaxCLIPTextModel on the CLIP directory's
    float16-rounded weights, with the CLIP tokenizer's own ids and attention mask."""
    from transformers import FlaxCLIPTextModel

    from tvad_jax.models.ahd import class_features, flatten_prompts, prompt_templates

    sentences, groups = flatten_prompts(*prompt_templates(tcfg.anomalies, tcfg.normals))
    batch = hf_dirs.clip_tok(sentences, padding="max_length", max_length=96,
                             return_tensors="np")
    text = FlaxCLIPTextModel(hf_dirs.clip_cfg.text_config, _do_init=False)
    hidden = jax.jit(lambda p: text(batch["input_ids"], batch["attention_mask"], params=p)
                     .last_hidden_state)({"text_model": _f16(hf_dirs.clip_params["text_model"])})
    return class_features(hidden, batch["attention_mask"], groups)


def _check_imported(hf_dirs, out, reference, decoder_ref, vocab):
    """The folder at `out` against the project's loaders (`reference`: (cfg, params) of the
    vision side; `decoder_ref`: the decoder params) and transformers' CLIP text tower; returns
    the folder's params."""
    from tvad_jax.models.family import LLAVA
    from tvad_jax.models.generate import generate
    from tvad_jax.models.tvad import TVADConfig, class_text_features, special_token_ids

    bcfg, params, tokenizer = backbone_io.load_backbone(out)
    text_tokenizer = backbone_io.load_text_tokenizer(out)
    assert bcfg.token_pool == 2 and bcfg.text.width == 32 and bcfg.embed_dim == 16
    # the vision tower: what the project's loader gives from the same directory
    rcfg, rparams = reference
    hidden, visual = jax.jit(lambda p: LLAVA.encode(bcfg, p, FRAMES))(params)
    model = vlm.Backbone(dataclasses.replace(rcfg, token_pool=2))
    if rcfg.projector_dim is None:                       # CLIP: no projector to compare
        out_ref = jax.jit(lambda p: model.apply({"params": p}, FRAMES,
                                                method=vlm.Backbone.encode_video))(_f16(rparams))
    else:
        out_ref, visual_ref = jax.jit(lambda p: model.apply(
            {"params": p}, FRAMES, method=vlm.Backbone.encode_video_and_tokens))(_f16(rparams))
        np.testing.assert_allclose(visual, visual_ref, atol=1e-5)
    np.testing.assert_allclose(hidden, np.stack(out_ref.hidden, 1), atol=1e-5)
    assert visual.shape == (1, 4, 48)                    # 4 x 4 patches pooled 2 x 2
    # E_t: the CLIP text tower with CLIP's tokenizer
    assert text_tokenizer.bos_token == "<|startoftext|>"
    tcfg = TVADConfig(anomalies=("fighting", "running"), normals=("walking",))
    text = jax.jit(lambda p: class_text_features(tcfg, bcfg, p, text_tokenizer))(params)
    np.testing.assert_allclose(text, _clip_text_reference(hf_dirs, tcfg), atol=1e-4)
    # the decoder: the prompt tokens are in the tokenizer and in the embedding table
    special = special_token_ids(tokenizer)
    assert bcfg.decoder.vocab_size == vocab >= len(tokenizer) > special.max()
    assert bcfg.decoder.eos_token_id == tokenizer.eos_token_id == 2
    assert bcfg.decoder.bos_token_id == tokenizer.bos_token_id == 1
    assert bcfg.decoder.pad_token_id == tokenizer.pad_token_id is not None
    dec = params["decoder"]
    old = decoder_ref["embed"].shape[0]
    assert dec["embed"].shape == (vocab, 48) and dec["lm_head"]["kernel"].shape == (48, vocab)
    np.testing.assert_array_equal(dec["embed"][:old], _f16(decoder_ref["embed"]))
    np.testing.assert_array_equal(dec["layers"]["mlp"]["up"]["kernel"],
                                  _f16(decoder_ref["layers"]["mlp"]["up"]["kernel"]))
    if vocab > old:                                      # grown rows: the mean row
        np.testing.assert_allclose(dec["embed"][old:], np.broadcast_to(
            decoder_ref["embed"].mean(0), (vocab - old, 48)), atol=1e-3)
    # a short greedy answer after the visual tokens and the three prompt tokens
    ids = np.asarray([tokenizer.bos_token_id, *special])
    embeds = np.concatenate([visual, dec["embed"][ids][None]], axis=1)
    tokens, cache = generate(dec, bcfg.decoder, embeds, None, 4, jax.random.key(0))
    assert tokens.shape == (1, 4) and int(np.max(tokens)) < vocab
    assert int(cache["lengths"][0]) >= embeds.shape[1] + 1
    return params


def test_import_llava_with_clip_text_tower(tvad, hf_dirs, tmp_path):
    root, out = hf_dirs.root, tmp_path / "llava"
    result = tvad("backbone", "import", root / "llava", root / "clip", out)
    assert result.code == 0, result.err
    assert "text 2 x 32" in result.out
    lcfg, lparams = vlm.load_llava(root / "llava")
    _check_imported(hf_dirs, out, (lcfg, lparams), lparams["decoder"], hf_dirs.llava_vocab)


def test_import_clip_with_llama_decoder(tvad, hf_dirs, tmp_path):
    root, out = hf_dirs.root, tmp_path / "clip-llama"
    result = tvad("backbone", "import", root / "clip", root / "llama", out)
    assert result.code == 0, result.err
    ccfg, cparams = vlm.load_clip(root / "clip")
    _, dparams = vlm.load_llama(root / "llama")
    params = _check_imported(hf_dirs, out, (ccfg, cparams), dparams, hf_dirs.llama_len + 3)
    np.testing.assert_array_equal(params["text"]["final_ln"]["scale"],
                                  _f16(cparams["text"]["final_ln"]["scale"]))
    assert params["projector"]["fc1"]["kernel"].shape == (32, 48)
