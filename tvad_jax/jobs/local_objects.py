"""Paper 003's objects: every tracked object of a split read once by the frozen vision tower,
with its motion histogram, plain description and the anomaly it acts, cached on disk.

    objects = split_objects(cfg, backbone, "train_normal")     # SplitObjects, rows = crops

Every tracked object every `local.crop_stride`-th frame: its box grown by `local.expand` of its
size on each side is cut from frames (t-1, t) and read alone by the tower (`CropTokens`, the
paper's way), or, with `local.tokens=region`, the tower reads the whole video and the object's
tokens are sampled from its patch grid under the grown box (`region_encoder`). The cache file
of a split is keyed by what its rows depend on; on several processes each reads its share of
the videos (`jobs.shares`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from tvad_jax.config import ConfigError
from tvad_jax.data.files import waiting_lock
from tvad_jax.data.motion import BINS, box_histograms
from tvad_jax.data.object_crops import Crops, record_sidecar, sidecar_tracks, video_crops
from tvad_jax.data.object_text import describe_object, scene_of
from tvad_jax.data.pipeline import CLIP_MEAN, CLIP_STD
from tvad_jax.data.prepare import source_fingerprint
from tvad_jax.data.readers import iter_records, reader_options, source_reader
from tvad_jax.data.video_io import motion_field, resize_frames
from tvad_jax.errors import DataError
from tvad_jax.infer.features import make_encoder
from tvad_jax.jobs.common import Report
from tvad_jax.jobs.config import Config
from tvad_jax.jobs.shares import join_shares, read_in_shares
from tvad_jax.models.tvad import FrozenBackbone
from tvad_jax.runs import progress

TEXT_WINDOW = 4     # a crop's description covers its frame +- this many (steadier motion words)
OBJECTS_VERSION = 2  # of the object cache's contents: a change of read_objects bumps it


@dataclasses.dataclass
class SplitObjects:
    """Every object crop of a split, read once: the frozen tower's tokens, the motion histogram
    and, from the sidecar, the object's plain description and the anomaly it acts (if any).
    Rows are crops."""

    videos: list[str]
    labels: dict[str, np.ndarray]     # video -> [T] frame labels
    video: np.ndarray                 # [K] index into videos
    frame: np.ndarray                 # [K] t: the crop covers frames t-1 and t
    object: np.ndarray                # [K] the object's track id
    tokens: np.ndarray                # [K, 1+N', D_v] float16, the tower's last AHD layer
    motion: np.ndarray                # [K, 8] float32 TME histograms
    texts: list[str]                  # [K] descriptions
    acting: list[str]                 # [K] the anomaly type the object acts on the crop, or ""

    def __len__(self) -> int:
        return len(self.frame)

    def save(self, path: Path) -> None:
        """One .npz, written beside `path` and renamed into place (never read half-written)."""
        lengths = [len(self.labels[name]) for name in self.videos]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, videos=np.asarray(self.videos, str), lengths=np.asarray(lengths),
                 labels=np.concatenate([self.labels[name] for name in self.videos]
                                       or [np.zeros(0, np.int64)]),   # a share may hold none
                 video=self.video, frame=self.frame, object=self.object, tokens=self.tokens,
                 motion=self.motion, texts=np.asarray(self.texts, str),
                 acting=np.asarray(self.acting, str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SplitObjects":
        """What `save` wrote; a DataError naming the file if it cannot be read."""
        try:
            with np.load(path) as z:
                videos = z["videos"].tolist()
                labels = dict(zip(videos, np.split(z["labels"], np.cumsum(z["lengths"])[:-1])))
                return cls(videos, labels, z["video"], z["frame"], z["object"], z["tokens"],
                           z["motion"], z["texts"].tolist(), z["acting"].tolist())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(path, f"not a readable object cache ({err}); delete it and the "
                                  "next run reads the split anew") from err


ROWS = ("frame", "object", "tokens", "motion", "texts", "acting")   # SplitObjects' row fields


def split_objects(cfg: Config, backbone: FrozenBackbone, split: str,
                  report: Report = print) -> SplitObjects:
    """`read_objects` of `split` through the object cache: <cache_dir>/<split>-<key>.npz, key
    a digest of what the objects depend on (the backbone's weights, every source file's name,
    size and modification time, the crop settings), so a change lands in a new file.
    Independent processes sharing the cache read a split one at a time; the processes of one
    job each read their share of its videos (`jobs.shares`)."""
    job = cfg.local
    payload = {"version": OBJECTS_VERSION, "backbone": backbone.digest, "split": split,
               "source": source_fingerprint(cfg, reader_options(cfg)),
               "skip_bad": cfg.prepare.skip_bad,
               "crops": [job.crop_stride, job.expand, job.token_pool],
               **({"tokens": [job.tokens, job.region_clip]} if job.tokens != "crop" else {})}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(job.cache_dir or Path(cfg.prepared_dir) / "objects")
    path = root / f"{split}-{key}.npz"
    if path.is_file():
        report(f"[tvad] object cache hit: {path}")
        return SplitObjects.load(path)
    root.mkdir(parents=True, exist_ok=True)
    if jax.process_count() == 1:
        with waiting_lock(path.with_name(f".{path.stem}.lock")):
            if path.is_file():          # another process read the split meanwhile
                report(f"[tvad] object cache hit: {path}")
                return SplitObjects.load(path)
            objects = read_objects(cfg, backbone, split, report)
            objects.save(path)
    else:
        order = source_reader(cfg).video_names(split)
        read_in_shares(path.with_name(f"incomplete-{path.stem}"), ".npz",
                       lambda share: read_objects(cfg, backbone, split, report, share),
                       SplitObjects.save, SplitObjects.load,
                       lambda shares: join_shares(shares, order, ROWS).save(path))
        objects = SplitObjects.load(path)
    report(f"[tvad] object cache written: {path}")
    return objects


def read_objects(cfg: Config, backbone: FrozenBackbone, split: str, report: Report = print,
                 share: tuple[int, int] = (0, 1)) -> SplitObjects:
    """Crop (or find in its whole frame: `local.tokens`), encode and describe every object of
    every video of `split` (with share (i, n), of every n-th video from the i-th)."""
    job = cfg.local
    reader = source_reader(cfg)
    tokens = (CropTokens(backbone, job.encode_batch, job.token_pool) if job.tokens == "crop"
              else RegionTokens(backbone, job.region_clip, job.token_pool))
    size = backbone.cfg.vision.frame_size
    videos, labels, parts = [], {}, []
    records = iter_records(reader, split, cfg.prepare.skip_bad, report, share)
    for record in progress(records, f"local patterns: objects ({split})",
                           len(reader.video_names(split)[share[0]::share[1]]), "video"):
        sidecar = record_sidecar(record, "paper 003's detector")
        tracks = sidecar_tracks(sidecar)
        if not tracks:
            raise DataError(record.source, "the sidecar lists no objects")
        crops = video_crops(record.frames, tracks, size, job.crop_stride, job.expand,
                            record.source, pixels=job.tokens == "crop")
        if len(crops):      # none: objects seen on no crop frame; the video's frames score 0
            tokens.add(record.frames, crops)
            flow = motion_field(record.frames, record.source)
            parts.append({"video": np.full(len(crops), len(videos)), "frame": crops.frame,
                          "object": crops.object,
                          "motion": box_histograms(flow, np.column_stack([crops.frame,
                                                                          crops.box])),
                          "texts": describe_crops(sidecar, crops.object, crops.frame),
                          "acting": acted_anomalies(sidecar, crops.object, crops.frame)})
        videos.append(record.name)
        labels[record.name] = record.labels.astype(np.int64)
    if not parts:       # no object on any crop frame (a share may be that small)
        parts = [{"video": np.zeros(0, np.int64), "frame": np.zeros(0, np.int64),
                  "object": np.zeros(0, np.int64), "motion": np.zeros((0, BINS), np.float32),
                  "texts": [], "acting": []}]
    joined = {k: np.concatenate([p[k] for p in parts])
              for k in ("video", "frame", "object", "motion")}
    return SplitObjects(videos, labels, tokens=tokens.finish(),
                        texts=[t for p in parts for t in p["texts"]],
                        acting=[a for p in parts for a in p["acting"]], **joined)


def describe_crops(sidecar: dict, objects: np.ndarray, frames: np.ndarray) -> list[str]:
    """The plain description (class, look, action, speed, direction, zone) of each crop's
    object over its frame +- TEXT_WINDOW."""
    scene = scene_of(sidecar)
    by_id = {int(o["id"]): o for o in sidecar["objects"]}
    last = int(sidecar["num_frames"]) - 1
    out = []
    for obj, t in zip(objects, frames):
        window = np.arange(max(t - TEXT_WINDOW, 0), min(t + TEXT_WINDOW, last) + 1)
        out.append(describe_object(by_id[int(obj)], window, scene).description)
    return out


def acted_anomalies(sidecar: dict, objects: np.ndarray, frames: np.ndarray) -> list[str]:
    """Per crop, the anomaly type its object acts on the crop's frames (t-1, t), from the
    sidecar's per-object anomaly span; "" where it acts none."""
    by_id = {int(o["id"]): o for o in sidecar["objects"]}
    out = []
    for obj, t in zip(objects, frames):
        span, kind = by_id[int(obj)].get("anomaly"), by_id[int(obj)].get("anomaly_type")
        out.append(kind if span is not None and span[0] <= t and t - 1 <= span[1] else "")
    return out


