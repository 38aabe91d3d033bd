"""`detect_videos`: its `detections.jsonl` appears whole or not at all (the model is a stand-in:
what is checked is the file handling, not detection)."""
import json

import numpy as np
import pytest

from tvad_jax.data.video_io import write_video
from tvad_jax.errors import DataError
from tvad_jax.infer import detect


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
