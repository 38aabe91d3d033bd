"""Readers for UBnormal, ShanghaiTech Campus and the synthetic benchmark (which uses the
UBnormal layout), all returning `VideoRecord`s.

UBnormal: `root/Scene{S}/{name}.mp4`; `{name}_annotations/{name}_{t:04d}_gt.png` object-id
maps; abnormal videos have `{name}_tracks.txt` rows `object_id,start,end` (inclusive). A frame
is abnormal inside any track's range; its anomaly mask is the pixels of the active ids; the
RBDC/TBDC box of a (track, frame) is the bounding rectangle of the largest 8-connected
component of `gt == id` (the community's largest-contour rule).

ShanghaiTech: `training/videos/{SS}_{NNN}.avi` (normal); `testing/frames/{vid}/*.jpg`,
`testing/test_frame_mask/{vid}.npy` (per-frame 0/1), `testing/test_pixel_mask/{vid}.npy`
(T x H x W). Tracks come from a folder of community track files when given, else from the
pixel masks (components linked by IoU 0.1).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from tvad_jax.data.track_files import read_tracks_file
from tvad_jax.data.tracks import largest_component_box, tracks_from_masks
from tvad_jax.data.video_io import read_frame_dir, read_video
from tvad_jax.errors import DataError, InputError


@dataclasses.dataclass
class VideoRecord:
    """One video with its ground truth; every array's first axis is time (T frames)."""

    name: str
    frames: np.ndarray              # [T, H, W, 3] uint8
    labels: np.ndarray              # [T] uint8, 1 = abnormal frame
    masks: np.ndarray | None        # [T, H, W] uint8 anomaly pixels, None if not annotated
    tracks: np.ndarray              # [R, 6] int64 track_id, frame_id, x_min, y_min, x_max, y_max
    source: str                     # path of the video file or frame folder
    sidecar: dict | None = None     # synthetic benchmark only: objects, timelines, boxes

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class UBnormalReader:
    """UBnormal as distributed, and the synthetic benchmark (same layout plus sidecars).

    Splits are text files of video names: `root/splits/{split}.txt` (the synthetic
    benchmark writes these), or any files passed as `split_files={split: [paths]}` (e.g.
    UBnormal's official `abnormal_test_video_names.txt` + `normal_test_video_names.txt`).
    """

    _SCENE = re.compile(r"_scene_(\d+)_")

    def __init__(self, root: str | Path, split_files: dict[str, list[str]] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root not found")
        self.split_files = split_files or {}

    def video_names(self, split: str) -> list[str]:
        files = self.split_files.get(split) or [self.root / "splits" / f"{split}.txt"]
        names = []
        for file in map(Path, files):
            if not file.is_file():
                raise DataError(file, f"split list for {split!r} not found")
            names += [line.strip().removesuffix(".mp4") for line in file.read_text().splitlines()
                      if line.strip()]
        if not names:
            raise DataError(files[0], f"split {split!r} is empty")
        return names

    def video_path(self, name: str) -> Path:
        match = self._SCENE.search(name + "_")
        if not match:
            raise DataError(self.root / name, "video name has no '_scene_<n>_' part "
                                              "(not the UBnormal layout)")
        return self.root / f"Scene{int(match.group(1))}" / f"{name}.mp4"

    def read(self, name: str) -> VideoRecord:
        path = self.video_path(name)
        frames = read_video(path)
        labels, masks, tracks = self.read_ground_truth(name, frames.shape[:3])
        sidecar_path = path.with_suffix(".json")
        sidecar = self.read_sidecar(name) if sidecar_path.is_file() else None
        return VideoRecord(name, frames, labels, masks, tracks, str(path), sidecar)

    def read_ground_truth(self, name: str, shape: tuple[int, int, int]):
        """(labels [T], masks [T, H, W], tracks [R, 6]) of a video whose frames are
        `shape` = (T, H, W), from its annotation files alone (no decoding)."""
        path = self.video_path(name)
        track_file = path.with_name(f"{name}_tracks.txt")
        labels = np.zeros(shape[0], np.uint8)
        masks = np.zeros(shape, np.uint8)
        rows = []
        if track_file.is_file():
            ranges = _read_ranges(track_file, shape[0])
            id_maps = self._id_maps(path, name, shape)
            for obj_id, start, end in ranges:
                labels[start:end + 1] = 1
                for t in range(start, end + 1):
                    object_mask = id_maps[t] == obj_id
                    masks[t] |= object_mask
                    box = largest_component_box(object_mask)
                    if box is not None:
                        rows.append([obj_id, t, *box])
        elif name.startswith("abnormal"):
            raise DataError(track_file, "missing annotation file for an abnormal video")
        return labels, masks, np.asarray(rows, np.int64).reshape(-1, 6)

    def read_sidecar(self, name: str) -> dict:
        """The synthetic benchmark's JSON sidecar of a video (no decoding)."""
        path = self.video_path(name).with_suffix(".json")
        if not path.is_file():
            raise DataError(path, "no sidecar JSON (only the synthetic benchmark has them)")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(path, f"unreadable sidecar ({err})") from err

    @staticmethod
    def _id_maps(video: Path, name: str, shape) -> np.ndarray:
        ann_dir = video.with_name(f"{name}_annotations")
        if not ann_dir.is_dir():
            raise DataError(ann_dir, "missing annotation folder")
        files = sorted(ann_dir.glob(f"{name}_*_gt.png"))
        if len(files) != shape[0]:
            raise DataError(ann_dir, f"frame-count mismatch: {len(files)} annotation maps, "
                                     f"{shape[0]} video frames in {video.name}")
        maps = np.empty(shape, np.uint8)
        for t, png in enumerate(files):
            with Image.open(png) as image:
                id_map = np.asarray(image)
            if id_map.ndim == 3:  # some masks are stored as RGB with equal channels
                id_map = id_map[..., 0]
            if id_map.shape != tuple(shape[1:]):
                raise DataError(png, f"annotation is {id_map.shape}, video frames are "
                                     f"{tuple(shape[1:])}")
            maps[t] = id_map
        return maps


def _read_ranges(path: Path, num_frames: int) -> list[tuple[int, int, int]]:
    """Rows `object_id,start,end` of a UBnormal tracks file, validated."""
    ranges = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj_id, start, end = (int(float(v)) for v in line.split(","))
        except ValueError:
            raise DataError(path, f"line {line_no}: expected 'object_id,start,end', "
                                  f"got {line!r}") from None
        if not 0 <= start <= end < num_frames:
            raise DataError(path, f"line {line_no}: range {start}-{end} outside the video's "
                                  f"{num_frames} frames")
        ranges.append((obj_id, start, end))
    return ranges


class ShanghaiTechReader:
    """ShanghaiTech Campus: split `train` (normal videos) or `test` (frames + masks)."""

    def __init__(self, root: str | Path, tracks_dir: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root not found")
        self.tracks_dir = Path(tracks_dir) if tracks_dir else None

    def video_names(self, split: str) -> list[str]:
        if split == "train":
            folder, names = self.root / "training" / "videos", None
            if folder.is_dir():
                names = sorted(p.stem for p in folder.glob("*.avi"))
        elif split == "test":
            folder, names = self.root / "testing" / "frames", None
            if folder.is_dir():
                names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        else:
            raise DataError(self.root, f"ShanghaiTech has splits 'train' and 'test', not {split!r}")
        if names is None:
            raise DataError(folder, "folder not found (not the ShanghaiTech layout)")
        if not names:
            raise DataError(folder, f"split {split!r} is empty")
        return names

    def read(self, name: str) -> VideoRecord:
        video = self.root / "training" / "videos" / f"{name}.avi"
        if video.is_file():
            frames = read_video(video)
            return VideoRecord(name, frames, np.zeros(len(frames), np.uint8),
                               np.zeros(frames.shape[:3], np.uint8), np.zeros((0, 6), np.int64),
                               str(video))
        folder = self.root / "testing" / "frames" / name
        frames = read_frame_dir(folder)
        labels = _load_npy(self.root / "testing" / "test_frame_mask" / f"{name}.npy")
        if labels.shape != (len(frames),):
            raise DataError(self.root / "testing" / "test_frame_mask" / f"{name}.npy",
                            f"frame-count mismatch: {labels.shape} labels for {len(frames)} "
                            "frames")
        mask_path = self.root / "testing" / "test_pixel_mask" / f"{name}.npy"
        masks = _load_npy(mask_path)
        if masks.shape != frames.shape[:3]:
            raise DataError(mask_path, f"pixel mask is {masks.shape}, frames are "
                                       f"{frames.shape[:3]} (T x H x W expected)")
        masks = (masks > 0).astype(np.uint8)
        if self.tracks_dir is not None:
            track_file = self.tracks_dir / f"{name}.txt"
            tracks = read_tracks_file(track_file).astype(np.int64) if track_file.is_file() \
                else np.zeros((0, 6), np.int64)   # the community ships files for abnormal only
        else:
            tracks = tracks_from_masks(masks)
        return VideoRecord(name, frames, labels.astype(np.uint8), masks, tracks, str(folder))


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "missing annotation file")
    try:
        return np.load(path)
    except (ValueError, OSError) as err:
        raise DataError(path, f"unreadable .npy ({err})") from err


def make_reader(layout: str, root: str | Path, **options):
    """A reader for `layout` in {'synthetic', 'ubnormal', 'shanghaitech'}."""
    if layout in ("synthetic", "ubnormal"):
        return UBnormalReader(root, options.get("split_files"))
    if layout == "shanghaitech":
        return ShanghaiTechReader(root, options.get("tracks_dir"))
    raise DataError(root, f"unknown layout {layout!r}; expected synthetic, ubnormal or "
                          "shanghaitech")


def iter_records(reader, split: str, skip_bad: bool = False,
                 report=print) -> Iterator[VideoRecord]:
    """Read every video of a split; with `skip_bad`, report bad inputs and go on."""
    for name in reader.video_names(split):
        try:
            yield reader.read(name)
        except InputError as err:
            if not skip_bad:
                raise
            report(f"[tvad] skipping bad video: {err}")
