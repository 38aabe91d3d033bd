"""Region- and track-based detection criteria (RBDC, TBDC; Ramachandra & Jones 2020).

Computed as the community's evaluation script does: detections of all videos sorted by score
(descending, ties in input order); a detection matches every ground-truth region of its video
and frame with IoU >= beta on inclusive pixel boxes; each newly matched region is one true
positive, a detection matching no region is one false positive, one that only overlaps
already-matched regions is neither. A track counts as detected once at least alpha of its
regions are matched. RBDR = TP / regions, TBDR = detected tracks / tracks, FPR = FP / frames;
the curves start at (0, 0) and are integrated (trapezoids) for FPR in [0, 1], holding the
last value out to FPR 1 where the curve stops short of it.

The greedy matching needs no loop over detections: a region is credited to the best-ranked
detection matching it, so TP per rank is a count of first matches, and a track is detected at
the rank of its k-th first-matched region.

The community's file formats are read and written by `tvad_jax.data.track_files`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tvad_jax.data.regions import box_iou
from tvad_jax.data.track_files import read_detections_file, read_tracks_file, txt_files
from tvad_jax.errors import EvalInputError


@dataclasses.dataclass(frozen=True)
class Tracks:
    """Ground-truth anomalous regions of all videos, one row per (track, frame)."""

    video: np.ndarray  # [R] int, index into the video names
    track: np.ndarray  # [R] int, global track index in [0, num_tracks)
    frame: np.ndarray  # [R] int
    boxes: np.ndarray  # [R, 4] float x_min, y_min, x_max, y_max (inclusive pixels)
    num_tracks: int


@dataclasses.dataclass(frozen=True)
class Detections:
    """Scored predicted regions of all videos."""

    video: np.ndarray  # [K] int, index into the video names
    frame: np.ndarray  # [K] int
    boxes: np.ndarray  # [K, 4] float x_min, y_min, x_max, y_max (inclusive pixels)
    scores: np.ndarray  # [K] float


@dataclasses.dataclass(frozen=True)
class RbdcTbdcResult:
    """RBDC, TBDC and the curves they integrate (FPR clipped to [0, 1], (0, 0) first)."""

    rbdc: float
    tbdc: float
    fpr: np.ndarray  # [M] false positives per frame
    rbdr: np.ndarray  # [M] region-based detection rate
    tbdr: np.ndarray  # [M] track-based detection rate
    num_regions: int
    num_tracks: int
    num_detections: int
    num_frames: int
    alpha: float
    beta: float

    def summary(self) -> dict:
        """The JSON-ready numbers (curves left out)."""
        return {"rbdc": self.rbdc, "tbdc": self.tbdc, "num_regions": self.num_regions,
                "num_tracks": self.num_tracks, "num_detections": self.num_detections,
                "num_frames": self.num_frames, "alpha": self.alpha, "beta": self.beta}


def rbdc_tbdc(tracks: Tracks, detections: Detections, num_frames: int, alpha: float = 0.1,
              beta: float = 0.1) -> RbdcTbdcResult:
    """RBDC and TBDC of `detections` against ground-truth `tracks` over `num_frames` frames."""
    _check_inputs(tracks, detections, num_frames, alpha, beta)
    num_regions, num_det = len(tracks.frame), len(detections.frame)
    rank_order = np.argsort(-detections.scores, kind="stable")  # [K] detection at each rank
    pair_rank, pair_gt = _matching_pairs(tracks, detections, rank_order, beta)

    # Each region goes to the best-ranked detection matching it (pairs are in rank order).
    matched_gt, first_pair = np.unique(pair_gt, return_index=True)  # [Q]
    first_rank = pair_rank[first_pair]  # [Q]
    true_pos = np.bincount(first_rank, minlength=num_det)  # [K]
    false_pos = np.bincount(pair_rank, minlength=num_det) == 0  # [K]
    detected_rank = _track_detection_ranks(tracks, matched_gt, first_rank, alpha)
    tracks_detected = np.cumsum(np.bincount(detected_rank, minlength=num_det))  # [K]

    fpr = np.r_[0.0, np.cumsum(false_pos)] / num_frames  # [K+1]
    rbdr = np.r_[0.0, np.cumsum(true_pos)] / num_regions
    tbdr = np.r_[0.0, tracks_detected] / tracks.num_tracks
    stop = np.searchsorted(fpr, 1.0, side="right")  # points with FPR <= 1
    fpr, rbdr, tbdr = fpr[:stop], rbdr[:stop], tbdr[:stop]
    if fpr[-1] != 1.0:
        fpr, rbdr, tbdr = np.r_[fpr, 1.0], np.r_[rbdr, rbdr[-1]], np.r_[tbdr, tbdr[-1]]
    return RbdcTbdcResult(
        rbdc=float(np.trapezoid(rbdr, fpr)), tbdc=float(np.trapezoid(tbdr, fpr)),
        fpr=fpr, rbdr=rbdr, tbdr=tbdr, num_regions=num_regions,
        num_tracks=tracks.num_tracks, num_detections=num_det, num_frames=int(num_frames),
        alpha=float(alpha), beta=float(beta))


def _matching_pairs(tracks: Tracks, detections: Detections, rank_order: np.ndarray,
                    beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(rank [P], region [P]) of every detection-region pair of one video and frame with
    IoU >= beta, in rank order."""
    stride = int(max(tracks.frame.max(), detections.frame.max(initial=0))) + 1
    gt_key = tracks.video.astype(np.int64) * stride + tracks.frame  # [R]
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    det_key = (detections.video.astype(np.int64) * stride + detections.frame)[rank_order]  # [K]
    lo = np.searchsorted(gt_key_sorted, det_key, side="left")  # [K]
    num_cand = np.searchsorted(gt_key_sorted, det_key, side="right") - lo  # [K]
    pair_rank = np.repeat(np.arange(len(det_key)), num_cand)  # [P]
    within = np.arange(len(pair_rank)) - np.repeat(np.cumsum(num_cand) - num_cand, num_cand)
    pair_gt = gt_order[np.repeat(lo, num_cand) + within]  # [P]
    hit = box_iou(detections.boxes[rank_order[pair_rank]], tracks.boxes[pair_gt]) >= beta
    return pair_rank[hit], pair_gt[hit]


