"""The feature cache: a hit skips the backbone, keys invalidate, an interrupted build is never
read, processes sharing it build a split once."""
import json
import shutil
import threading

import numpy as np
import pytest

from tvad_jax.data.files import waiting_lock
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
    left = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # but for the lock
    assert [p.name.startswith("incomplete-") for p in left] == [True]
    with pytest.raises(DataError, match="not a feature cache"):
        FeatureCache(left[0])
    cache = build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8), tmp_path, "d",
                        report=lambda m: None)
    assert json.loads((cache.directory / "meta.json").read_text())["clips"] == len(cache)


def test_a_process_waits_for_the_one_building_and_opens_its_cache(tiny_backbone, tmp_path):
    """Independent processes sharing the cache root (a sweep's --parallel-runs): while one
    builds a split the other waits, then opens what the first published, encoding nothing."""
    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory)
    args = (bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8))
    built = build_cache(*args, tmp_path / "first", "d", report=lambda m: None)
    final = tmp_path / "shared" / built.directory.name
    calls, said, result = [], [], {}
    with waiting_lock(final.with_name(f".{final.name}.lock")):      # "the first process"
        waiter = threading.Thread(target=lambda: result.update(cache=build_cache(
            *args, final.parent, "d", encoder=calls.append, report=said.append)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not said and not calls       # waiting, encoding nothing
        shutil.copytree(built.directory, final)                    # it publishes the split
    waiter.join(timeout=60)
    assert not waiter.is_alive() and not calls and "feature cache hit" in said[0]
    assert result["cache"].directory == final and len(result["cache"]) == len(built)
