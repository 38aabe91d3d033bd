"""Noisy detections from the simulator's boxes and a small ByteTrack-style IoU tracker (numpy).

Paper 004 (VLAVAD, section 4.1) builds object tracks with ByteTrack over detections (tracking
confidence threshold 0.5, NMS 0.3, boxes under 300 px^2 dropped). The synthetic benchmark's
sidecar holds exact per-object boxes instead; to exercise the pipeline as on real data these
are turned into per-frame detections with a detector's errors (jittered edges, misses, false
boxes) and tracked back into tracks:

    dets = noisy_detections(sidecar_tracks(sidecar), T, W, H, DetectionNoise(), seed=0)
    tracks = track(dets, TrackerConfig())   # [(track id, rows [n, 5] (t, x0, y0, x1, y1))]
    tracks = tracks_from_sidecar(sidecar, name, DetectionNoise(), TrackerConfig(), seed=0)
    classes = track_categories(tracks, sidecar)   # {track id: class}, a detector's labels

Boxes are inclusive pixel boxes (x1, y1 the last pixel inside), as everywhere in `tvad_jax.data`.
ByteTrack's Kalman filter is replaced by a constant-velocity prediction of each track's box.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from tvad_jax.data.object_crops import sidecar_tracks
from tvad_jax.data.regions import box_iou
from tvad_jax.errors import DataError

_FALSE_SCORE = (0.05, 0.6)   # confidence range of false boxes
_VELOCITY_MOMENTUM = 0.5     # weight of the old velocity when a track's box is updated


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclasses.dataclass(frozen=True)
class DetectionNoise:
    """How a simulated detector errs on the true boxes (see `noisy_detections`)."""

    jitter: float = 0.05      # std of each box edge's shift, as a fraction of the box's w / h
    drop: float = 0.05        # probability that a true box is missed in a frame
    false_rate: float = 0.02  # expected false boxes per frame (Poisson)
    score_low: float = 0.3    # true boxes score U(score_low, 1); false boxes U(0.05, 0.6)

    def __post_init__(self):
        if not self.jitter >= 0.0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        _check_unit("drop", self.drop)
        if not self.false_rate >= 0.0:
            raise ValueError(f"false_rate must be >= 0, got {self.false_rate}")
        _check_unit("score_low", self.score_low)


def noisy_detections(tracks: list[tuple[int, np.ndarray]], num_frames: int, width: int,
                     height: int, noise: DetectionNoise, seed: int) -> list[np.ndarray]:
    """Per frame t, detections [m_t, 5] float32 of (x0, y0, x1, y1, score): every true box
    jittered (clipped to the frame, kept >= 1 px), some dropped, some false boxes of plausible
    sizes (those of the true boxes, else 5-20% of the frame) added; rows in random order.
    Deterministic for a seed. A true box outside frames [0, num_frames) is a ValueError."""
    rng = np.random.default_rng(seed)
    rows = [np.asarray(r, np.int64).reshape(-1, 5) for _, r in tracks]
    rows = np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)      # [R, 5]
    bad = (rows[:, 0] < 0) | (rows[:, 0] >= num_frames)
    if bad.any():
        raise ValueError(f"box at frame {int(rows[bad][0, 0])} outside the video's "
                         f"{num_frames} frames")
    t = rows[:, 0]
    box = rows[:, 1:].astype(np.float64)                                     # [R, 4]
    size = np.stack([box[:, 2] - box[:, 0] + 1, box[:, 3] - box[:, 1] + 1], 1)  # [R, 2] w, h
    # True boxes: every edge shifted by jitter x the box's size, clipped, x1 >= x0 kept.
    box = box + rng.normal(size=box.shape) * noise.jitter * np.tile(size, 2)
    box = _clip(box, width, height)
    kept = rng.random(len(rows)) >= noise.drop                              # [R]
    score = rng.uniform(noise.score_low, 1.0, len(rows))                    # [R]
    true = np.concatenate([box, score[:, None]], 1)[kept]                   # [R', 5]
    t = t[kept]
    # False boxes: Poisson per frame, sizes of random true boxes (x U(0.7, 1.3)), anywhere.
    counts = rng.poisson(noise.false_rate, num_frames)                      # [T]
    n = int(counts.sum())
    if len(size):
        wh = size[rng.integers(0, len(size), n)] * rng.uniform(0.7, 1.3, (n, 2))
    else:
        wh = rng.uniform(0.05, 0.2, (n, 2)) * [width, height]
    wh = np.minimum(np.maximum(wh, 1.0), [width, height])                   # [n, 2]
    x0 = rng.uniform(0.0, 1.0, n) * (width - wh[:, 0])
    y0 = rng.uniform(0.0, 1.0, n) * (height - wh[:, 1])
    false = np.stack([x0, y0, x0 + wh[:, 0] - 1, y0 + wh[:, 1] - 1,
                      rng.uniform(*_FALSE_SCORE, n)], 1)                    # [n, 5]
    false[:, :4] = _clip(false[:, :4], width, height)
    false_t = np.repeat(np.arange(num_frames), counts)                      # [n]
    frames = []
    for f in range(num_frames):
        dets = np.concatenate([true[t == f], false[false_t == f]])
        frames.append(dets[rng.permutation(len(dets))].astype(np.float32))
    return frames


def _clip(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes [N, 4] clipped to the frame with x1 >= x0 and y1 >= y0 (at least one pixel)."""
    x0 = np.clip(box[:, 0], 0, width - 1)
    y0 = np.clip(box[:, 1], 0, height - 1)
    x1 = np.clip(box[:, 2], x0, width - 1)
    y1 = np.clip(box[:, 3], y0, height - 1)
    return np.stack([x0, y0, x1, y1], 1)


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """ByteTrack-style association settings (see `track`)."""

    high: float = 0.5        # first-association confidence threshold (paper: 0.5)
    low: float = 0.1         # detections in [low, high) only extend tracks (second association)
    match_iou: float = 0.3   # minimum IoU for a match
    new_track: float = 0.6   # an unmatched high detection starts a track only at this confidence
    max_lost: int = 8        # frames a track survives without a match
    min_area: float = 0.0    # boxes under this (pixels^2) dropped first (paper: 300 at full scale)
    nms_iou: float = 0.3     # per-frame NMS before association (paper: 0.3); 1 turns it off

    def __post_init__(self):
        for name in ("high", "low", "new_track"):
            _check_unit(name, getattr(self, name))
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        if self.new_track < self.high:
            raise ValueError(f"new_track must be >= high, got new_track={self.new_track}, "
                             f"high={self.high}")
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"match_iou must lie in (0, 1], got {self.match_iou}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must lie in (0, 1], got {self.nms_iou}")
        if int(self.max_lost) != self.max_lost or self.max_lost < 0:
            raise ValueError(f"max_lost must be an integer >= 0, got {self.max_lost}")
        if not self.min_area >= 0.0:
            raise ValueError(f"min_area must be >= 0, got {self.min_area}")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [n, m] of inclusive pixel boxes a [n, 4], b [m, 4]
    (area = (x1-x0+1)(y1-y0+1))."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return box_iou(a[:, None], b[None]).reshape(len(a), len(b))