def _track_detection_ranks(tracks: Tracks, matched_gt: np.ndarray, first_rank: np.ndarray,
                           alpha: float) -> np.ndarray:
    """Rank at which each detected track reaches alpha: that of its k-th matched region."""
    needed = _regions_needed(np.bincount(tracks.track, minlength=tracks.num_tracks), alpha)
    match_track = tracks.track[matched_gt]  # [Q]
    order = np.lexsort((first_rank, match_track))
    match_track, match_rank = match_track[order], first_rank[order]
    count = np.arange(len(order)) - np.searchsorted(match_track, match_track) + 1  # 1-based
    return match_rank[count == needed[match_track]]


def _regions_needed(track_len: np.ndarray, alpha: float) -> np.ndarray:
    """Smallest k >= 1 with k / len >= alpha, in the community script's float arithmetic."""
    k = np.maximum(np.ceil(alpha * track_len).astype(np.int64), 1)
    k = np.where((k > 1) & ((k - 1) / np.maximum(track_len, 1) >= alpha), k - 1, k)
    return np.where(k / np.maximum(track_len, 1) < alpha, k + 1, k)


def _check_inputs(tracks: Tracks, detections: Detections, num_frames: int, alpha: float,
                  beta: float) -> None:
    if not 0 < alpha <= 1 or not 0 <= beta <= 1:
        raise EvalInputError(f"need 0 < alpha <= 1 and 0 <= beta <= 1, got {alpha}, {beta}")
    _check_num_frames(num_frames)
    if len(tracks.frame) == 0:
        raise EvalInputError("no ground-truth regions: RBDC and TBDC are undefined")
    for what, data in (("tracks", tracks), ("detections", detections)):
        columns = [np.asarray(getattr(data, f.name)) for f in dataclasses.fields(data)
                   if f.name not in ("boxes", "num_tracks")]
        if data.boxes.shape != (len(data.boxes), 4) or \
                any(c.shape != (len(data.boxes),) for c in columns):
            raise EvalInputError(f"{what}: boxes must be [N, 4] and the other fields [N], got "
                                 f"{data.boxes.shape} and {[c.shape for c in columns]}")
        if (data.frame < 0).any() or (data.video < 0).any():
            raise EvalInputError(f"{what}: negative frame or video index")
    if (tracks.track < 0).any() or (tracks.track >= tracks.num_tracks).any():
        raise EvalInputError(f"tracks: track indices must lie in [0, {tracks.num_tracks})")
    bad = np.flatnonzero(~np.isfinite(detections.scores))
    if len(bad):
        raise EvalInputError(f"detection {bad[0]} has score {detections.scores[bad[0]]}")


