import dataclasses
import json
import re
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.cli import main
from tvad_jax.config import ConfigError
from tvad_jax.data.object_text import ATTRIBUTE_PHRASES
from tvad_jax.jobs import pretrain as pretrain_lib
from tvad_jax.jobs.config import PretrainConfig
from tvad_jax.jobs.pretrain import (DENSE_HEADS, MOTION_HEAD, PLAYBACK_HEAD,
                                    SHIPPED_CONTINUATIONS, backbone_config,
                                    continuation_config, corpus_data, dense_attribute_loss,
                                    make_spec, motion_loss, playback_views)
from tvad_jax.models import backbone_io
from tvad_jax.models.backbone_io import checkpoint_digest, load_backbone, load_itam
from tvad_jax.models.losses import balanced_region_patch_loss
from tvad_jax.models.vlm import abstract_params


@pytest.mark.slow   # ~2 min of compiles, a rerun; each loss and the continued start: fast tests
def test_pretrain_end_to_end_on_the_tiny_benchmark(tmp_path, capsys):
    def pretrain_into(runs: str) -> Path:
        assert main(["pretrain", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
                     f"runs_dir={tmp_path / runs}", "pretrain.attribute_weight=1",
                     "pretrain.motion_weight=1", "pretrain.dense_weight=1",
                     "pretrain.playback_weight=1"]) == 0
        return next((tmp_path / runs).glob("pretrain-*"))

    run_dir = pretrain_into("runs")
    # the same command again (on the benchmark it made): the same backbone to the bit
    rerun = pretrain_into("rerun")
    assert checkpoint_digest(rerun / "backbone") == checkpoint_digest(run_dir / "backbone")
    metrics = json.loads((run_dir / "pretrain_metrics.json").read_text())
    retrieval = metrics["retrieval"]
    assert retrieval["clips"] == 8
    assert 0 <= retrieval["text_to_video_top1"] <= retrieval["text_to_video_top5"] <= 1
    assert retrieval["regions"] >= retrieval["clips"]          # every held-out clip has one
    assert 0 <= retrieval["region_to_text_top1"] <= retrieval["region_to_text_top5"] <= 1
    assert all(sample["truth"] for sample in metrics["samples"])
    attributes = retrieval["region_attributes"]
    assert {"class", "speed", "zone"} <= set(attributes)
    assert all(0 <= a["accuracy"] <= 1 and 0 < a["majority"] <= 1 for a in attributes.values())
    cfg, params, tokenizer = load_backbone(run_dir / "backbone")
    assert cfg.vision.image_size == 48 and cfg.decoder.vocab_size == len(tokenizer)
    assert not {MOTION_HEAD, DENSE_HEADS, PLAYBACK_HEAD} & set(params)  # pretraining-only
    assert tokenizer.convert_tokens_to_ids("<anomaly_sep>") != tokenizer.unk_token_id
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert {"train/contrastive", "train/region", "train/lm", "train/attribute",
            "train/attribute_top1", "train/motion", "train/motion_r2", "train/dense",
            "train/dense_balanced_top1", "train/dense_top1_speed", "train/playback",
            "train/playback_top1"} <= set(json.loads(lines[0]))


def test_the_shipped_recipe_continues_with_ever_heavier_dense_attributes():
    cfg = config_lib.resolve("default", [])
    weights = []
    for continuation in SHIPPED_CONTINUATIONS:
        second = continuation_config(cfg, "runs/x/base/backbone", continuation)
        assert second.pretrain.init == "runs/x/base/backbone"
        assert second.pretrain.corpus_videos == 480
        assert second.pretrain.train.loop.steps == 600
        assert second.pretrain.train.optim.learning_rate == 5e-4
        changed = {f.name for f in dataclasses.fields(PretrainConfig)
                   if getattr(second.pretrain, f.name) != getattr(cfg.pretrain, f.name)}
        assert changed == {"init", "dense_weight", "corpus_videos", "train"}
        assert dataclasses.replace(second, pretrain=cfg.pretrain) == cfg   # nothing else moves
        weights.append(second.pretrain.dense_weight)
    assert weights == [4.0, 8.0, 16.0, 32.0]


