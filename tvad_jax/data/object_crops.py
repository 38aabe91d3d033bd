"""Object crops of a video: paper 003's 2-frame crops and paper 004's crop clips (host-side).

Every tracked object, every `stride`-th frame t: its box expanded by `expand` of its width and
height on each side (the paper's 50%, "to capture more contexts"), clipped to the frame, cut
from frames (t-1, t) and resized to the vision tower's input (stretched, as BLIP-2's processor
does, to a square or the tower's (height, width)). Two frames because the shipped tower's
unit is a 2-frame tubelet (frame 0 is repeated); with `stride` 2 the crops' tubelets cover
every frame once.

    sidecar = record_sidecar(record, "paper 003")   # or a DataError naming the video
    tracks = sidecar_tracks(sidecar)                  # [(object id, rows [n, 5]), ...]
    crops = video_crops(frames, tracks, size=96, stride=2, expand=0.5, source=name)
    crops.pixels   # [K, 2, 96, 96, 3] uint8
    crops.frame, crops.object, crops.box   # [K] frame t, [K] object id, [K, 4] expanded box

    clips = track_clips(frames, tracks, clip_len=8, stride=4, size=96)   # VLAVAD's clips
    clips.pixels   # [K, 8, 96, 96, 3] uint8: frames t-7..t around the object (cut at the
                   # aspect of a (height, width) size, so that the object keeps its shape)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tvad_jax.data.object_boxes import crop_box, crop_frames, sides
from tvad_jax.data.video_io import resize_frames
from tvad_jax.errors import DataError

TUBELET = 2     # frames per crop: (t-1, t)


@dataclasses.dataclass
class Crops:
    """The crops of one video; rows are (frame, object) pairs in frame order."""

    pixels: np.ndarray   # [K, 2, S_h, S_w, 3] uint8
    frame: np.ndarray    # [K] int64, t (the crop holds frames t-1 and t)
    object: np.ndarray   # [K] int64, the object's track id
    box: np.ndarray      # [K, 4] int64, expanded inclusive box (x0, y0, x1, y1)

    def __len__(self) -> int:
        return len(self.frame)


def record_sidecar(record, method: str) -> dict:
    """A video record's sidecar (the simulator's per-object boxes and tracks, which stand in for
    a detector and tracker); a DataError on the record's source where it has none, saying that
    `method` needs them."""
    if record.sidecar is None:
        raise DataError(record.source, f"no object tracks: {method} needs per-object boxes, "
                                       "which only the synthetic benchmark's sidecars provide")
    return record.sidecar


def sidecar_tracks(sidecar: dict) -> list[tuple[int, np.ndarray]]:
    """(object id, box rows [n, 5] of (t, x0, y0, x1, y1) inclusive) of every sidecar object:
    the simulator's tracks, standing in for a detector and tracker."""
    return [(int(obj["id"]), np.asarray(obj["boxes"], np.int64).reshape(-1, 5))
            for obj in sidecar["objects"]]


def expand_box(box, expand: float, width: int, height: int) -> np.ndarray:
    """An inclusive box (x0, y0, x1, y1) grown by `expand` x its size on each side and clipped
    to the frame; empty (x1 < x0 or y1 < y0) when the box lies outside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = expand * (x1 - x0 + 1), expand * (y1 - y0 + 1)
    return np.asarray([max(round(x0 - dx), 0), max(round(y0 - dy), 0),
                       min(round(x1 + dx), width - 1), min(round(y1 + dy), height - 1)],
                      np.int64)


def video_crops(frames: np.ndarray, tracks: list[tuple[int, np.ndarray]],
                size: int | tuple[int, int], stride: int = 2, expand: float = 0.5,
                source: str = "<video>", pixels: bool = True) -> Crops:
    """Crops [K, 2, S_h, S_w, 3] (`size` a side or (S_h, S_w)) of every object at frames
    t = stride-1, 2 stride-1, ... (see the module docstring; `pixels=False`: their frames and
    boxes only, pixels [K, 0]). A box that lies outside the frame is a DataError naming the
    video, the frame and the object."""
    T, H, W, _ = frames.shape
    size_h, size_w = sides(size)
    cut, frame_ids, objects, boxes = [], [], [], []
    for obj, rows in tracks:
        for t, *box in rows[rows[:, 0] % stride == stride - 1]:
            if not 0 <= t < T:
                raise DataError(source, f"object {obj}: a box at frame {t}, the video has {T}")
            x0, y0, x1, y1 = expand_box(box, expand, W, H)
            if x1 < x0 or y1 < y0:
                raise DataError(source, f"frame {t}: object {obj}'s box {list(box)} lies "
                                        f"outside the {W}x{H} frame")
            if pixels:      # bilinear, aspect not kept, as BLIP-2's processor resizes
                cut.append(resize_frames(frames[[max(t - 1, 0), t], y0:y1 + 1, x0:x1 + 1],
                                         size_h, size_w))
            frame_ids.append(t)
            objects.append(obj)
            boxes.append((x0, y0, x1, y1))
    order = np.lexsort((objects, frame_ids))
    shape = (TUBELET, size_h, size_w, 3) if pixels else (0,)
    cut = np.stack(cut)[order] if cut else np.zeros((len(order),) + shape, np.uint8)
    return Crops(cut, np.asarray(frame_ids, np.int64)[order],
                 np.asarray(objects, np.int64)[order],
                 np.asarray(boxes, np.int64).reshape(-1, 4)[order])


def track_clips(frames: np.ndarray, tracks: list[tuple[int, np.ndarray]], clip_len: int,
                stride: int, size: int | tuple[int, int], source: str = "<video>") -> Crops:
    """Clips [K, clip_len, S_h, S_w, 3] (`size` a side or (S_h, S_w)) around every tracked
    object at frames t = stride-1, 2 stride-1, ... where it is seen: frames t-clip_len+1 .. t
    (the first frame repeated before the video starts), cut by `object_boxes.crop_box` over
    the object's boxes in those frames at the aspect S_w / S_h (square for a side, as
    pretraining cuts its single-object question clips) and resized to `size`. `box` holds the
    object's own box at t. A box at a frame outside the video is a DataError naming the
    video, the frame and the object."""
    T, H, W, _ = frames.shape
    size_h, size_w = sides(size)
    pixels, frame_ids, objects, boxes = [], [], [], []
    for obj, rows in tracks:
        by_frame = {int(r[0]): r[1:] for r in rows}
        for t in sorted(by_frame):
            if not 0 <= t < T:
                raise DataError(source, f"object {obj}: a box at frame {t}, the video has {T}")
            if t % stride != stride - 1:
                continue
            window = np.arange(t - clip_len + 1, t + 1)
            seen = np.asarray([by_frame.get(int(f), (np.nan,) * 4) for f in window],
                              np.float64)                                  # clip_len, 4
            box = crop_box(seen, W, H, aspect=size_w / size_h)
            pixels.append(crop_frames(frames[np.maximum(window, 0)], box, (size_h, size_w)))
            frame_ids.append(t)
            objects.append(obj)
            boxes.append(by_frame[t])
    if not pixels:
        return Crops(np.zeros((0, clip_len, size_h, size_w, 3), np.uint8),
                     np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64))
    order = np.lexsort((objects, frame_ids))
    return Crops(np.stack(pixels)[order], np.asarray(frame_ids, np.int64)[order],
                 np.asarray(objects, np.int64)[order], np.asarray(boxes, np.int64)[order])
