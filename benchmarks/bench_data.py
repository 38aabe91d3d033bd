"""Data throughput: synthesizing the benchmark, preparing shards, and loading clips.

    .venv/bin/python benchmarks/bench_data.py [--videos 200] [--workers 2]

Prints one JSON object. The default renders the full default benchmark (200 videos of 64
frames at 96x96), the size the foundation issue asks to build in under 2 minutes here. Beside
the training loader (shuffled), an ordered pass over `train` as the feature caches read it,
with and without the decoded videos a loader keeps (`LoaderConfig.recent_videos`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.pipeline import make_dataset, open_split, view_loader
from tvad_jax.data.prepare import prepare
from tvad_jax.data.synthetic.generate import synthesize
from tvad_jax.launch import reexec_with_huge_pages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    cfg = config_lib.get("default")
    scale = args.videos / 200
    with tempfile.TemporaryDirectory() as tmp:
        synth = dataclasses.replace(
            cfg.synth, out_dir=f"{tmp}/synth", workers=args.workers,
            videos_train=round(80 * scale), videos_val=round(24 * scale),
            videos_test=round(56 * scale), videos_train_normal=round(40 * scale))
        cfg = dataclasses.replace(cfg, synth=synth)
        start = time.perf_counter()
        synthesize(synth)
        synth_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare(dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare,
                                                                     annotate=False)),
                report=lambda m: None)
        prepare_s = time.perf_counter() - start
        source, lengths = open_split(cfg.prepared_dir, "train")
        iterator = iter(make_dataset(source, lengths, cfg.loader))
        next(iterator)  # warm-up
        start = time.perf_counter()
        for _ in range(args.batches):
            next(iterator)
        load_s = time.perf_counter() - start
        ordered = {}
        for _ in range(2):          # interleaved rounds, the best of each (warm file cache)
            for recent in (cfg.loader.recent_videos, 0):
                rate = _ordered_pass(source, lengths, cfg.tvad.stage1.view, recent)
                ordered[recent] = max(rate, ordered.get(recent, 0.0))
    videos = sum(synth.videos_in(s) for s in ("train", "val", "test", "train_normal"))
    print(json.dumps({
        "videos": videos, "frames_per_video": synth.num_frames,
        "resolution": [synth.height, synth.width], "workers": args.workers,
        "synth_seconds": round(synth_s, 2), "synth_videos_per_s": round(videos / synth_s, 2),
        "prepare_seconds": round(prepare_s, 2),
        "prepare_videos_per_s": round(videos / prepare_s, 2),
        "loader_clips_per_s": round(args.batches * cfg.loader.batch_size / load_s, 1),
        "loader_clip_shape": [cfg.loader.clip_len, cfg.prepare.height, cfg.prepare.width, 3],
        "ordered_clips_per_s": {f"recent_videos={k}": v for k, v in sorted(ordered.items())},
        "ordered_speedup": round(ordered[cfg.loader.recent_videos] / ordered[0], 2),
    }, indent=2))


def _ordered_pass(source, lengths, view, recent_videos: int) -> float:
    """Clips per second of one ordered pass over a split as the feature caches read it
    (stage 1's clip view, shards of 256 clips), keeping `recent_videos` decoded videos."""
    loader = view_loader(view, batch_size=256, shuffle=False, num_epochs=1,
                         drop_remainder=False, recent_videos=recent_videos)
    start = time.perf_counter()
    clips = sum(len(batch["frames"]) for batch in make_dataset(source, lengths, loader))
    return round(clips / (time.perf_counter() - start), 1)


if __name__ == "__main__":
    reexec_with_huge_pages()
    main()