@pytest.mark.slow   # three tiny pretraining runs and an ITAM
def test_ship_runs_every_continuation_from_the_last_and_installs_the_final(tmp_path,
                                                                           monkeypatch):
    shipped = tmp_path / "installed"
    monkeypatch.setattr(backbone_io, "SHIPPED_DIR", shipped)
    cfg = config_lib.resolve("tiny", [f"synth.out_dir={tmp_path / 'synth'}",
                                      f"runs_dir={tmp_path / 'runs'}"])
    run_dir = pretrain_lib.pretrain_shipped(
        cfg, report=lambda m: None, run_dir=tmp_path / "ship",
        continuations=(("pretrain.dense_weight=4",), ("pretrain.dense_weight=8",)), itam=())
    first, second = (json.loads((run_dir / f"continued-{i}" / "config.json").read_text())
                     for i in (1, 2))
    assert first["pretrain"]["init"] == str(run_dir / "base" / "backbone")
    assert second["pretrain"]["init"] == str(run_dir / "continued-1" / "backbone")
    assert (first["pretrain"]["dense_weight"], second["pretrain"]["dense_weight"]) == (4.0, 8.0)
    installed, last, before = (jax.tree.leaves(load_backbone(d)[1]) for d in (
        shipped, run_dir / "continued-2" / "backbone", run_dir / "continued-1" / "backbone"))
    for a, b in zip(installed, last, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(installed, before))   # it trained on
    # then the installed backbone's ITAM, trained on its crop tokens
    assert load_itam(shipped)[0] == load_itam(run_dir / "itam" / "pretrained")[0]
    itam_run = json.loads((run_dir / "itam" / "config.json").read_text())
    assert itam_run["local"]["backbone"] == str(shipped)


def test_motion_loss_is_zero_for_the_true_velocities_and_ignores_invalid_rows():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)        # [B, K, T', D]
    head = {"kernel": rng.normal(size=(5, 2)).astype(np.float32), "bias": np.ones(2, np.float32)}
    motion = features @ head["kernel"] + head["bias"]
    valid = np.ones((2, 3, 4), bool)
    valid[1, 2] = False
    motion[1, 2] += 100.0                                              # wrong, but not valid
    loss, r2 = motion_loss(head, jnp.asarray(features), jnp.asarray(motion), jnp.asarray(valid))
    assert float(loss) < 1e-10 and abs(float(r2) - 1) < 1e-6
    loss, r2 = motion_loss({"kernel": np.zeros((5, 2), np.float32), "bias": motion[valid].mean(0)},
                           jnp.asarray(features), jnp.asarray(motion), jnp.asarray(valid))
    assert float(loss) > 0.1 and abs(float(r2)) < 1e-5                # the mean predicts R^2 0


