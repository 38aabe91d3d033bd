"""Helpers for the parity tests against transformers' Flax models (test_vit, test_text,
test_decoder, test_vlm): random params for an HF shape tree, and a check that HF's own
PyTorch->Flax converter reads our PyTorch-layout weights back to exactly those params.
"""
from __future__ import annotations

import types
from collections.abc import Mapping

import numpy as np
from flax import traverse_util


def random_like(shape_tree, seed: int) -> dict:
    """Random float32 values for an HF Flax params shape tree (norm scales near 1)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(shape_tree)
    return traverse_util.unflatten_dict({
        k: ((1.0 if k[-1] == "scale" else 0.0) + 0.2 * rng.standard_normal(s.shape))
        .astype(np.float32) for k, s in flat.items()})


def hf_reads_back(model, source, params) -> None:
    """HF's converter maps our PyTorch-layout weights to exactly `params` (names and layouts).

    `source` is either a checkpoint directory (its `model.safetensors` is read) or a PyTorch-
    layout state dict already in memory (e.g. `to_pytorch_layout(params)`).
    """
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    if isinstance(source, Mapping):
        state = source
    else:
        from safetensors.numpy import load_file

        state = load_file(str(source / "model.safetensors"))
    stub = types.SimpleNamespace(params=model.params_shape_tree,
                                 base_model_prefix=model.base_model_prefix)
    got = traverse_util.flatten_dict(convert_pytorch_state_dict_to_flax(state, stub))
    want = traverse_util.flatten_dict(params)
    assert set(got) == set(want) == set(model.required_params)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k])