def _check_num_frames(num_frames: int) -> None:
    if num_frames <= 0:
        raise EvalInputError(f"the total number of frames must be positive, got {num_frames}")


def tracks_from_rows(rows_per_video: list[np.ndarray]) -> Tracks:
    """Tracks from per-video arrays [R_v, 6] of tracks-file rows (video index = list index)."""
    rows = np.concatenate([r.reshape(-1, 6) for r in rows_per_video] or [np.zeros((0, 6))])
    video = np.repeat(np.arange(len(rows_per_video)), [len(r) for r in rows_per_video])
    pairs = np.stack([video, rows[:, 0].astype(np.int64)], axis=1)  # [R, 2] (video, track id)
    unique_pairs, track = np.unique(pairs, axis=0, return_inverse=True)
    return Tracks(video=video, track=track.reshape(-1), frame=rows[:, 1].astype(np.int64),
                  boxes=rows[:, 2:6].astype(np.float64), num_tracks=len(unique_pairs))


def detections_from_rows(rows_per_video: list[np.ndarray]) -> Detections:
    """Detections from per-video arrays [K_v, 6] of detections-file rows."""
    rows = np.concatenate([r.reshape(-1, 6) for r in rows_per_video] or [np.zeros((0, 6))])
    video = np.repeat(np.arange(len(rows_per_video)), [len(r) for r in rows_per_video])
    return Detections(video=video, frame=rows[:, 0].astype(np.int64),
                      boxes=rows[:, 1:5].astype(np.float64), scores=rows[:, 5].astype(np.float64))


def read_tracks(directory: str | Path, num_frames: int | None = None
                ) -> tuple[list[str], Tracks]:
    """(video names, Tracks) from a folder of `<video>.txt` tracks files (names sorted);
    frame ids must lie below `num_frames` when given."""
    paths = txt_files(Path(directory))
    return [p.stem for p in paths], tracks_from_rows([read_tracks_file(p, num_frames)
                                                      for p in paths])


def read_detections(directory: str | Path, videos: list[str], num_frames: int | None = None
                    ) -> Detections:
    """Detections from a folder of `<video>.txt` files; every video must be in `videos`, and
    frame ids below `num_frames` when given."""
    index = {name: i for i, name in enumerate(videos)}
    rows: list[np.ndarray] = [np.zeros((0, 6)) for _ in videos]
    for path in txt_files(Path(directory)):
        if path.stem not in index:
            raise EvalInputError(f"{path}: detections for video {path.stem!r}, which has no "
                                 f"ground-truth tracks file")
        rows[index[path.stem]] = read_detections_file(path, num_frames)
    return detections_from_rows(rows)


def rbdc_tbdc_from_dirs(tracks_dir: str | Path, detections_dir: str | Path, num_frames: int,
                        alpha: float = 0.1, beta: float = 0.1) -> RbdcTbdcResult:
    """`rbdc_tbdc` of a folder of tracks files and a folder of detections files (every frame
    id below `num_frames`, the total of all videos)."""
    _check_num_frames(num_frames)
    videos, tracks = read_tracks(tracks_dir, num_frames)
    return rbdc_tbdc(tracks, read_detections(detections_dir, videos, num_frames), num_frames,
                     alpha, beta)
