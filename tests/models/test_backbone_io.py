import json
import time

import jax
import numpy as np
import pytest

from tvad_jax.models import itam
from tvad_jax.models.backbone_io import (SHIPPED_DIR, config_from_dict, config_to_dict, itam_tokens,
                                         load_backbone, load_itam, read_tree, save_backbone,
                                         save_itam, write_tree)
from tvad_jax.models.configs import default_backbone, tiny_backbone
from tvad_jax.models.convert import CheckpointError
from tvad_jax.models.tokenizer import train_tokenizer
from tvad_jax.models.vlm import Backbone, init_params


def test_config_round_trip():
    cfg = default_backbone(vocab_size=500, image_size=48)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_save_load_round_trip_in_float16(tmp_path):
    cfg = tiny_backbone()
    params = init_params(cfg, jax.random.key(0))
    tokenizer = train_tokenizer(["a red car moves left"] * 4, vocab_size=280)
    save_backbone(tmp_path / "bb", cfg, params, tokenizer, extra={"note": 1})
    loaded_cfg, loaded, loaded_tok = load_backbone(tmp_path / "bb")
    assert loaded_cfg == cfg and loaded_tok.get_vocab() == tokenizer.get_vocab()
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-3, atol=1e-4)
        assert b.dtype == np.float32
    assert json.loads((tmp_path / "bb" / "config.json").read_text())["note"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_backbone_directories(tmp_path):
    cfg = tiny_backbone()
    save_backbone(tmp_path / "bb", cfg, init_params(cfg, jax.random.key(0)))
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_backbone(tmp_path / "bb")
    config = json.loads((tmp_path / "bb" / "config.json").read_text())
    config["backbone"]["decoder"]["width"] = 64
    (tmp_path / "bb" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_backbone(tmp_path / "bb", with_tokenizer=False)
    config["model_type"] = "llama"
    (tmp_path / "bb" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is not 'tvad_backbone'"):
        load_backbone(tmp_path / "bb", with_tokenizer=False)


TINY_ITAM = itam.ITAMConfig(vision_width=8, vocab_size=20, bos_token_id=1, eos_token_id=2,
                            pad_token_id=0, width=16, depth=2, heads=2, mlp_dim=32,
                            num_queries=2, max_text_len=6, embed_dim=8)


def test_an_itam_saved_beside_a_backbone_loads_back_in_float16(tmp_path):
    params = itam.init_params(TINY_ITAM, jax.random.key(0))
    out = save_itam(tmp_path / "bb", TINY_ITAM, params)
    assert out == tmp_path / "bb" / "itam" and not list((tmp_path / "bb").glob(".*tmp*"))
    cfg, loaded = load_itam(tmp_path / "bb")
    assert cfg == TINY_ITAM and itam_tokens(tmp_path / "bb") == "crop"
    save_itam(tmp_path / "bb", TINY_ITAM, params, tokens="region")     # replaces it whole
    assert itam_tokens(tmp_path / "bb") == "region"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-3, atol=1e-4)
        assert b.dtype == np.float32


def test_bad_itam_folders_are_named_errors(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'itam' / 'config.json'}: missing"):
        load_itam(tmp_path)
    save_itam(tmp_path, TINY_ITAM, itam.init_params(TINY_ITAM, jax.random.key(0)))
    path = tmp_path / "itam" / "config.json"
    config = json.loads(path.read_text())
    config["itam"]["width"] = 32                       # the weights say 16
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_itam(tmp_path)
    config["itam"]["queries"] = config["itam"].pop("num_queries")
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{path}: not an ITAM config"):
        load_itam(tmp_path)
    config["model_type"] = "tvad_backbone"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is not 'tvad_itam'"):
        load_itam(tmp_path)


def test_shipped_default_loads_and_runs():
    assert (SHIPPED_DIR / "model.safetensors").is_file(), \
        f"the shipped backbone is missing from {SHIPPED_DIR} (re-create: tvad pretrain --ship)"
    start = time.perf_counter()
    cfg, params, tokenizer = load_backbone()
    load_s = time.perf_counter() - start
    frames = np.zeros((1, 8, cfg.vision.image_size, cfg.vision.image_size, 3), np.float32)
    tokens = Backbone(cfg).apply({"params": params}, frames, method=Backbone.visual_tokens)
    assert tokens.shape == (1, 4 * 16, cfg.decoder.width)
    assert np.isfinite(np.asarray(tokens)).all()
    print(f"shipped default loaded in {load_s:.2f} s")   # measured, not asserted


@pytest.mark.parametrize("keep", [0, 7, 0.5])
def test_truncated_weights_are_a_named_error(tmp_path, keep):
    """An empty, header-cut or half-written safetensors file: CheckpointError naming it."""
    path = write_tree(tmp_path / "w.safetensors", {"a": {"b": np.ones((64, 64))}})
    data = path.read_bytes()
    path.write_bytes(data[:int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match=f"{path}: cannot read safetensors"):
        read_tree(path)
