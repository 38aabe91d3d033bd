import json

import numpy as np
import pytest
from flax import serialization
from safetensors.numpy import save_file

from tvad_jax.models.convert import (CheckpointError, Rule, apply_rules, check_shapes, conv_to_hwio,
                                     read_config, read_weights, transpose)

RULES = [
    Rule("embed/kernel", "embed.weight", transpose),
    Rule("layers/dense/kernel", "layers.{layer}.fc.weight", transpose),
    Rule("layers/dense/bias", "layers.{layer}.fc.bias"),
]


def _weights(num_layers=3):
    rng = np.random.default_rng(0)
    weights = {"embed.weight": rng.normal(size=(4, 2)).astype(np.float32)}
    for i in range(num_layers):
        weights[f"layers.{i}.fc.weight"] = rng.normal(size=(5, 4)).astype(np.float32)
        weights[f"layers.{i}.fc.bias"] = np.full(5, i, np.float32)
    return weights


def test_rules_transpose_and_stack_layers():
    weights = _weights()
    params = apply_rules(RULES, weights, num_layers=3)
    np.testing.assert_array_equal(params["embed"]["kernel"], weights["embed.weight"].T)
    assert params["layers"]["dense"]["kernel"].shape == (3, 4, 5)
    np.testing.assert_array_equal(params["layers"]["dense"]["kernel"][2],
                                  weights["layers.2.fc.weight"].T)
    np.testing.assert_array_equal(params["layers"]["dense"]["bias"][:, 0], [0, 1, 2])


def test_missing_and_unknown_keys_are_listed():
    weights = _weights()
    del weights["layers.1.fc.bias"]
    weights["extra.weight"] = np.zeros(1)
    weights["layers.0.position_ids"] = np.zeros(1)
    with pytest.raises(CheckpointError) as err:
        apply_rules(RULES, weights, num_layers=3, ignore=(r"position_ids$",), source="ckpt")
    message = str(err.value)
    assert message.startswith("ckpt: missing keys (1): layers.1.fc.bias")
    assert "unknown keys (1): extra.weight" in message


def test_check_shapes_lists_mismatches():
    params = apply_rules(RULES, _weights(), num_layers=3)
    expected = {"embed": {"kernel": np.zeros((2, 4))},
                "layers": {"dense": {"kernel": np.zeros((3, 4, 6)), "bias": np.zeros((3, 5))}},
                "head": {"kernel": np.zeros(1)}}
    with pytest.raises(CheckpointError) as err:
        check_shapes(params, expected)
    assert "layers/dense/kernel: checkpoint (3, 4, 5), model (3, 4, 6)" in str(err.value)
    assert "head/kernel: not in the checkpoint" in str(err.value)


def test_reads_safetensors_shards_and_msgpack(tmp_path):
    weights = _weights()
    single = tmp_path / "single"
    single.mkdir()
    save_file(weights, single / "model.safetensors")
    (single / "config.json").write_text(json.dumps({"model_type": "toy"}))
    assert read_config(single) == {"model_type": "toy"}
    loaded = read_weights(single)
    assert loaded.keys() == weights.keys()
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = sorted(weights)
    save_file({k: weights[k] for k in names[:3]}, sharded / "model-00001-of-00002.safetensors")
    save_file({k: weights[k] for k in names[3:]}, sharded / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 + (i >= 3)}-of-00002.safetensors" for i, k in enumerate(names)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert read_weights(sharded).keys() == weights.keys()
    flax_dir = tmp_path / "flax"
    flax_dir.mkdir()
    tree = {"embed": {"kernel": weights["embed.weight"].T}}
    (flax_dir / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    np.testing.assert_array_equal(read_weights(flax_dir)["embed.kernel"], tree["embed"]["kernel"])


def test_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        read_weights(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_weights(tmp_path)
    with pytest.raises(CheckpointError, match="missing config.json"):
        read_config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        read_weights(tmp_path)


def test_conv_hook():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)   # O, I, H, W
    assert conv_to_hwio(x).shape == (4, 5, 3, 2)
    assert conv_to_hwio(x)[1, 2, 0, 1] == x[1, 0, 1, 2]
