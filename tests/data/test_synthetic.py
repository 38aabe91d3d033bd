import dataclasses
import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tvad_jax.data.synthetic.generate import VideoJob, plan_jobs, render_video, synthesize
from tvad_jax.data.synthetic.spec import ANOMALY_TYPES, SPLITS, SynthConfig
from tvad_jax.data.video_io import read_video


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_files(tiny_synth, tmp_path):
    cfg, root = tiny_synth
    again = dataclasses.replace(cfg.synth, out_dir=str(tmp_path / "again"), workers=2)
    synthesize(again)
    root, other = Path(root), Path(again.out_dir)
    files = [f for f in _files(root) if f.parts[0] != "prepared"]
    assert files == [f for f in _files(other) if f.parts[0] != "prepared"]
    differing = [f for f in files if f.name != "manifest.json" and
                 not filecmp.cmp(root / f, other / f, shallow=False)]
    assert differing == []


def test_other_seed_gives_other_videos(tmp_path):
    base = SynthConfig(height=32, width=32, num_frames=16, min_anomaly_frames=4)
    job = VideoJob("train", 0, 1, "running")
    a = render_video(base, job)
    b = render_video(dataclasses.replace(base, seed=1), job)
    assert not np.array_equal(a.frames, b.frames)


def test_layout_and_boxes_agree_with_id_maps(tiny_synth):
    _, root = tiny_synth
    root = Path(root)
    sidecars = sorted(root.glob("Scene*/*.json"))
    assert sidecars
    checked_rows = 0
    for sidecar_path in sidecars:
        sidecar = json.loads(sidecar_path.read_text())
        name = sidecar["video"]
        scene_dir = sidecar_path.parent
        assert scene_dir.name == f"Scene{sidecar['scene']}"
        frames = read_video(scene_dir / f"{name}.mp4")
        assert frames.shape == (sidecar["num_frames"], sidecar["height"], sidecar["width"], 3)
        ids = np.stack([np.asarray(Image.open(scene_dir / f"{name}_annotations" /
                                              f"{name}_{t:04d}_gt.png"))
                        for t in range(sidecar["num_frames"])])
        for obj in sidecar["objects"]:
            boxes = {row[0]: row[1:] for row in obj["boxes"]}
            for t in range(len(ids)):
                ys, xs = np.nonzero(ids[t] == obj["id"])
                if len(xs) == 0:
                    assert t not in boxes
                else:  # box = bounding rectangle of the object's pixels
                    assert boxes[t] == [xs.min(), ys.min(), xs.max(), ys.max()]
        tracks = scene_dir / f"{name}_tracks.txt"
        assert tracks.is_file() == name.startswith("abnormal")
        if tracks.is_file():
            for line in tracks.read_text().splitlines():
                obj_id, start, end = map(int, line.split(","))
                obj = next(o for o in sidecar["objects"] if o["id"] == obj_id)
                assert obj["anomaly"] == [start, end]
                for t in range(start, end + 1):  # visible in every frame of its range
                    assert (ids[t] == obj_id).any()
                checked_rows += 1
    assert checked_rows > 0


def test_open_set_splits_are_disjoint_and_normal_split_is_normal(tiny_synth):
    _, root = tiny_synth
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    types = {split: set() for split in SPLITS}
    names = {split: set() for split in SPLITS}
    for video in manifest["videos"]:
        types[video["split"]] |= set(video["anomaly_types"])
        names[video["split"]].add(video["name"])
        assert video["name"].startswith("abnormal") == bool(video["anomaly_types"])
    assert types["train"] and types["val"] and types["test"]
    assert not types["train"] & types["val"]
    assert not types["train"] & types["test"]
    assert not types["val"] & types["test"]
    assert types["train_normal"] == set()
    for split in SPLITS:
        listed = (Path(root) / "splits" / f"{split}.txt").read_text().split()
        assert set(listed) == names[split]


def test_every_anomaly_type_renders_a_visible_event():
    cfg = SynthConfig(height=48, width=48, num_frames=32, min_anomaly_frames=6)
    assert len(ANOMALY_TYPES) >= 8
    for k, kind in enumerate(ANOMALY_TYPES):
        video = render_video(cfg, VideoJob("test", k, k + 1, kind))
        anomalous = [o for o in video.objects if o["anomaly_type"] == kind]
        assert anomalous and video.tracks
        for obj_id, start, end in video.tracks:
            assert end - start + 1 >= cfg.min_anomaly_frames
            assert all((video.ids[t] == obj_id).any() for t in range(start, end + 1))


def test_plan_balances_anomaly_types():
    cfg = SynthConfig()
    jobs = plan_jobs(cfg)
    assert len(jobs) == 240
    test_types = [j.anomaly for j in jobs if j.split == "test" and j.anomaly]
    assert len(test_types) == 28
    assert {t: test_types.count(t) for t in set(test_types)} == \
        {t: 7 for t in cfg.test_anomalies}
    # The closed-set split acts out the training types, five videos each.
    seen_types = [j.anomaly for j in jobs if j.split == "test_seen" and j.anomaly]
    assert {t: seen_types.count(t) for t in set(seen_types)} == \
        {t: 5 for t in cfg.train_anomalies}
    assert [j.number for j in jobs if j.split == "test_seen"][0] == 201  # appended last


def test_config_rejects_overlapping_splits():
    with pytest.raises(ValueError, match="disjoint"):
        SynthConfig(val_anomalies=("running",)).validate()
    with pytest.raises(ValueError, match="unknown anomaly types"):
        SynthConfig(test_anomalies=("dancing",)).validate()


def test_pretrain_corpus_adds_videos_of_training_types_only():
    base = plan_jobs(SynthConfig())
    jobs = plan_jobs(SynthConfig(videos_pretrain=24))
    assert jobs[:len(base)] == base           # every benchmark video unchanged
    corpus = jobs[len(base):]
    assert [j.split for j in corpus] == ["pretrain"] * 24
    types = [j.anomaly for j in corpus if j.anomaly]
    assert len(types) == 12 and set(types) == set(SynthConfig().train_anomalies)
