"""The feature cache: a hit skips the backbone, keys invalidate, an interrupted build is never
read."""
import json

import numpy as np
import pytest

from tvad_jax.data.pipeline import LoaderConfig, make_dataset, open_split
from tvad_jax.errors import DataError
from tvad_jax.infer.features import FeatureCache, build_cache, make_encoder
from tvad_jax.models.backbone_io import load_backbone
from tvad_jax.models.tvad import ClipView


def test_feature_cache_hit_skips_the_backbone(tiny_backbone, tmp_path):
    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory)
    encoder = make_encoder(bcfg, params)
    calls = []

    def counting(frames):
        calls.append(len(frames))
        return encoder(frames)

    view = ClipView(clip_len=8, clip_stride=8)
    args = (bcfg, params, cfg.prepared_dir, "val", view, tmp_path, "digest-a")
    cache = build_cache(*args, batch_size=4, encoder=counting, report=lambda m: None)
    assert calls and len(cache) == sum(cache.meta["lengths"]) // 8
    row = cache[0]
    tubelets = 4
    patches = (48 // bcfg.vision.patch_size) ** 2
    assert row["hidden"].shape == (len(bcfg.vision.layer_indices), tubelets, 1 + patches,
                                   bcfg.vision.width)
    assert row["hidden"].dtype == np.float16 and row["tubelet_masks"].shape == (4, 48, 48)
    # the cached features are the encoder's output for that clip
    source, lengths = open_split(cfg.prepared_dir, "val")
    first = next(iter(make_dataset(source, lengths, LoaderConfig(
        clip_len=8, clip_stride=8, batch_size=1, shuffle=False, num_epochs=1))))
    np.testing.assert_allclose(np.asarray(encoder(first["frames"])[0])[0].astype(np.float32),
                               row["hidden"].astype(np.float32), atol=2e-3)   # float16

    calls.clear()
    again = build_cache(*args, encoder=counting, report=lambda m: None)
    assert calls == [] and again.directory == cache.directory
    # any change of checkpoint, view or layers gives another cache
    other = build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 4), tmp_path,
                        "digest-a", encoder=counting, report=lambda m: None)
    assert calls and other.directory != cache.directory
    moved = build_cache(*args[:-1], "digest-b", encoder=counting, report=lambda m: None)
    assert moved.directory != cache.directory


def test_an_interrupted_cache_build_is_never_read(tiny_backbone, tmp_path):
    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory)

    def crash(frames):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8), tmp_path, "d",
                    encoder=crash, report=lambda m: None)
    assert [p.name.startswith("incomplete-") for p in tmp_path.iterdir()] == [True]
    with pytest.raises(DataError, match="not a feature cache"):
        FeatureCache(next(tmp_path.iterdir()))
    cache = build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8), tmp_path, "d",
                        report=lambda m: None)
    assert json.loads((cache.directory / "meta.json").read_text())["clips"] == len(cache)
