"""Video decoding and encoding (the only module that imports PyAV), frame folders, frame
resizing, and the motion vectors of an H.264 re-encode (`motion_field`, for `motion.py`).

Frames are uint8 arrays shaped [T, H, W, 3] (RGB). Writes are atomic: the file appears
under its final name only once it is complete.
"""
from __future__ import annotations

import io
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


def resize_frames(frames: np.ndarray, height: int, width: int,
                  resample=Image.BILINEAR) -> np.ndarray:
    """[T, H, W(, C)] uint8 frames resized by PIL (aspect not kept); the frames themselves
    when the size already matches."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample))
                     for f in frames])


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


def motion_field(frames: np.ndarray, source: str = "<frames>") -> np.ndarray:
    """Dense motion [T, H, W, 2] (float32 pixels per frame) of RGB uint8 frames [T, H, W, 3]
    (H, W even), from the motion vectors of an in-memory H.264 re-encode (paper 003 §3.5
    encodes HEVC, whose motion vectors FFmpeg does not export).

    (dx, dy) is in image coordinates (x right, y down): how far the content of each pixel of
    frame t moved since frame t-1 (a square moving right 2 px/frame reads dx = +2). Every
    frame after the first is a P-frame (no B-frames, one GOP, no scene-cut I-frames); only
    vectors predicted from the previous frame count, each filling its block; intra-coded
    blocks, and all of frame 0, are 0. Identical frames give all zeros (there is no motion);
    otherwise a stream without a single vector is a DataError naming `source`, never zeros."""
    frames = np.asarray(frames)
    if (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3
            or not len(frames) or frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"{source}: frames must be uint8 [T, H, W, 3], T >= 1, H and W even; "
                         f"got {frames.dtype} {frames.shape}")
    n, height, width = frames.shape[:3]
    flow = np.zeros((n, height, width, 2), np.float32)                # [T, H, W, (dx, dy)]
    if (frames == frames[:1]).all():
        return flow
    try:
        t, mv = _motion_vectors(_encode_h264(frames), n, source)      # [N], records [N]
    except DataError:
        raise
    except (av.error.FFmpegError, EOFError, ValueError) as err:
        raise DataError(source, f"re-encoding for motion vectors failed ({err})") from err
    if not len(mv):
        raise DataError(source, "the H.264 re-encode exports no motion vectors although the "
                                "frames differ (FFmpeg without export_mvs support?)")
    past = mv["source"] == -1                            # predicted from the previous frame
    t, mv = t[past], mv[past]
    scale = mv["motion_scale"].astype(np.float32)
    # AVMotionVector: src = dst + motion / scale, so the content moved by -motion / scale.
    value = np.stack([-mv["motion_x"] / scale, -mv["motion_y"] / scale], -1)      # [N, 2]
    w, h = mv["w"].astype(np.int64), mv["h"].astype(np.int64)
    x0, y0 = mv["dst_x"] - w // 2, mv["dst_y"] - h // 2     # dst_x, dst_y are block centres
    for bw, bh in set(zip(w.tolist(), h.tolist())):         # a few sizes: 16x16, 16x8, 8x8..
        sel = (w == bw) & (h == bh)
        # A block reaching past the frame (macroblock padding) is clipped to it: a clipped
        # index repeats an edge pixel that the same block covers.
        ys = np.clip(y0[sel, None] + np.arange(bh), 0, height - 1)              # [n, bh]
        xs = np.clip(x0[sel, None] + np.arange(bw), 0, width - 1)               # [n, bw]
        flow[t[sel, None, None], ys[:, :, None], xs[:, None, :]] = value[sel, None, None]
    return flow


def _encode_h264(frames: np.ndarray) -> bytes:
    """Raw H.264 of the frames: one I-frame, then P-frames only (no B-frames, no scene cuts)
    predicted from the previous frame alone (one reference frame).
    One thread and no lookahead, as in write_video, so the bytes depend only on the frames."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.codec_context.gop_size = len(frames) + 1
        stream.codec_context.max_b_frames = 0
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params":
                          "threads=1:rc-lookahead=0:mbtree=0:bframes=0:scenecut=0:ref=1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _motion_vectors(data: bytes, n: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(frame index [N], AVMotionVector records [N]) of every vector of a raw H.264 stream
    that must decode to `n` frames."""
    frame_index, records, count = [], [], 0
    with av.open(io.BytesIO(data), mode="r", format="h264") as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for count, frame in enumerate(container.decode(stream), 1):
            side = frame.side_data.get("MOTION_VECTORS")
            if side is not None and len(side):
                records.append(side.to_ndarray())
                frame_index.append(np.full(len(records[-1]), count - 1))
    if count != n:
        raise DataError(source, f"the H.264 re-encode decoded to {count} frames, not {n}")
    if not records:
        return np.zeros(0, np.int64), np.zeros(0, [("source", "<i4")])
    return np.concatenate(frame_index), np.concatenate(records)
