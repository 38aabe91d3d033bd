import dataclasses

import jax
import numpy as np
import pytest

from tvad_jax.models import configs as C
from tvad_jax.models.grow import insert_identity_blocks
from tvad_jax.models.vit import VisionTransformer
from tvad_jax.models.vlm import Backbone, init_params


@pytest.fixture(scope="module")
def tower():
    """A random tiny backbone of 3 vision layers, its readers on layers 0, 1, 2 and 3 and the
    projector on layer -2 (= 2), and a clip of 8 frames."""
    cfg = C.tiny_backbone(vision=C.tiny_vision(depth=3, feature_layers=(0, 1, 2, 3)))
    params = init_params(cfg, jax.random.key(0))
    pixels = np.random.default_rng(1).standard_normal((1, 8, 32, 32, 3)).astype(np.float32)
    return cfg, params, pixels


def _hidden(cfg, params, pixels, layers):
    out = VisionTransformer(cfg.vision).apply({"params": params["vision"]}, pixels,
                                              layers=layers)
    return [np.asarray(h) for h in out.hidden], np.asarray(out.final)


@pytest.mark.parametrize("after, readers, projector", [
    ((1,), (0, 2, 3, 4), -2),            # [L1 I L2 L3]: layer 1's readers move past the new one
    ((1, 3), (0, 2, 3, 5), -3),          # [L1 I L2 L3 I]: layer 2 is now third from the top
    ((2, 3), (0, 1, 3, 5), -3),
])
def test_the_deeper_tower_starts_as_the_old_one_with_its_readers_moved(tower, after, readers,
                                                                       projector):
    cfg, params, pixels = tower
    new_cfg, new_params = insert_identity_blocks(cfg, params, after)
    assert new_cfg.vision.depth == 3 + len(after)
    assert new_cfg.vision.feature_layers == readers
    assert new_cfg.vision_feature_layer == projector
    old, old_final = _hidden(cfg, params, pixels, tuple(range(4)))
    new, new_final = _hidden(new_cfg, new_params, pixels, tuple(range(new_cfg.vision.depth + 1)))
    # Every new hidden state is the old one of the last old layer at or before it.
    old_of_new = [0] + [i + 1 for i in range(3) for _ in range(1 + (i + 1 in after))]
    for j, i in enumerate(old_of_new):
        np.testing.assert_allclose(new[j], old[i], atol=1e-6, err_msg=f"new layer {j}")
    np.testing.assert_allclose(new_final, old_final, atol=1e-6)
    tokens = [Backbone(c).apply({"params": p}, pixels, method=Backbone.visual_tokens)
              for c, p in ((cfg, params), (new_cfg, new_params))]
    np.testing.assert_allclose(tokens[1], tokens[0], atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params["decoder"]),
                                                    jax.tree.leaves(new_params["decoder"])))


def test_only_the_new_blocks_residual_projections_are_zero(tower):
    cfg, params, _ = tower
    _, grown = insert_identity_blocks(cfg, params, (2,))
    old, new = params["vision"]["layers"], grown["vision"]["layers"]
    for part in ("attn/out", "mlp/fc2"):
        a, b = part.split("/")
        for leaf in ("kernel", "bias"):
            got, was = np.asarray(new[a][b][leaf]), np.asarray(old[a][b][leaf])
            assert not got[2].any()
            np.testing.assert_array_equal(got[[0, 1, 3]], was)
    query = new["attn"]["query"]["kernel"]
    np.testing.assert_array_equal(query[2], old["attn"]["query"]["kernel"][1])   # a copy


@pytest.mark.parametrize("after", [(), (0,), (4,), (2, 1), (2, 2)])
def test_a_bad_insertion_is_refused_naming_the_depth(tower, after):
    cfg, params, _ = tower
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        insert_identity_blocks(cfg, params, after)


def test_a_tower_without_residual_projections_is_refused(tower):
    cfg, params, _ = tower
    layers = dict(params["vision"]["layers"])
    layers.pop("mlp")
    broken = {**params, "vision": {**params["vision"], "layers": layers}}
    with pytest.raises(ValueError, match="no mlp/fc2"):
        insert_identity_blocks(dataclasses.replace(cfg), broken, (1,))
