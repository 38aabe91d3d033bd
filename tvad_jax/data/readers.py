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

`source_reader(cfg)` is the configured dataset's reader with the `prepare` section's options
(split lists, tracks folder): the one reader `tvad data prepare` and every job use.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from tvad_jax.data.files import load_npy, numbered_files, parse_int, read_json, text_lines
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

    def __init__(self, root: str | Path, split_files: dict[str, list[str]] | None = None,
                 conceal_errors: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root not found")
        self.split_files = split_files or {}
        self.conceal_errors = conceal_errors

    def video_names(self, split: str) -> list[str]:
        files = self.split_files.get(split) or [self.root / "splits" / f"{split}.txt"]
        names = []
        for file in map(Path, files):
            if not file.is_file():
                raise DataError(file, f"split list for {split!r} not found")
            names += [line.removesuffix(".mp4") for _, line in text_lines(file)]
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
        sidecar = self.read_sidecar(name) if path.with_suffix(".json").is_file() else None
        frames = read_video(path, self.conceal_errors)
        if sidecar is not None:
            _check_sidecar_matches(path, sidecar, frames.shape[:3])
        labels, masks, tracks = self.read_ground_truth(name, frames.shape[:3])
        return VideoRecord(name, frames, labels, masks, tracks, str(path), sidecar)

    def read_ground_truth(self, name: str, shape: tuple[int, int, int]):
        """(labels [T], masks [T, H, W], tracks [R, 6]) of a video whose frames are
        `shape` = (T, H, W), from its annotation files alone (no decoding)."""
        path = self.video_path(name)
        track_file = path.with_name(f"{name}_tracks.txt")
        ann_dir = path.with_name(f"{name}_annotations")
        labels = np.zeros(shape[0], np.uint8)
        masks = np.zeros(shape, np.uint8)
        rows = []
        if not track_file.is_file():
            if name.startswith("abnormal"):
                raise DataError(track_file, "missing annotation file for an abnormal video")
            if ann_dir.is_dir():   # not read, but its length must still match the video's
                _annotation_maps(ann_dir, name, shape[0])
            return labels, masks, np.zeros((0, 6), np.int64)
        ranges = _read_ranges(track_file, shape[0])
        if not ranges and name.startswith("abnormal"):
            raise DataError(track_file, "no tracks for an abnormal video")
        id_maps = _read_id_maps(ann_dir, name, shape)
        for line, obj_id, start, end in ranges:
            object_masks = id_maps[start:end + 1] == obj_id
            if not object_masks.any():
                raise DataError(track_file, f"line {line}: object {obj_id} is in no annotation "
                                            f"map of frames {start}-{end}")
            labels[start:end + 1] = 1
            masks[start:end + 1] |= object_masks
            for t, object_mask in enumerate(object_masks, start=start):
                box = largest_component_box(object_mask)
                if box is not None:
                    rows.append([obj_id, t, *box])
        return labels, masks, np.asarray(rows, np.int64).reshape(-1, 6)

    def read_sidecar(self, name: str) -> dict:
        """The synthetic benchmark's JSON sidecar of a video (no decoding), validated."""
        path = self.video_path(name).with_suffix(".json")
        if not path.is_file():
            raise DataError(path, "no sidecar JSON (only the synthetic benchmark has them)")
        sidecar = read_json(path)
        check_sidecar(path, sidecar, name)
        return sidecar


_ANNOTATION_MODES = ("L", "RGB")   # 8-bit ids; RGB only with three equal channels


def _annotation_maps(ann_dir: Path, name: str, num_frames: int) -> list[Path]:
    """The id maps `{name}_{t:04d}_gt.png` of frames 0..T-1, matched by the number."""
    if not ann_dir.is_dir():
        raise DataError(ann_dir, "missing annotation folder")
    return numbered_files(ann_dir, re.compile(re.escape(name) + r"_([0-9]+)_gt\.png"), num_frames,
                          "annotation map")


def _read_id_maps(ann_dir: Path, name: str, shape) -> np.ndarray:
    """uint8 [T, H, W] object-id maps of every frame of a video."""
    maps = np.empty(shape, np.uint8)
    for t, png in enumerate(_annotation_maps(ann_dir, name, shape[0])):
        maps[t] = _read_id_map(png, tuple(shape[1:]))
    return maps


def _read_id_map(png: Path, size: tuple[int, int]) -> np.ndarray:
    """One 8-bit object-id map of `size` (H, W), from a PNG whose every chunk passes its CRC."""
    try:
        with Image.open(png) as image:
            image.verify()   # every chunk's CRC: a damaged IDAT may otherwise decode as other ids
        with Image.open(png) as image:
            kind, mode, id_map = image.format, image.mode, np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        raise DataError(png, f"unreadable annotation PNG ({err})") from None
    if kind != "PNG":   # a lossy JPEG under a .png name would read as wrong ids
        raise DataError(png, f"a {kind} image, expected a PNG")
    if mode not in _ANNOTATION_MODES:
        raise DataError(png, f"annotation PNG of mode {mode!r}, expected 8-bit grey ('L')")
    if id_map.ndim == 3:
        if (id_map != id_map[..., :1]).any():
            raise DataError(png, "RGB annotation with unequal channels, expected grey ids")
        id_map = id_map[..., 0]
    if id_map.shape != size:
        raise DataError(png, f"annotation is {id_map.shape}, video frames are {size}")
    return id_map


def _read_ranges(path: Path, num_frames: int) -> list[tuple[int, int, int, int]]:
    """Rows (line, object_id, start, end) of a UBnormal tracks file `object_id,start,end`,
    validated: inside the video, and no object's ranges overlapping."""
    ranges = []
    for line_no, line in text_lines(path):
        try:
            obj_id, start, end = (parse_int(v) for v in line.split(","))
        except ValueError:
            raise DataError(path, f"line {line_no}: expected 'object_id,start,end' "
                                  f"(non-negative integers), got {line!r}") from None
        if not start <= end < num_frames:
            raise DataError(path, f"line {line_no}: range {start}-{end} outside the video's "
                                  f"{num_frames} frames")
        ranges.append((line_no, obj_id, start, end))
    ordered = sorted(ranges, key=lambda r: (r[1], r[2]))
    for before, after in zip(ordered, ordered[1:]):
        if before[1] == after[1] and after[2] <= before[3]:
            first, second = sorted((before[0], after[0]))
            raise DataError(path, f"line {second}: object {after[1]} overlaps its range on "
                                  f"line {first}")
    return ranges


_SIDECAR_FIELDS = {"video": str, "scene": int, "seed": list, "num_frames": int, "height": int,
                   "width": int, "fps": (int, float), "objects": list}
_OBJECT_FIELDS = {"id": int, "class": str, "attributes": dict, "timeline": list,
                  "boxes": list}
_CLASS_ATTRIBUTES = {"person": ("top", "bottom"), "car": ("size", "color"),
                     "cyclist": ("top", "color"), "object": ("color",)}


def check_sidecar(path: Path, sidecar, name: str) -> None:
    """A sidecar has every field its users read, of the right type and range."""
    _check_fields(path, sidecar, _SIDECAR_FIELDS, "sidecar")
    if sidecar["video"] != name:
        raise DataError(path, f"sidecar of video {sidecar['video']!r}, expected {name!r}")
    for key in ("scene", "num_frames", "height", "width", "fps"):
        if not sidecar[key] > 0:
            raise DataError(path, f"sidecar: {key} must be positive, got {sidecar[key]}")
    if not sidecar["seed"] or not _is(sidecar["seed"][0], int):
        raise DataError(path, "sidecar: seed must be a list starting with an integer")
    for i, obj in enumerate(sidecar["objects"]):
        _check_object(path, obj, f"objects[{i}]", sidecar)


def _check_object(path: Path, obj, where: str, sidecar: dict) -> None:
    _check_fields(path, obj, _OBJECT_FIELDS, where)
    needed = _CLASS_ATTRIBUTES.get(obj["class"])
    if needed is None:
        raise DataError(path, f"{where}: unknown class {obj['class']!r}, expected one of "
                              f"{sorted(_CLASS_ATTRIBUTES)}")
    if not all(_is(obj["attributes"].get(key), str) for key in needed):
        raise DataError(path, f"{where}: a {obj['class']} needs text attributes {needed}")
    if obj.get("anomaly") is not None and not _is_range(obj["anomaly"], sidecar["num_frames"]):
        raise DataError(path, f"{where}: anomaly must be null or [start, end] inside the video")
    if not _is(obj.get("anomaly_type"), (str, type(None))):
        raise DataError(path, f"{where}: anomaly_type must be text or null")
    for j, seg in enumerate(obj["timeline"]):
        if not (isinstance(seg, dict) and _is(seg.get("label"), str)
                and _is_range([seg.get("start"), seg.get("end")], sidecar["num_frames"])):
            raise DataError(path, f"{where}.timeline[{j}]: expected {{start, end, label}} "
                                  "inside the video")
    for j, box in enumerate(obj["boxes"]):
        if not _is_box(box, sidecar["num_frames"]):
            raise DataError(path, f"{where}.boxes[{j}]: expected [frame, x_min, y_min, x_max, "
                                  f"y_max] inside the video, got {box!r}")


def _check_fields(path: Path, record, fields: dict, where: str) -> None:
    if not isinstance(record, dict):
        raise DataError(path, f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, kind in fields.items():
        if not _is(record.get(key), kind):
            raise DataError(path, f"{where}: field {key!r} missing or not "
                                  f"{getattr(kind, '__name__', 'a number')}")


def _is(value, kind) -> bool:
    """isinstance without bool passing for a number."""
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _is_range(pair, num_frames: int) -> bool:
    return (isinstance(pair, list) and len(pair) == 2 and all(_is(v, int) for v in pair)
            and 0 <= pair[0] <= pair[1] < num_frames)


def _is_box(box, num_frames: int) -> bool:
    return (isinstance(box, list) and len(box) == 5 and _is(box[0], int)
            and all(_is(v, (int, float)) for v in box[1:]) and 0 <= box[0] < num_frames
            and box[1] <= box[3] and box[2] <= box[4])


def _check_sidecar_matches(video: Path, sidecar: dict, shape: tuple[int, int, int]) -> None:
    """The decoded video has the length and size its sidecar records."""
    recorded = (sidecar["num_frames"], sidecar["height"], sidecar["width"])
    if recorded != tuple(shape):
        raise DataError(video, f"decoded {shape[0]} frames of {shape[1]}x{shape[2]}, its "
                               f"sidecar records {recorded[0]} frames of "
                               f"{recorded[1]}x{recorded[2]}")


class ShanghaiTechReader:
    """ShanghaiTech Campus: split `train` (normal videos) or `test` (frames + masks)."""

    def __init__(self, root: str | Path, tracks_dir: str | Path | None = None,
                 conceal_errors: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root not found")
        self.conceal_errors = conceal_errors
        self.tracks_dir = Path(tracks_dir) if tracks_dir else None
        if self.tracks_dir is not None and not self.tracks_dir.is_dir():
            raise DataError(self.tracks_dir, "tracks folder not found")

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
            frames = read_video(video, self.conceal_errors)
            return VideoRecord(name, frames, np.zeros(len(frames), np.uint8),
                               np.zeros(frames.shape[:3], np.uint8), np.zeros((0, 6), np.int64),
                               str(video))
        folder = self.root / "testing" / "frames" / name
        frames = read_frame_dir(folder)
        labels = _read_labels(self.root / "testing" / "test_frame_mask" / f"{name}.npy",
                              len(frames))
        masks = _read_pixel_masks(self.root / "testing" / "test_pixel_mask" / f"{name}.npy",
                                  frames.shape[:3])
        tracks = self._read_tracks(name, labels) if self.tracks_dir is not None \
            else tracks_from_masks(masks)
        return VideoRecord(name, frames, labels, masks, tracks, str(folder))

    def _read_tracks(self, name: str, labels: np.ndarray) -> np.ndarray:
        """The community tracks file of a test video; the community ships files for the
        abnormal videos only, so an abnormal video needs one with rows."""
        track_file = self.tracks_dir / f"{name}.txt"
        if not track_file.is_file():
            if labels.any():
                raise DataError(track_file, "missing tracks file for an abnormal video")
            return np.zeros((0, 6), np.int64)
        tracks = read_tracks_file(track_file, len(labels)).astype(np.int64)
        if labels.any() and not len(tracks):
            raise DataError(track_file, "no tracks for an abnormal video")
        return tracks


def _read_labels(path: Path, num_frames: int) -> np.ndarray:
    """uint8 [T] per-frame labels, each exactly 0 or 1."""
    labels = load_npy(path)
    if labels.shape != (num_frames,):
        raise DataError(path, f"frame-count mismatch: {labels.shape} labels for {num_frames} "
                              "frames")
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise DataError(path, f"frame {bad[0]}: label {labels[bad[0]]}, expected 0 or 1")
    return labels.astype(np.uint8)


def _read_pixel_masks(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [T, H, W] 0/1 anomaly pixels (any positive value marks one)."""
    masks = load_npy(path)
    if masks.shape != shape:
        raise DataError(path, f"pixel mask is {masks.shape}, frames are {shape} "
                              "(T x H x W expected)")
    bad = np.flatnonzero(~(np.isfinite(masks) & (masks >= 0)).all(axis=(1, 2)))
    if len(bad):
        raise DataError(path, f"frame {bad[0]}: negative or non-finite mask values")
    return (masks > 0).astype(np.uint8)


def make_reader(layout: str, root: str | Path, **options):
    """A reader for `layout` in {'synthetic', 'ubnormal', 'shanghaitech'}."""
    conceal = options.get("conceal_errors", False)
    if layout in ("synthetic", "ubnormal"):
        return UBnormalReader(root, options.get("split_files"), conceal)
    if layout == "shanghaitech":
        return ShanghaiTechReader(root, options.get("tracks_dir"), conceal)
    raise DataError(root, f"unknown layout {layout!r}; expected synthetic, ubnormal or "
                          "shanghaitech")


def reader_options(cfg) -> dict:
    """Reader keyword arguments from the config's `prepare` section (split lists, tracks
    folder, concealed errors)."""
    options = {}
    if cfg.prepare.split_files:
        options["split_files"] = parse_split_files(cfg.prepare.split_files)
    if cfg.prepare.tracks_dir:
        options["tracks_dir"] = cfg.prepare.tracks_dir
    if cfg.prepare.conceal_errors:
        options["conceal_errors"] = True
    return options


def parse_split_files(spec: str) -> dict[str, list[str]]:
    """'train=a.txt+b.txt;test=c.txt' -> {'train': ['a.txt', 'b.txt'], 'test': ['c.txt']};
    ValueError naming a part that is not split=file[+file...] or a split given twice."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        split, sep, files = (s.strip() for s in part.partition("="))
        names = [f.strip() for f in files.split("+")]
        if not sep or not split or not all(names):
            raise ValueError(f"{part!r} is not split=file[+file...]")
        if split in out:
            raise ValueError(f"split {split!r} given twice")
        out[split] = names
    return out


def source_reader(cfg):
    """The reader of the configured source (`prepare.layout`, `prepare.source`) with the
    configured options: what `tvad data prepare` reads, and so what every job that reads
    the videos themselves reads (baselines, S3M, local patterns, VLAVAD, pretraining)."""
    return make_reader(cfg.prepare.layout, cfg.prepare_source, **reader_options(cfg))


def iter_records(reader, split: str, skip_bad: bool = False, report=print,
                 share: tuple[int, int] = (0, 1)) -> Iterator[VideoRecord]:
    """Read every video of a split (with share (i, n), every n-th from the i-th: one process's
    part); with `skip_bad`, report bad inputs and go on."""
    index, count = share
    for name in reader.video_names(split)[index::count]:
        try:
            yield reader.read(name)
        except InputError as err:
            if not skip_bad:
                raise
            report(f"[tvad] skipping bad video: {err}")
