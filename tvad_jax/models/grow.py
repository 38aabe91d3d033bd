"""A deeper vision tower from a trained one, computing the same function at the start.

    cfg, params = insert_identity_blocks(cfg, params, after=(2, 3))

Each new encoder block copies the weights of the block before it, with its attention output
and second MLP projection zeroed: a pre-LN residual block whose branches add zero is the
identity, so the deeper tower's every hidden state at first equals one of the old tower's.
Its readers keep reading the same function of the input: a hidden-state index i of the old
tower (the AHD's `feature_layers`, the projector's `vision_feature_layer`) becomes the index
of the last block that computes it, i + (blocks inserted after layers <= i), so that the new
blocks sit between a layer and its readers and can change what they see once trained.
Continued pretraining (`pretrain.insert_blocks`) then trains the new blocks from there.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from flax import traverse_util

from tvad_jax.models.configs import BackboneConfig, resolve_layers

# The block parameters whose zeros turn a pre-LN encoder block into the identity.
ZEROED = ("attn/out/", "mlp/fc2/")


def _remap(index: int, after: Sequence[int]) -> int:
    """Old hidden-state index -> the new index of the last block computing it."""
    return index + sum(a <= index for a in after)


def insert_identity_blocks(cfg: BackboneConfig, params: dict[str, Any], after: Sequence[int]
                           ) -> tuple[BackboneConfig, dict[str, Any]]:
    """(config, params) of the backbone with an identity block after each old vision layer in
    `after` (1-based, increasing, each in [1, depth]); params other than the vision tower's
    blocks are returned as they are. Raises ValueError on a bad `after` or on blocks without
    the residual projections that can be zeroed."""
    if not isinstance(cfg, BackboneConfig):
        raise ValueError(f"insert_blocks deepens a ViT backbone's tower, not {type(cfg).__name__}")
    depth = cfg.vision.depth
    after = tuple(int(a) for a in after)
    if not after or list(after) != sorted(set(after)) or not 1 <= after[0] <= after[-1] <= depth:
        raise ValueError(f"insert_blocks {after}: expected increasing distinct layers in "
                         f"[1, {depth}] (the vision tower's depth)")
    layers = traverse_util.flatten_dict(params["vision"]["layers"], sep="/")  # name: [depth, ...]
    for prefix in ZEROED:
        if not any(name.startswith(prefix) for name in layers):
            raise ValueError(f"the vision blocks have no {prefix.rstrip('/')} parameters to "
                             f"zero (found {sorted(layers)})")
    rows = [(i, False) for i in range(depth)]                   # (old block, identity?)
    for a in reversed(after):
        rows.insert(a, (a - 1, True))
    grown_layers = {                                            # name: [depth + len(after), ...]
        name: np.stack([np.zeros_like(leaf[i]) if identity and name.startswith(ZEROED)
                        else leaf[i] for i, identity in rows])
        for name, leaf in layers.items()}
    grown = {**params, "vision": {**params["vision"],
                                  "layers": traverse_util.unflatten_dict(grown_layers, sep="/")}}
    new_depth = depth + len(after)
    feature_layers = tuple(_remap(i, after) for i in resolve_layers(cfg.vision.feature_layers,
                                                                    depth))
    (reader,) = resolve_layers((cfg.vision_feature_layer,), depth)
    reader = _remap(reader, after)
    if cfg.vision_feature_layer < 0:                           # keep counting from the top
        reader -= new_depth + 1
    vision = dataclasses.replace(cfg.vision, depth=new_depth, feature_layers=feature_layers)
    return dataclasses.replace(cfg, vision=vision, vision_feature_layer=reader), grown
