"""Speed of the evaluation metrics at test-set scale; prints one JSON object.

    .venv/bin/python benchmarks/bench_metrics.py [--frames 100000] [--detections 50000]

Frame AUC over 100k frames (100 videos), RBDC/TBDC of 50k detections against ~19k
ground-truth regions in 107 videos (ShanghaiTech's size), reading those detections from files,
and heatmap -> regions on 1000 frames of 64x64. Each timing is the median of 3 runs after one
warm-up run.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tvad_jax.data import regions, track_files
from tvad_jax.eval import metrics, rbdc
from tvad_jax.launch import reexec_with_huge_pages


def median_seconds(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_frames(num_frames: int, rng: np.random.Generator):
    per_video = num_frames // 100
    labels = {f"v{i:03d}": (np.arange(per_video) % 200 > 150).astype(np.int64)
              for i in range(100)}
    scores = {k: np.clip(0.3 * v + rng.normal(0.4, 0.2, len(v)), 0, 1) for k, v in labels.items()}
    return scores, labels


def synthetic_tracks(rng: np.random.Generator, videos: int = 107, regions_per_video: int = 177):
    """Per-video tracks rows: three moving boxes per video, ShanghaiTech-like sizes."""
    rows = []
    for _ in range(videos):
        video_rows = []
        for track in range(3):
            length = regions_per_video // 3
            start = rng.integers(0, 300)
            frames = start + np.arange(length)
            xy = rng.uniform(0, 700, 2) + np.cumsum(rng.normal(0, 3, (length, 2)), axis=0)
            size = rng.uniform(30, 120, 2)
            video_rows.append(np.column_stack([np.full(length, track), frames, xy, xy + size]))
        rows.append(np.concatenate(video_rows).round())
    return rows


def synthetic_detections(track_rows, count: int, rng: np.random.Generator):
    """Per-video detections rows: jittered ground-truth boxes plus random false alarms."""
    sizes = np.diff(np.linspace(0, count, len(track_rows) + 1).astype(int))
    rows = []
    for gt, per_video in zip(track_rows, sizes):
        hits = gt[rng.integers(0, len(gt), per_video // 2)]
        boxes = hits[:, 2:6] + rng.normal(0, 15, (len(hits), 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        false_xy = rng.uniform(0, 800, (per_video - len(hits), 2))
        false = np.column_stack([false_xy, false_xy + rng.uniform(20, 100, (len(false_xy), 2))])
        frames = np.r_[hits[:, 1], rng.integers(0, 400, len(false))]
        scores = np.r_[rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.0, 0.8, len(false))]
        rows.append(np.column_stack([frames, np.r_[boxes, false], scores]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--detections", type=int, default=50_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    scores, labels = synthetic_frames(args.frames, rng)
    auc_s = median_seconds(lambda: metrics.frame_auc(scores, labels))
    smoothed_s = median_seconds(lambda: metrics.frame_auc(scores, labels, sigma=3.0))

    track_rows = synthetic_tracks(rng)
    det_rows = synthetic_detections(track_rows, args.detections, rng)
    tracks, detections = rbdc.tracks_from_rows(track_rows), rbdc.detections_from_rows(det_rows)
    result = rbdc.rbdc_tbdc(tracks, detections, num_frames=40791)
    rbdc_s = median_seconds(lambda: rbdc.rbdc_tbdc(tracks, detections, num_frames=40791))
    with tempfile.TemporaryDirectory() as tmp:
        tracks_dir, det_dir = Path(tmp) / "tracks", Path(tmp) / "det"
        tracks_dir.mkdir()
        det_dir.mkdir()
        for i, (gt, det) in enumerate(zip(track_rows, det_rows)):
            track_files.write_tracks(tracks_dir / f"{i:03d}.txt", gt)
            track_files.write_detections(det_dir / f"{i:03d}.txt", det)
        files_s = median_seconds(lambda: rbdc.rbdc_tbdc_from_dirs(tracks_dir, det_dir, 40791))

    heat = rng.random((1000, 64, 64)) ** 8  # sparse blobs above 0.5
    regions_s = median_seconds(lambda: regions.heatmap_regions(heat))

    print(json.dumps({
        "benchmark": "eval_metrics",
        "machine": platform.processor() or platform.machine(),
        "frame_auc": {"frames": args.frames, "videos": len(labels), "seconds": auc_s},
        "frame_auc_sigma3": {"frames": args.frames, "seconds": smoothed_s},
        "rbdc_tbdc": {"detections": len(detections.frame), "regions": result.num_regions,
                      "tracks": result.num_tracks, "seconds": rbdc_s,
                      "rbdc": result.rbdc, "tbdc": result.tbdc},
        "rbdc_tbdc_from_files": {"files": 2 * len(track_rows), "seconds": files_s},
        "heatmap_regions": {"frames": heat.shape[0], "size": list(heat.shape[1:]),
                            "seconds": regions_s},
    }, indent=2))


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
