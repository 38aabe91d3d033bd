import numpy as np
import pytest

from tvad_jax.data.video_io import read_frame_dir, read_video, write_video
from tvad_jax.errors import DataError


def test_write_then_read_is_close_and_deterministic(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    frames = np.stack([np.stack([(xx * 5 + t * 4) % 256, yy * 7, np.full_like(xx, 128)], -1)
                       for t in range(8)]).astype(np.uint8)
    write_video(tmp_path / "a.mp4", frames)
    write_video(tmp_path / "noise.mp4", np.random.default_rng(0).integers(
        0, 256, (4, 64, 64, 3)).astype(np.uint8))   # encoder state must not leak
    write_video(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    decoded = read_video(tmp_path / "a.mp4")
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(DataError, match="frame folder not found"):
        read_frame_dir(tmp_path / "frames")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "000.jpg").write_bytes(b"jpeg? no")
    with pytest.raises(DataError, match="000.jpg: unreadable image"):
        read_frame_dir(tmp_path / "frames")
