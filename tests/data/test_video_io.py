import numpy as np
import pytest
from PIL import Image

from tvad_jax.data.video_io import read_frame_dir, read_video, resize_frames, write_video
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


def _noise_video(path, codec="libx264", t=16):
    frames = np.random.default_rng(0).integers(0, 256, (t, 32, 48, 3)).astype(np.uint8)
    return write_video(path, frames, codec=codec)


def test_truncated_video_is_checked_against_the_declared_frame_count(tmp_path):
    video = _noise_video(tmp_path / "v.avi", codec="mpeg4")
    data = video.read_bytes()
    video.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="v.avi: corrupt or truncated"):
        read_video(video)                             # strict decoding notices first
    with pytest.raises(DataError, match="v.avi: frame 2: decoding stopped, the container "
                                        "declares 16 frames"):
        read_video(video, conceal_errors=True)       # the length check still holds


def test_damaged_video_is_an_error_unless_concealment_is_asked_for(tmp_path):
    data = _noise_video(tmp_path / "v.mp4").read_bytes()
    rng = np.random.default_rng(1)
    strict_errors, concealed_reads = 0, 0
    for i in range(8):
        damaged = bytearray(data)
        for position in rng.integers(2000, len(data) - 500, 5):
            damaged[position] ^= 0xFF
        path = tmp_path / f"d{i}.mp4"
        path.write_bytes(bytes(damaged))
        for conceal in (False, True):
            try:
                frames = read_video(path, conceal_errors=conceal)
            except DataError:
                strict_errors += not conceal
                continue
            assert frames.shape == (16, 32, 48, 3)
            concealed_reads += conceal
    assert strict_errors >= 3 and concealed_reads > 0


@pytest.mark.parametrize("suffix, codec_tag", [(".mp4", b"avc1"), (".avi", b"H264")])
def test_a_video_stream_of_an_unknown_codec_is_refused(tmp_path, suffix, codec_tag):
    """A damaged codec tag leaves the stream without a decoder (found by tests/data/
    test_fuzz.py; it was an AttributeError)."""
    video = _noise_video(tmp_path / f"v{suffix}", t=4)
    video.write_bytes(video.read_bytes().replace(codec_tag, b"zzzz"))
    with pytest.raises(DataError, match=rf"v\{suffix}: no decoder for its video stream"):
        read_video(video)


def test_an_image_named_like_a_video_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "x.mp4")
    with pytest.raises(DataError, match=r"x.mp4: an image \(png_pipe\), not a video"):
        read_video(tmp_path / "x.mp4")


def test_frame_folder_numbers(tmp_path):
    for name in ("0.jpg", "1.jpg", "01.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(DataError, match="a second image for frame 1"):
        read_frame_dir(tmp_path)


def test_resize_frames_scales_each_frame_and_leaves_a_matching_size_alone():
    checker = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 0]]], np.uint8)
    frames = np.stack([checker, 255 - checker])                           # [2, 2, 2, 3]
    nearest = resize_frames(frames, 4, 6, Image.NEAREST)                  # rows x2, columns x3
    np.testing.assert_array_equal(nearest, frames.repeat(2, axis=1).repeat(3, axis=2))
    flat = np.full((1, 5, 7, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_frames(flat, 3, 9), np.full((1, 3, 9, 3), 77))
    assert resize_frames(frames, 2, 2) is frames
