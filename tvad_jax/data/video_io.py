"""Video decoding and encoding (the only module that imports PyAV), and frame folders.

Frames are uint8 arrays shaped [T, H, W, 3] (RGB). Writes are atomic: the file appears
under its final name only once it is complete.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from tvad_jax.data.files import numbered_files
from tvad_jax.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
_IMAGE_FORMATS = ("image2", "apng", "gif", "webp")


def read_video(path: str | Path, conceal_errors: bool = False) -> np.ndarray:
    """Decode every frame of `path` as RGB uint8 [T, H, W, 3]; DataError on any failure.

    Decoding is strict (FFmpeg's error detection turns damaged data into an error) unless
    `conceal_errors`, and the decoded length must equal the container's declared frame count
    where it declares one, so a truncated or damaged file never reads as a shorter video."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "video file not found")
    try:
        with av.open(str(path)) as container:
            frames = _decode(path, container, conceal_errors)
    except DataError:
        raise
    except (av.error.FFmpegError, EOFError, ValueError, IndexError) as err:
        raise DataError(path, f"corrupt or truncated video ({err})") from err
    return frames


def _decode(path: Path, container, conceal_errors: bool) -> np.ndarray:
    """All frames of the first video stream, checked against its declared length."""
    if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
        raise DataError(path, f"an image ({container.format.name}), not a video")
    if not container.streams.video:
        raise DataError(path, "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise DataError(path, "no decoder for its video stream (damaged header or unknown codec)")
    if not conceal_errors:
        stream.codec_context.options = {"err_detect": "explode"}
    frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise DataError(path, "video has no decodable frames (empty or truncated)")
    if stream.frames and len(frames) != stream.frames:
        raise DataError(path, f"frame {len(frames)}: decoding stopped, the container declares "
                              f"{stream.frames} frames (truncated or damaged)")
    return np.stack(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 30, crf: int = 18,
                codec: str = "libx264") -> Path:
    """Encode RGB uint8 [T, H, W, 3] frames; deterministic bytes for the same input.

    H.264 needs even H and W (yuv420p). One encoder thread and no lookahead keep the output
    bit-identical across runs and processes; parallelism belongs to the caller (one video per
    worker).
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            if codec == "libx264":
                # x264's lookahead (and macroblock-tree rate control) carries state between
                # encoders in one process; without it the bytes depend only on the frames.
                stream.options["x264-params"] = "threads=1:rc-lookahead=0:mbtree=0"
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _container_format(path: Path) -> str:
    return {".mp4": "mp4", ".avi": "avi", ".mkv": "matroska", ".mov": "mov"}.get(
        path.suffix.lower(), "mp4")


def read_frame_dir(path: str | Path, suffix: str = ".jpg") -> np.ndarray:
    """Read a folder of image frames named by their number (`0.jpg` or `000.jpg`, from 0
    without gaps, ordered by number) as RGB uint8 [T, H, W, 3]."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "frame folder not found")
    files = numbered_files(path, re.compile(r"([0-9]+)" + re.escape(suffix)), what="image")
    if not files:
        raise DataError(path, f"no frames named <number>{suffix}")
    frames = [_read_rgb(file) for file in files]
    if len({f.shape for f in frames}) != 1:
        raise DataError(path, "frames of different sizes")
    return np.stack(frames)


def _read_rgb(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        raise DataError(file, f"unreadable image ({err})") from err