def test_dense_attribute_weights_scale_each_attribute_loss_in_the_mean():
    rng = np.random.default_rng(0)
    width, (b, k, t, h, w) = 8, (2, 3, 2, 2, 2)
    heads = {name: {"kernel": rng.normal(size=(width, len(phrases))).astype(np.float32),
                    "bias": np.zeros(len(phrases), np.float32)}
             for name, phrases in ATTRIBUTE_PHRASES.items()}
    patches = rng.normal(size=(b, t, h * w, width)).astype(np.float32)
    coverage = rng.uniform(size=(b, k, t, h, w)).astype(np.float32)
    labels = np.stack([rng.integers(0, len(p), size=(b, k)) for p in ATTRIBUTE_PHRASES.values()],
                      axis=-1)
    each = [balanced_region_patch_loss(
        patches @ heads[name]["kernel"], coverage.reshape(b, k, t, h * w), labels[..., a])
        for a, name in enumerate(ATTRIBUTE_PHRASES)]
    weights = np.arange(1.0, len(ATTRIBUTE_PHRASES) + 1)
    plain, hits = dense_attribute_loss(heads, patches, coverage, labels)
    weighted, _ = dense_attribute_loss(heads, patches, coverage, labels, weights)
    np.testing.assert_allclose(plain, np.mean([loss for loss, _ in each]), rtol=1e-6)
    np.testing.assert_allclose(weighted, np.mean([wt * loss for wt, (loss, _) in
                                                  zip(weights, each)]), rtol=1e-6)
    assert list(hits) == list(ATTRIBUTE_PHRASES)
    np.testing.assert_allclose([hits[n] for n in ATTRIBUTE_PHRASES], [h for _, h in each])
    with pytest.raises(ValueError, match="one per attribute"):
        PretrainConfig(dense_attribute_weights=(1.0, 4.0))
    with pytest.raises(ValueError, match=">= 0"):
        PretrainConfig(dense_attribute_weights=(1.0, 1.0, -1.0, 1.0, 1.0, 1.0))


def test_playback_views_pair_each_clip_with_itself_twice_as_fast(tmp_path, capsys):
    b, f, k, t = 1, 8, 3, 4                                  # 2-frame tubelets
    frames = np.broadcast_to(np.arange(f, dtype=np.float32)[None, :, None, None, None],
                             (b, f, 2, 2, 3))
    coverage = np.zeros((b, k, t, 1, 2), np.float32)
    coverage[0, 0, :, 0, 0] = [1.0, 0.8, 0.6, 0.4]           # a walker, 0.5 px per frame
    coverage[0, 1, :, 0, 1] = 1.0                            # someone standing, 0.1 px per frame
    motion = np.zeros((b, k, t, 2), np.float32)               # region 2: absent
    motion[0, 0] = [0.3, 0.4]
    motion[0, 1] = [0.1, 0.0]
    valid = np.zeros((b, k, t), bool)
    valid[0, :2] = True
    views, cover, labels = playback_views(frames, coverage, motion, valid)
    np.testing.assert_array_equal(views[:, :, 0, 0, 0], [[0, 1, 2, 3], [0, 2, 4, 6]])
    np.testing.assert_allclose(cover[0, 0, :, 0], [1.0, 0.8])            # own speed: tubelets 0, 1
    np.testing.assert_allclose(cover[1, 0, :, 0], [0.9, 0.5])            # fast: (0, 1), (2, 3)
    np.testing.assert_array_equal(labels, [[0, -1, -1], [1, -1, -1]])
    runs = tmp_path / "runs"                                 # 6 frames: no whole halves
    assert main(["pretrain", "--config", "tiny", "pretrain.playback_weight=1",
                 "pretrain.clip_len=6", f"synth.out_dir={tmp_path / 'synth'}",
                 f"runs_dir={runs}"]) == 2
    assert "pretrain.clip_len must divide by 4" in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "synth").exists()


def test_the_pretraining_corpus_is_a_benchmark_of_its_own():
    cfg = config_lib.resolve("default", ["pretrain.split=pretrain", "pretrain.corpus_videos=24"])
    data = corpus_data(cfg)
    assert data.synth.out_dir == cfg.synth.out_dir + "-pretrain"
    assert data.synth.videos_pretrain == 24
    assert data.synth.videos_test == cfg.synth.videos_test         # the same test videos
    assert data.prepare.splits == ("pretrain", "test")
    assert data.prepared_dir != cfg.prepared_dir
    on_train = config_lib.resolve("default", ["pretrain.split=train"])
    assert corpus_data(on_train) is on_train
    with pytest.raises(ConfigError, match="corpus_videos"):
        config_lib.resolve("default", ["pretrain.split=pretrain", "pretrain.corpus_videos=0"])