def _nms(dets: np.ndarray, threshold: float) -> np.ndarray:
    """Detections [m, 5] kept by greedy NMS: best score first, dropping boxes with IoU above
    threshold with a kept one; returned best score first."""
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    overlap = iou(dets[:, :4], dets[:, :4])                                  # [m, m]
    keep = np.ones(len(dets), bool)
    for i in range(len(dets)):
        if keep[i]:
            keep[i + 1:] &= overlap[i, i + 1:] <= threshold
    return dets[keep]


@dataclasses.dataclass
class _Track:
    """A live track: its matched frames and boxes, and its box velocity per frame."""

    id: int
    frames: list[int]
    boxes: list[np.ndarray]                         # each [4] float64
    velocity: np.ndarray | None = None              # [4] per frame; None before a 2nd match

    def predict(self, t: int) -> np.ndarray:
        """The box [4] expected at frame t: the last box moved at constant velocity."""
        if self.velocity is None:
            return self.boxes[-1]
        box = self.boxes[-1] + self.velocity * (t - self.frames[-1])
        centre = (box[:2] + box[2:]) / 2
        half = np.maximum(box[2:] - box[:2], 0.0) / 2       # a shrinking box stops at 1 px
        return np.concatenate([centre - half, centre + half])

    def update(self, t: int, box: np.ndarray) -> None:
        """Append the box [4] matched at frame t; the velocity follows the step smoothed."""
        step = (box - self.boxes[-1]) / (t - self.frames[-1])
        self.velocity = step if self.velocity is None else (
            _VELOCITY_MOMENTUM * self.velocity + (1 - _VELOCITY_MOMENTUM) * step)
        self.frames.append(t)
        self.boxes.append(box)


