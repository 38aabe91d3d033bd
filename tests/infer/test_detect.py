"""`detect_videos`: its `detections.jsonl` appears whole or not at all (the model is a stand-in:
what is checked is the file handling, not detection); the frames a `Detector` feeds the tower
are those of a prepared video."""
import json

import numpy as np
import pytest

from tvad_jax.data.pipeline import ClipLoader, LoaderConfig
from tvad_jax.data.readers import VideoRecord
from tvad_jax.data.tfds_builders import to_example
from tvad_jax.data.video_io import write_video
from tvad_jax.errors import DataError
from tvad_jax.infer import detect
from tvad_jax.models.tvad import load_frozen_backbone, plain_model


@pytest.fixture
def stand_in_detector(monkeypatch):
    """`Detector` replaced by one scoring every frame 0.5 without a model."""

    def detector(model, max_new_tokens):
        return lambda frames, name: detect.Detection(name, np.full(len(frames), 0.5), None,
                                                     None, None, None)

    monkeypatch.setattr(detect, "Detector", detector)


def _video(path):
    return write_video(path, np.zeros((3, 16, 16, 3), np.uint8))


def test_detections_file_is_written_once_every_video_is_done(tmp_path, stand_in_detector):
    videos = [_video(tmp_path / "a.mp4"), _video(tmp_path / "b.mp4")]
    out = tmp_path / "out"
    out.mkdir()
    summaries = list(detect.detect_videos(None, videos, out))
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == summaries
    assert [s["video"] for s in summaries] == ["a", "b"]
    assert sorted(p.name for p in out.iterdir()) == ["a.scores.npy", "b.scores.npy",
                                                     "detections.jsonl"]


def test_a_failure_midway_leaves_no_detections_file(tmp_path, stand_in_detector):
    """The second video is damaged: the error names it, and neither a partial
    detections.jsonl nor its temporary file is left behind."""
    bad = tmp_path / "b.mp4"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=f"{bad}: "):
        list(detect.detect_videos(None, [_video(tmp_path / "a.mp4"), bad], out))
    assert sorted(p.name for p in out.iterdir()) == ["a.scores.npy"]


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_detect_sees_the_frames_of_a_prepared_video(tiny_backbone, resample):
    """A video of another size than the backbone's: what `Detector.preprocess` feeds the
    tower equals the clip the loader makes of that video as `tvad data prepare` stores it with
    the model's `prepare.resample`, to the bit (the same resize of the uint8 frames, the same
    normalization); the other resize differs."""
    cfg, directory = tiny_backbone
    backbone = load_frozen_backbone(directory)
    model = plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 90, 3), dtype=np.uint8)
    size = backbone.cfg.vision.image_size
    record = VideoRecord("v", frames, np.zeros(4, np.uint8), None, np.zeros((0, 6), np.int64),
                         "v.mp4")
    stored = to_example(record, size, size, resample)
    clip = ClipLoader([stored], np.asarray([[0, 0]]), LoaderConfig(clip_len=4))(0)["frames"]
    model.resample = resample
    np.testing.assert_array_equal(detect.Detector(model).preprocess(frames), clip)
    model.resample = {"bilinear": "bicubic", "bicubic": "bilinear"}[resample]
    assert np.abs(detect.Detector(model).preprocess(frames) - clip).max() > 0.1
    with pytest.raises(ValueError, match="uint8"):
        detect.Detector(model).preprocess(frames.astype(np.float32))