def test_continued_pretraining_starts_from_the_given_weights_with_fresh_heads():
    pcfg = PretrainConfig(model="tiny", dense_weight=1.0, motion_weight=1.0)
    bcfg = backbone_config(pcfg, vocab_size=50, image_size=48)
    rng = np.random.default_rng(0)      # values no initializer gives: only `start` can
    start = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32),
                         abstract_params(bcfg))
    spec = make_spec(bcfg, pcfg, np.zeros((1, 4), np.int32), start)
    params = jax.jit(lambda key: nn.unbox(spec.init_fn(key)))(jax.random.key(0))
    heads = {name: params.pop(name) for name in (DENSE_HEADS, MOTION_HEAD)}
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(params),
                                 jax.tree.leaves(start), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
    assert {k: v["kernel"].shape for k, v in heads[DENSE_HEADS].items()} == {
        name: (bcfg.vision.width, len(phrases)) for name, phrases in ATTRIBUTE_PHRASES.items()}


def test_a_missing_starting_backbone_fails_before_anything_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["pretrain", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
            f"runs_dir={runs}", f"pretrain.init={tmp_path / 'nope'}"]
    assert main(args) == 2
    assert f"{tmp_path / 'nope' / 'config.json'}: missing config.json" in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "synth").exists()


def test_inserted_blocks_need_a_starting_backbone_whose_depth_holds_them(tiny_backbone,
                                                                         tmp_path, capsys):
    with pytest.raises(ValueError, match="without init"):
        PretrainConfig(insert_blocks=(1,))
    _, backbone = tiny_backbone
    runs = tmp_path / "runs"
    args = ["pretrain", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
            f"runs_dir={runs}", f"pretrain.init={backbone}", "pretrain.insert_blocks=1,5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pretrain.insert_blocks with init={backbone}" in err and "[1, 2]" in err
    assert not runs.exists() and not (tmp_path / "synth").exists()


def test_pretrain_itam_installs_the_itam_local_patterns_then_reads(tiny_backbone, tmp_path,
                                                                   capsys):
    cfg, backbone = tiny_backbone
    copy = shutil.copytree(backbone, tmp_path / "backbone")
    common = ["--config", "tiny", f"synth.out_dir={cfg.synth.out_dir}",
              f"runs_dir={tmp_path / 'runs'}", f"local.backbone={copy}"]
    assert main(["pretrain", "--itam", "--install", "--run-dir", str(tmp_path / "itam-run"),
                 *common]) == 0
    steps = cfg.local.itam_train.loop.steps
    assert len((tmp_path / "itam-run" / "itam" / "metrics.jsonl").read_text().splitlines()) \
        == steps
    pretrained, installed = (load_itam(d) for d in (tmp_path / "itam-run" / "pretrained", copy))
    assert pretrained[0] == installed[0] and pretrained[0].width == cfg.local.itam_width
    for a, b in zip(jax.tree.leaves(pretrained[1]), jax.tree.leaves(installed[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert checkpoint_digest(copy) == checkpoint_digest(backbone)   # feature caches still hit
    capsys.readouterr()
    # local patterns with the backbone's ITAM: no ITAM of its own, the SMM and RM trained
    assert main(["train", "local-patterns", *common, "local.itam=backbone"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert not (run_dir / "itam").exists()
    assert (run_dir / "smm" / "metrics.jsonl").is_file()
    assert (run_dir / "local_stats.json").is_file()
    # an ITAM of other sizes, or none, fails before any output
    for override, message in (("local.itam_width=32", "width 16 .the job's 32."),
                              (f"local.backbone={backbone}", "has no pretrained ITAM")):
        runs = tmp_path / "refused"
        assert main(["train", "local-patterns", *common, "local.itam=backbone", override,
                     f"runs_dir={runs}"]) == 2
        assert re.search(message, capsys.readouterr().err) and not runs.exists()
    assert main(["pretrain", "--install", *common]) == 2
    assert "--install goes with --itam" in capsys.readouterr().err