class CropTokens:
    """The frozen tower's last AHD layer of the crops of video after video (`add`, then
    `finish` for all of them in order): [K, 1+N/pool^2, D_v] float16, the CLS token, then the
    patch grid average-pooled pool x pool.

    Crops are read in batches of `batch` across videos (one compiled shape; only the last
    batch of all is padded, where one padded batch per video cost ~13% of the tower's time on
    the synthetic splits), and a batch's result is fetched only once the next batch has been
    dispatched: JAX runs it asynchronously, so the host cuts the next video's crops and motion
    meanwhile. A crop's tokens do not depend on the other rows of its batch."""

    def __init__(self, backbone: FrozenBackbone, batch: int, pool: int):
        self._encode = make_encoder(backbone.cfg, backbone.params)
        self.batch, self.pool, self.grid = batch, pool, backbone.cfg.vision.grid
        _check_pool(self.grid, pool)
        self._queued: list[np.ndarray] = []  # crops not yet dispatched
        self._running: tuple[jax.Array, int] | None = None  # (hidden, rows that are crops)
        self._done: list[np.ndarray] = []

    def add(self, frames: np.ndarray, crops: Crops) -> None:
        """Queue crops.pixels [K, 2, H, W, 3] uint8 (the tower's frame size); frames unused."""
        del frames
        queued = np.concatenate(self._queued + [crops.pixels])
        full = len(queued) - len(queued) % self.batch
        for lo in range(0, full, self.batch):
            self._dispatch(queued[lo:lo + self.batch], self.batch)
        self._queued = [queued[full:]]

    def finish(self) -> np.ndarray:
        """The tokens of every crop added since the last `finish`, in order."""
        rest = np.concatenate(self._queued) if self._queued else np.zeros(0)
        if len(rest):
            pad = ((0, self.batch - len(rest)),) + ((0, 0),) * (rest.ndim - 1)
            self._dispatch(np.pad(rest, pad), len(rest))
        self._queued = []
        self._fetch()
        done, self._done = self._done, []
        return np.concatenate(done) if done else np.zeros((0, 0, 0), np.float16)

    def _dispatch(self, pixels: np.ndarray, rows: int) -> None:
        hidden, _ = self._encode(_tower_input(pixels))
        self._fetch()           # the batch before, while this one runs
        self._running = hidden, rows

    def _fetch(self) -> None:
        if self._running is None:
            return
        hidden, rows = self._running
        self._running = None
        hidden = np.asarray(hidden, np.float32)[:rows, -1, 0]        # K, 1+N, D_v
        (h, w), pool = self.grid, self.pool
        k, _, d = hidden.shape
        grid = hidden[:, 1:].reshape(k, h // pool, pool, w // pool, pool, d).mean(axis=(2, 4))
        self._done.append(np.concatenate([hidden[:, :1], grid.reshape(k, -1, d)], 1)
                          .astype(np.float16))


def _tower_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 frames -> the tower's normalized float32 input."""
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return (pixels.astype(np.float32) / 255.0 - mean) / std


def _check_pool(grid: tuple[int, int], pool: int) -> None:
    if grid[0] % pool or grid[1] % pool:
        raise ConfigError(f"local.token_pool {pool} does not divide the tower's {grid[0]} x "
                          f"{grid[1]} patch grid")


REGION_BATCH = 8   # clips per whole-video tower call (one compiled shape)


def region_encoder(backbone: FrozenBackbone, clip_len: int, pool: int):
    """(a video's frames [T, H, W, 3] uint8, frame t [K], grown boxes [K, 4] inclusive) ->
    [K, 1+N/pool^2, D_v] float16 (`local.tokens=region`): the tower reads the whole video in
    clips of `clip_len` frames (the last one padded with the final frame), and each object's
    tokens are the last AHD layer's patch grid of the tubelet holding frame t, sampled
    bilinearly at the centres of a (h/pool) x (w/pool) grid over its box (the crop path's
    pooled grid), after one sample at the box's centre (the slot a crop's CLS token holds)."""
    encode = make_encoder(backbone.cfg, backbone.params)
    vision = backbone.cfg.vision
    size, patch, tubelet = vision.frame_size, vision.patch_size, vision.tubelet
    gh, gw = vision.grid
    _check_pool((gh, gw), pool)
    if clip_len % tubelet or clip_len > vision.max_frames:
        raise ConfigError(f"local.region_clip {clip_len}: the tower reads clips of up to "
                          f"{vision.max_frames} frames in {tubelet}-frame tubelets")

    def last_layer(clips: np.ndarray) -> np.ndarray:                  # [B, clip_len, H, W, 3]
        hidden, _ = encode(_tower_input(clips))
        return np.asarray(hidden[:, -1, :, 1:], np.float32)          # B, T'_c, N, D_v

    def tokens(frames: np.ndarray, t: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        frames, boxes = _tower_sized(frames, boxes, size)
        T = len(frames)
        padded = np.concatenate([frames, np.repeat(frames[-1:], -T % clip_len, axis=0)])
        clips = padded.reshape(-1, clip_len, *size, 3)
        hidden = in_batches(last_layer, REGION_BATCH, clips)         # C, T'_c, N, D_v
        hidden = hidden.reshape(-1, gh, gw, hidden.shape[-1])        # T', h, w, D_v
        x0, y0, x1, y1 = (boxes[:, i, None].astype(np.float32) for i in range(4))
        mh, mw = gh // pool, gw // pool
        across = (np.arange(mw, dtype=np.float32) + 0.5) / mw        # cell centres in [0, 1]
        down = (np.arange(mh, dtype=np.float32) + 0.5) / mh
        xs = np.concatenate([(x0 + x1 + 1) / 2, x0 + across * (x1 + 1 - x0)], axis=1)
        ys = np.concatenate([(y0 + y1 + 1) / 2, y0 + down * (y1 + 1 - y0)], axis=1)
        ys = np.concatenate([ys[:, :1], np.repeat(ys[:, 1:], mw, axis=1)], axis=1)
        xs = np.concatenate([xs[:, :1], np.tile(xs[:, 1:], mh)], axis=1)  # K, 1 + mh mw points
        return _bilinear(hidden[t // tubelet], xs / patch - 0.5,
                         ys / patch - 0.5).astype(np.float16)

    return tokens


class RegionTokens:
    """`region_encoder`'s tokens of each video's objects, in `CropTokens`' form (`add` a
    video's frames and crops, `finish` for all of them in order)."""

    def __init__(self, backbone: FrozenBackbone, clip_len: int, pool: int):
        self._tokens = region_encoder(backbone, clip_len, pool)
        self._done: list[np.ndarray] = []

    def add(self, frames: np.ndarray, crops: Crops) -> None:
        self._done.append(self._tokens(frames, crops.frame, crops.box))

    def finish(self) -> np.ndarray:
        done, self._done = self._done, []
        return np.concatenate(done) if done else np.zeros((0, 0, 0), np.float16)


def _tower_sized(frames: np.ndarray, boxes: np.ndarray, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Frames resized to the tower's input (H', W') (bilinear, aspect not kept) and the
    inclusive boxes mapped onto them."""
    T, H, W, _ = frames.shape
    if (H, W) == size:
        return frames, boxes
    frames = resize_frames(frames, *size)
    scale = np.asarray([size[1] / W, size[0] / H] * 2)
    return frames, (boxes + (0, 0, 1, 1)) * scale - (0, 0, 1, 1)


def _bilinear(grids: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """grids [K, h, w, D] sampled at [K, P] points of column u and row v (grid units, cell
    centres at integers, clamped to the grid) -> [K, P, D]."""
    h, w = grids.shape[1:3]
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    u0, v0 = np.minimum(u.astype(int), w - 2), np.minimum(v.astype(int), h - 2)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    k = np.arange(len(grids))[:, None]
    top = grids[k, v0, u0] * (1 - fu) + grids[k, v0, u0 + 1] * fu
    bottom = grids[k, v0 + 1, u0] * (1 - fu) + grids[k, v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def in_batches(fn, batch: int, *arrays: np.ndarray) -> np.ndarray:
    """fn over rows of `arrays` in fixed-size batches (one compiled shape; the last padded)."""
    out = []
    for lo in range(0, len(arrays[0]), batch):
        chunks = [a[lo:lo + batch] for a in arrays]
        n = len(chunks[0])
        chunks = [np.pad(c, ((0, batch - n),) + ((0, 0),) * (c.ndim - 1)) for c in chunks]
        out.append(np.asarray(fn(*chunks))[:n])
    return np.concatenate(out)