def _associate(tracks: list[_Track], boxes: np.ndarray, t: int, min_iou: float
               ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching on 1 - IoU of predicted track boxes and boxes [m, 4], pairs with
    IoU >= min_iou only: (matched (track, box) index pairs, unmatched tracks, unmatched boxes)."""
    if not tracks or not len(boxes):
        return [], list(range(len(tracks))), list(range(len(boxes)))
    overlap = iou(np.stack([tr.predict(t) for tr in tracks]), boxes)        # [K, m]
    cost = np.where(overlap >= min_iou, 1.0 - overlap, 2.0)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]
    matched_t = {r for r, _ in pairs}
    matched_b = {c for _, c in pairs}
    return (pairs, [i for i in range(len(tracks)) if i not in matched_t],
            [j for j in range(len(boxes)) if j not in matched_b])


def track(detections: list[np.ndarray], cfg: TrackerConfig) -> list[tuple[int, np.ndarray]]:
    """ByteTrack-style tracking of per-frame detections [m_t, 5] (x0, y0, x1, y1, score).

    Per frame: boxes under min_area and scores under low dropped, NMS; then (1) detections
    with score >= high matched to live (active and lost) tracks by IoU with each track's
    constant-velocity predicted box, Hungarian on 1 - IoU with IoU >= match_iou; (2) detections
    in [low, high) matched the same way to the tracks still unmatched; (3) unmatched high
    detections with score >= new_track start tracks. A track with more than max_lost frames
    missed in a row ends. Returns (track id from 1, rows [n, 5] int64 (t, x0, y0, x1, y1),
    boxes rounded, only the matched frames), sorted by id, like `sidecar_tracks`."""
    live: list[_Track] = []
    done: list[_Track] = []
    next_id = 1
    for t, dets in enumerate(detections):
        dets = np.asarray(dets, np.float64)
        if dets.ndim != 2 or dets.shape[1] != 5:
            if dets.size:
                raise ValueError(f"frame {t}: detections must be [m, 5], got {dets.shape}")
            dets = dets.reshape(0, 5)
        done += [tr for tr in live if t - tr.frames[-1] - 1 > cfg.max_lost]
        live = [tr for tr in live if t - tr.frames[-1] - 1 <= cfg.max_lost]
        area = (dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
        dets = dets[(area >= cfg.min_area) & (dets[:, 4] >= cfg.low)]
        dets = _nms(dets, cfg.nms_iou)                                       # [m', 5]
        high, low = dets[dets[:, 4] >= cfg.high], dets[dets[:, 4] < cfg.high]
        pairs, rest, new = _associate(live, high[:, :4], t, cfg.match_iou)
        for i, j in pairs:
            live[i].update(t, high[j, :4])
        pairs_low, _, _ = _associate([live[i] for i in rest], low[:, :4], t, cfg.match_iou)
        for i, j in pairs_low:
            live[rest[i]].update(t, low[j, :4])
        for j in new:
            if high[j, 4] >= cfg.new_track:
                live.append(_Track(next_id, [t], [high[j, :4]]))
                next_id += 1
    out = []
    for tr in sorted(done + live, key=lambda tr: tr.id):
        boxes = np.rint(np.stack(tr.boxes)).astype(np.int64)                 # [n, 4]
        out.append((tr.id, np.column_stack([np.asarray(tr.frames, np.int64), boxes])))
    return out


def tracks_from_sidecar(sidecar: dict, source: str, noise: DetectionNoise | None,
                        cfg: TrackerConfig, seed: int) -> list[tuple[int, np.ndarray]]:
    """Tracks of one video's sidecar: with noise None its exact simulator tracks
    (`sidecar_tracks`), else those made into noisy detections and tracked back (`track`), as a
    detector and ByteTrack would on real video. No objects at all is a DataError on source."""
    try:
        objects = sidecar["objects"]
        num_frames, width, height = (int(sidecar[k]) for k in ("num_frames", "width", "height"))
    except KeyError as err:
        raise DataError(source, f"sidecar has no {err.args[0]!r} field") from None
    if not objects:
        raise DataError(source, "sidecar lists no objects to track")
    exact = sidecar_tracks(sidecar)
    if noise is None:
        return exact
    try:
        dets = noisy_detections(exact, num_frames, width, height, noise, seed)
    except ValueError as err:
        raise DataError(source, str(err)) from None
    return track(dets, cfg)


def track_categories(tracks: list[tuple[int, np.ndarray]], sidecar: dict,
                     min_iou: float = 0.3) -> dict[int, str]:
    """The class of each track, as a detector would label it: per frame the class of the
    sidecar object its box overlaps most (IoU >= min_iou), the most common over the track's
    frames; "object" where no frame overlaps any."""
    boxes: dict[int, list[tuple[np.ndarray, str]]] = {}
    for obj in sidecar["objects"]:
        for t, *box in obj["boxes"]:
            boxes.setdefault(int(t), []).append((np.asarray(box, np.float64), obj["class"]))
    out = {}
    for track_id, rows in tracks:
        votes: dict[str, int] = {}
        for t, *box in rows:
            here = boxes.get(int(t), [])
            if not here:
                continue
            overlap = iou(np.asarray([box], np.float64), np.stack([b for b, _ in here]))[0]
            best = int(np.argmax(overlap))
            if overlap[best] >= min_iou:
                votes[here[best][1]] = votes.get(here[best][1], 0) + 1
        out[int(track_id)] = max(votes, key=lambda c: (votes[c], c)) if votes else "object"
    return out
