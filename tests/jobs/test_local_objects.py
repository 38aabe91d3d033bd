"""Paper 003's objects: crops or in-context tokens read by the frozen tower, their labels, the
object cache, the shares of several processes."""
import dataclasses

import numpy as np
import pytest

from tvad_jax import config as config_lib, configs  # noqa: F401  (registers the configs)
from tvad_jax.config import ConfigError
from tvad_jax.data.pipeline import CLIP_MEAN, CLIP_STD
from tvad_jax.data.readers import make_reader
from tvad_jax.data.video_io import resize_frames
from tvad_jax.errors import DataError
from tvad_jax.infer.features import make_encoder
from tvad_jax.data.object_crops import Crops
from tvad_jax.jobs.local_objects import (ROWS, CropTokens, SplitObjects, acted_anomalies,
                                         read_objects, region_encoder, split_objects)
from tvad_jax.jobs.shares import join_shares
from tvad_jax.models.tvad import load_frozen_backbone


def test_split_objects_are_read_once_then_come_from_the_cache(tiny_backbone, tmp_path):
    tiny, backbone_dir = tiny_backbone
    cfg = config_lib.resolve("tiny", [f"synth.out_dir={tiny.synth.out_dir}",
                                      f"local.backbone={backbone_dir}",
                                      f"local.cache_dir={tmp_path}"])
    backbone = load_frozen_backbone(cfg.local.backbone)
    said = []
    first = split_objects(cfg, backbone, "test", said.append)
    second = split_objects(cfg, backbone, "test", said.append)
    assert [m.split(":")[0] for m in said if "object cache" in m] == [
        "[tvad] object cache written", "[tvad] object cache hit"]
    fresh = read_objects(cfg, backbone, "test", said.append)
    assert len(fresh) > 0 and len(fresh.texts) == len(fresh)
    # the shares of several processes (every 2nd video; a share with no video at all), joined
    # in any order, are the split as one process reads it
    videos = len(fresh.videos)
    shares = [read_objects(cfg, backbone, "test", said.append, share)
              for share in ((1, 2), (videos, videos + 1), (0, 2))]
    assert len(shares[0].videos) == videos // 2 and not shares[1].videos
    (tmp_path / "shares").mkdir()                       # as a process with no video saves it
    shares[1].save(tmp_path / "shares" / "empty.npz")
    shares[1] = SplitObjects.load(tmp_path / "shares" / "empty.npz")
    order = make_reader(cfg.prepare.layout, cfg.prepare_source).video_names("test")
    joined = join_shares(shares, order, ROWS)
    for objects in (first, second, joined):
        assert objects.videos == fresh.videos and objects.texts == fresh.texts
        assert objects.acting == fresh.acting
        for name in ("video", "frame", "object", "tokens", "motion"):
            np.testing.assert_array_equal(getattr(objects, name), getattr(fresh, name))
            assert getattr(objects, name).dtype == getattr(fresh, name).dtype
        for video in fresh.videos:
            np.testing.assert_array_equal(objects.labels[video], fresh.labels[video])
    # another crop setting is read anew into a file of its own; nothing half-written is left
    wider = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, expand=0.25))
    split_objects(wider, backbone, "test", said.append)
    assert said[-1].startswith("[tvad] object cache written")
    # tokens read in context: the same crops' frames and boxes, tokens of the same shape
    region = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, tokens="region"))
    in_context = split_objects(region, backbone, "test", said.append)
    assert said[-1].startswith("[tvad] object cache written")
    for name in ("video", "frame", "object", "motion"):
        np.testing.assert_array_equal(getattr(in_context, name), getattr(fresh, name))
    assert in_context.tokens.shape == fresh.tokens.shape
    assert not np.allclose(in_context.tokens, fresh.tokens)
    files = [p for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert sorted(p.suffix for p in files) == [".npz"] * 3     # besides the splits' locks


def test_crops_are_labelled_by_the_anomaly_their_object_acts():
    sidecar = {"objects": [{"id": 1, "anomaly": [4, 6], "anomaly_type": "falling"},
                           {"id": 2, "anomaly": None, "anomaly_type": None}]}
    # a crop at t holds frames t-1 and t: t = 4 and 7 touch the span [4, 6] by one frame,
    # t = 3 and 8 miss it
    frames = np.array([3, 4, 5, 7, 8, 5])
    objects = np.array([1, 1, 1, 1, 1, 2])
    assert acted_anomalies(sidecar, objects, frames) == ["", "falling", "falling", "falling",
                                                         "", ""]


def test_crop_tokens_batch_across_videos_as_if_each_crop_were_read_alone(tiny_backbone):
    _, directory = tiny_backbone
    backbone = load_frozen_backbone(directory)
    S, g = backbone.cfg.vision.image_size, backbone.cfg.vision.grid[0]      # 6 x 6 patches
    pixels = np.random.default_rng(0).integers(0, 256, (11, 2, S, S, 3), np.uint8)
    # each crop alone: the tower's last layer, its CLS token, then the grid pooled 3 x 3
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    hidden, _ = make_encoder(backbone.cfg, backbone.params)((pixels / 255.0 - mean) / std)
    last = np.asarray(hidden, np.float32)[:, -1, 0]                       # K, 1+N, D
    grid = last[:, 1:].reshape(11, 2, 3, 2, 3, -1).mean(axis=(2, 4)).reshape(11, 4, -1)
    alone = np.concatenate([last[:, :1], grid], axis=1)
    def crops(lo, hi):
        return Crops(pixels=pixels[lo:hi], frame=np.arange(lo, hi),
                     object=np.zeros(hi - lo, np.int64), box=np.zeros((hi - lo, 4), np.int64))

    tokens = CropTokens(backbone, batch=4, pool=3)
    # three "videos" of 3, 6 and 2 crops: batches of 4 cut across them, the last padded
    for lo, hi in ((0, 3), (3, 9), (9, 11)):
        tokens.add(None, crops(lo, hi))
    read = tokens.finish()
    assert read.shape == (11, 5, backbone.cfg.vision.width) and read.dtype == np.float16
    np.testing.assert_allclose(read, alone, atol=2e-3)
    # where a crop falls in a batch does not change its tokens
    shifted = CropTokens(backbone, batch=4, pool=3)
    shifted.add(None, crops(10, 11))
    shifted.add(None, crops(0, 11))
    np.testing.assert_allclose(shifted.finish()[1:], read, atol=2e-3)
    # finish starts afresh; nothing added reads as no rows
    assert tokens.finish().shape[0] == 0
    with pytest.raises(ConfigError, match="local.token_pool 4 does not divide"):
        CropTokens(backbone, batch=4, pool=4)


def test_region_tokens_sample_the_last_layers_grid_of_the_tubelet_over_each_box(tiny_backbone):
    _, directory = tiny_backbone
    backbone = load_frozen_backbone(directory)
    vision = backbone.cfg.vision
    S, P = vision.image_size, vision.patch_size
    g = S // P                                                    # 6 x 6 patches of 8 px
    frames = np.random.default_rng(0).integers(0, 256, (6, S, S, 3), np.uint8)
    # the tower's own last layer on clips of 4 frames, the second padded with the last frame
    clips = np.concatenate([frames, frames[[5, 5]]]).reshape(2, 4, S, S, 3)
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    hidden, _ = make_encoder(backbone.cfg, backbone.params)((clips / 255.0 - mean) / std)
    grids = np.asarray(hidden[:, -1, :, 1:], np.float32).reshape(4, g, g, -1)   # T', g, g, D
    whole, patch = [0, 0, S - 1, S - 1], [3 * P, 2 * P, 4 * P - 1, 3 * P - 1]   # row 2, col 3
    t = np.array([1, 5, 5])                                       # tubelets 0, 2, 2
    boxes = np.array([whole, whole, patch])
    full = region_encoder(backbone, clip_len=4, pool=1)(frames, t, boxes)
    assert full.shape == (3, 1 + g * g, vision.width) and full.dtype == np.float16
    for k, tubelet in enumerate([0, 2]):
        # the whole frame's g x g samples fall on the patch centres: the grid itself, row-major;
        # its centre between the four middle patches: their mean
        np.testing.assert_allclose(full[k, 1:], grids[tubelet].reshape(g * g, -1), atol=2e-3)
        middle = grids[tubelet, g // 2 - 1:g // 2 + 1, g // 2 - 1:g // 2 + 1].mean(axis=(0, 1))
        np.testing.assert_allclose(full[k, 0], middle, atol=2e-3)
    # one patch's box, pooled to one cell: centre and cell both sample that patch
    one = region_encoder(backbone, clip_len=4, pool=g)(frames, t[2:], boxes[2:])
    np.testing.assert_allclose(one[0], grids[2, [2, 2], [3, 3]], atol=2e-3)
    # frames wider than the tower's input are resized to it, and the boxes with them
    wide = np.repeat(frames, 2, axis=2)                            # S x 2S, each column twice
    wide_box = np.array([[6 * P, 2 * P, 8 * P - 1, 3 * P - 1]])    # = patch, in wide pixels
    np.testing.assert_allclose(
        region_encoder(backbone, clip_len=4, pool=g)(wide, t[2:], wide_box)[0],
        region_encoder(backbone, clip_len=4, pool=g)(resize_frames(wide, S, S), t[2:],
                                                     boxes[2:])[0], atol=2e-3)
    # clips the tower cannot read are refused by name before any frame is read
    for clip_len in (3, vision.max_frames + 2):
        with pytest.raises(ConfigError, match=f"local.region_clip {clip_len}: the tower"):
            region_encoder(backbone, clip_len=clip_len, pool=1)


def test_an_unreadable_object_cache_is_a_named_error(tmp_path):
    broken = tmp_path / "test-0123.npz"
    broken.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="test-0123.npz.*not a readable object cache"):
        SplitObjects.load(broken)
