"""Per-object track windows: box features of every object of a split, standardized and cut
into L_p observed steps -> the next L_f steps (what S3M trains on and scores).

Features, F = 6 per frame t where the object is visible, from the inclusive pixel box
(x0, y0, x1, y1) of its visible pixels in a W x H frame (the box covers [x0, x1 + 1) in x):

    cx = (x0 + x1 + 1) / (2 W)     centre, fractions of the frame width / height
    cy = (y0 + y1 + 1) / (2 H)
    w  = (x1 - x0 + 1) / W         size, fractions of the frame width / height
    h  = (y1 - y0 + 1) / H
    vx = cx(t) - cx(t - 1)         centre velocity, per frame
    vy = cy(t) - cy(t - 1)

A track is cut into segments of consecutive visible frames (an object hidden for a frame
starts a new segment). The velocity needs the previous frame, so a segment of n frames gives a
sequence of n - 1 steps (its frames 2..n). Each feature is then standardized, (f - mean) / std,
with mean and std over every step of the training split only. `clips` cuts each sequence into
windows; a sequence shorter than L_p + L_f gives none.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from tvad_jax.data.batches import array_batches
from tvad_jax.data.readers import source_reader
from tvad_jax.errors import DataError

FEATURES = ("cx", "cy", "w", "h", "vx", "vy")
NUM_FEATURES = len(FEATURES)


# ----------------------------------------------------------------------------- features


def box_features(boxes, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One object's sidecar boxes -> per segment of consecutive frames (frames, features).

    boxes: rows [t, x0, y0, x1, y1] (inclusive pixels; any order). Returns a list of
    (frames (n-1,) int64, features (n-1, 6) float32) for every segment of n >= 2 consecutive
    frames, the features as in the module docstring (not standardized).
    """
    rows = np.asarray(boxes, np.float64).reshape(-1, 5)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    t = rows[:, 0].astype(np.int64)
    x0, y0, x1, y1 = rows[:, 1:].T
    geometry = np.stack([(x0 + x1 + 1) / (2 * width), (y0 + y1 + 1) / (2 * height),
                         (x1 - x0 + 1) / width, (y1 - y0 + 1) / height], -1)  # (n, 4)
    segments = []
    for idx in np.split(np.arange(len(t)), np.flatnonzero(np.diff(t) != 1) + 1):
        if len(idx) < 2:
            continue
        g = geometry[idx]
        velocity = np.diff(g[:, :2], axis=0)  # (n-1, 2)
        segments.append((t[idx[1:]], np.concatenate([g[1:], velocity], -1).astype(np.float32)))
    return segments


@dataclasses.dataclass
class Sequences:
    """Every object's feature sequences in a split (unstandardized).

    Attributes:
      videos, num_frames: the split's videos in reader order and their frame counts.
      items: (video index, object id, frames (n,), features (n, F)) per track segment.
    """

    videos: list[str]
    num_frames: list[int]
    items: list[tuple[int, int, np.ndarray, np.ndarray]]


def read_sidecars(cfg, split: str) -> list[tuple[str, dict]]:
    """(video name, sidecar) of every video of a split; the object tracks come from these."""
    reader = source_reader(cfg)
    if not hasattr(reader, "read_sidecar"):
        raise DataError(cfg.prepare_source, "the S3M job needs per-object tracks, which only "
                                            "the synthetic benchmark's sidecars provide")
    return [(name, reader.read_sidecar(name)) for name in reader.video_names(split)]


def sequences(sidecars: list[tuple[str, dict]]) -> Sequences:
    """Feature sequences of every object of every video."""
    videos, num_frames, items = [], [], []
    for v, (name, sidecar) in enumerate(sidecars):
        videos.append(name)
        num_frames.append(int(sidecar["num_frames"]))
        for obj in sidecar["objects"]:
            for frames, feats in box_features(obj["boxes"], sidecar["width"], sidecar["height"]):
                items.append((v, int(obj["id"]), frames, feats))
    return Sequences(videos, num_frames, items)


def feature_stats(seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (F,) over every step of every sequence (std floored)."""
    if not seqs.items:
        raise ValueError("no object sequences to compute feature statistics from")
    allf = np.concatenate([feats for *_, feats in seqs.items]).astype(np.float64)
    return allf.mean(0), np.maximum(allf.std(0), 1e-6)


@dataclasses.dataclass
class Windows:
    """Fixed-shape windows of a split, standardized.

    Attributes:
      past (N, L_p, F), future (N, L_f, F): float32 inputs and targets.
      frames (N, L_f): int32 frame index of each predicted step.
      video (N,): int32 index into `videos`.
      videos, num_frames: as in `Sequences`.
    """

    past: np.ndarray
    future: np.ndarray
    frames: np.ndarray
    video: np.ndarray
    videos: list[str]
    num_frames: list[int]

    def __len__(self) -> int:
        return int(self.past.shape[0])


def make_windows(seqs: Sequences, mean, std, past: int, future: int) -> Windows:
    """Standardize every sequence and cut it into L_p -> L_f windows (`s3m.clips`)."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    xs, ys, fs, vs = [], [], [], []
    for v, _, frames, feats in seqs.items:
        x, y = clips((feats - mean) / std, past, future)
        if not len(x):
            continue
        _, f = clips(frames[:, None], past, future)
        xs.append(x)
        ys.append(y)
        fs.append(f[..., 0])
        vs.append(np.full(len(x), v))
    F = NUM_FEATURES
    return Windows(_concat(xs, (0, past, F), np.float32), _concat(ys, (0, future, F), np.float32),
                   _concat(fs, (0, future), np.int32), _concat(vs, (0,), np.int32),
                   seqs.videos, seqs.num_frames)


def _concat(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty_shape, dtype)


def make_dataset(windows: Windows, batch_size: int, seed: int = 0,
                 process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
    """This process's training batches {"past": (b, L_p, F), "future": (b, L_f, F)}, forever
    (`batches.array_batches`: b = batch_size / process_count, checkpointable)."""
    if not len(windows):
        raise ValueError("no training windows")
    return array_batches({"past": windows.past, "future": windows.future}, batch_size, seed,
                         process_index, process_count)


def clips(track, past: int, future: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of one object's embeddings (T, D) -> inputs (N, L_p, D), targets (N, L_f, D).

    Window n observes steps n .. n+L_p-1 and predicts n+L_p .. n+L_p+L_f-1; a track shorter
    than L_p + L_f gives N = 0.
    """
    track = np.asarray(track)
    n = max(track.shape[0] - past - future + 1, 0)
    idx = np.arange(n)[:, None] + np.arange(past + future)
    windows = track[idx]  # (N, L_p + L_f, D)
    return windows[:, :past], windows[:, past:]
