"""Render synthetic videos and write the benchmark in UBnormal's on-disk layout.

    <out>/Scene{S}/{name}.mp4                               the video (H.264)
    <out>/Scene{S}/{name}_annotations/{name}_{t:04d}_gt.png  uint8 object-id map per frame
    <out>/Scene{S}/{name}_tracks.txt                        abnormal only: object_id,start,end
    <out>/Scene{S}/{name}.json                              sidecar: objects, timelines, boxes
    <out>/splits/{split}.txt                                video names per split
    <out>/manifest.json                                     config + per-video summary, last

Every video has its own random stream derived from (seed, split, index), so the output does
not depend on the order or the number of worker processes.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from tvad_jax import config as config_lib
from tvad_jax.data.files import write_text_atomic
from tvad_jax.data.synthetic import nuisances as nz
from tvad_jax.data.synthetic.agents import Agent, Planner
from tvad_jax.data.synthetic.raster import Canvas
from tvad_jax.data.synthetic.scene import draw_prop, make_scene, render_background
from tvad_jax.data.synthetic.spec import SPLITS, SynthConfig
from tvad_jax.data.synthetic.sprites import draw_agent
from tvad_jax.data.video_io import write_video

MAX_TRIES = 25


@dataclasses.dataclass
class SynthVideo:
    name: str
    scene: int                    # 1-based scene number
    split: str
    frames: np.ndarray            # [T, H, W, 3] uint8
    ids: np.ndarray               # [T, H, W] uint8 object ids, 0 = background
    objects: list[dict]           # sidecar records
    tracks: list[tuple[int, int, int]]  # (object_id, start, end) of anomalies, inclusive
    nuisances: nz.Nuisances
    seed: list[int]


@dataclasses.dataclass(frozen=True)
class VideoJob:
    split: str
    index: int       # within the split
    number: int      # unique over the dataset (scenario number)
    anomaly: str | None


def plan_jobs(cfg: SynthConfig) -> list[VideoJob]:
    """Which videos to make: per split, which are abnormal and with which anomaly type."""
    jobs, number = [], 0
    for split_id, split in enumerate(SPLITS):
        n = cfg.videos_in(split)
        types = cfg.anomalies_in(split)
        n_abnormal = int(round(n * cfg.abnormal_fraction)) if types else 0
        order = np.random.default_rng([cfg.seed, 31, split_id]).permutation(n)
        abnormal_rank = {int(i): k for k, i in enumerate(order[:n_abnormal])}
        for index in range(n):
            number += 1
            rank = abnormal_rank.get(index)
            jobs.append(VideoJob(split, index, number,
                                 None if rank is None else types[rank % len(types)]))
    return jobs


def render_video(cfg: SynthConfig, job: VideoJob) -> SynthVideo:
    """Render one video, retrying with fresh randomness until every anomaly is in view for
    at least `min_anomaly_frames` consecutive frames."""
    split_id = SPLITS.index(job.split)
    for attempt in range(MAX_TRIES):
        seed = [cfg.seed, split_id, job.index, attempt]
        video = _try_render(cfg, job, np.random.default_rng(seed), seed)
        if video is not None:
            return video
    raise RuntimeError(f"could not place a visible {job.anomaly} event in {MAX_TRIES} tries "
                       f"({job.split} #{job.index})")


def _try_render(cfg: SynthConfig, job: VideoJob, rng: np.random.Generator,
                seed: list[int]) -> SynthVideo | None:
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    scene_index = int(rng.integers(cfg.num_scenes))
    scene = make_scene(scene_index, H, W, cfg.seed)
    background = render_background(scene, cfg.seed)
    nuisance = nz.sample_nuisances(rng, T)
    planner = Planner(scene, T, rng)
    agents = planner.normal_traffic(nuisance.crowd, nuisance.fast_traffic)
    if job.anomaly:
        agents += planner.anomaly(job.anomaly)
    offsets = nz.camera_offsets(nuisance, rng, T)
    frames = np.empty((T, H, W, 3), np.uint8)
    ids = np.empty((T, H, W), np.uint8)
    for t in range(T):
        canvas = Canvas(background)
        layers = [(float(a.y[t]), 1, a) for a in agents] + \
                 [(p.base_y, 0, p) for p in scene.props]
        for _, is_agent, thing in sorted(layers, key=lambda item: (item[0], item[1])):
            if is_agent:
                draw_agent(canvas, thing, t, H)
            else:
                draw_prop(canvas, thing)
        color, id_map = canvas.resolve()
        ids[t] = nz.shift(id_map, offsets[t])
        frames[t] = nz.apply_photometric(nz.shift(color, offsets[t]), t, nuisance, rng)
    boxes = frame_boxes(ids)
    tracks = []
    for agent in agents:
        if agent.planned_anomaly is None:
            continue
        run = _longest_visible_run(boxes, agent.obj_id, *agent.planned_anomaly)
        if run is None or run[1] - run[0] + 1 < cfg.min_anomaly_frames:
            return None
        tracks.append((agent.obj_id, *run))
    kind = "abnormal" if job.anomaly else "normal"
    name = f"{kind}_scene_{scene_index + 1}_scenario_{job.number}" + \
        ("_fog" if nuisance.fog else "")
    objects = [_object_record(a, boxes, dict((i, (s, e)) for i, s, e in tracks))
               for a in agents]
    return SynthVideo(name, scene_index + 1, job.split, frames, ids, objects, tracks, nuisance,
                      seed)


def frame_boxes(ids: np.ndarray) -> list[dict[int, tuple[int, int, int, int]]]:
    """Per frame, {object_id: (x_min, y_min, x_max, y_max)} inclusive boxes of its pixels."""
    out = []
    for id_map in ids:
        frame = {}
        for label, found in enumerate(ndimage.find_objects(id_map), start=1):
            if found is not None:
                ys, xs = found
                frame[label] = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
        out.append(frame)
    return out


def _longest_visible_run(boxes, obj_id: int, start: int, end: int):
    best, current = None, None
    for t in range(start, end + 1):
        if obj_id in boxes[t]:
            current = (current[0], t) if current else (t, t)
            if best is None or current[1] - current[0] > best[1] - best[0]:
                best = current
        else:
            current = None
    return best


def _object_record(agent: Agent, boxes, anomalies: dict) -> dict:
    attributes = {k: v for k, v in agent.attributes.items() if k != "length"}
    return {
        "id": agent.obj_id,
        "class": agent.kind,
        "attributes": attributes,
        "anomaly_type": agent.anomaly_type,
        "anomaly": list(anomalies[agent.obj_id]) if agent.obj_id in anomalies else None,
        "timeline": agent.timeline(),
        "boxes": [[t, *frame[agent.obj_id]] for t, frame in enumerate(boxes)
                  if agent.obj_id in frame],
    }


def write_video_files(video: SynthVideo, root: Path, cfg: SynthConfig) -> dict:
    """Write one video's files atomically and return its manifest entry."""
    scene_dir = root / f"Scene{video.scene}"
    scene_dir.mkdir(parents=True, exist_ok=True)
    ann_dir = scene_dir / f"{video.name}_annotations"
    tmp_dir = scene_dir / f".{video.name}_annotations.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    for t, id_map in enumerate(video.ids):
        Image.fromarray(id_map).save(tmp_dir / f"{video.name}_{t:04d}_gt.png", compress_level=1)
    shutil.rmtree(ann_dir, ignore_errors=True)
    tmp_dir.rename(ann_dir)
    write_video(scene_dir / f"{video.name}.mp4", video.frames, fps=cfg.fps, crf=cfg.crf)
    tracks_path = scene_dir / f"{video.name}_tracks.txt"
    if video.tracks:
        write_text_atomic(tracks_path, "".join(f"{i},{s},{e}\n" for i, s, e in video.tracks))
    sidecar = {
        "video": video.name, "scene": video.scene, "split": video.split, "seed": video.seed,
        "num_frames": int(video.frames.shape[0]), "height": int(video.frames.shape[1]),
        "width": int(video.frames.shape[2]), "fps": cfg.fps,
        "nuisances": dataclasses.asdict(video.nuisances), "objects": video.objects,
    }
    write_text_atomic(scene_dir / f"{video.name}.json", json.dumps(sidecar) + "\n")
    labels = np.zeros(video.frames.shape[0], bool)
    for _, s, e in video.tracks:
        labels[s:e + 1] = True
    return {"name": video.name, "scene": video.scene, "split": video.split,
            "anomaly_types": sorted({o["anomaly_type"] for o in video.objects
                                     if o["anomaly_type"]}),
            "abnormal_frames": int(labels.sum())}


def _make_one(args) -> dict:
    cfg, job, root = args
    return write_video_files(render_video(cfg, job), Path(root), cfg)


def synthesize(cfg: SynthConfig, progress=None) -> Path:
    """Build the whole benchmark under `cfg.out_dir`; returns the manifest path.

    `progress` wraps the stream of finished videos (e.g. `tvad_jax.runs.progress`).
    """
    cfg.validate()
    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # the manifest marks a complete build
    jobs = plan_jobs(cfg)
    work = [(cfg, job, str(root)) for job in jobs]
    if cfg.workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=context) as pool:
            entries = _collect(pool.map(_make_one, work, chunksize=4), len(work), progress)
    else:
        entries = _collect(map(_make_one, work), len(work), progress)
    split_dir = root / "splits"
    split_dir.mkdir(exist_ok=True)
    for split in SPLITS:
        write_text_atomic(split_dir / f"{split}.txt",
                          "".join(e["name"] + "\n" for e in entries if e["split"] == split))
    manifest = {"config": config_lib.to_dict(cfg), "videos": entries}
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return manifest_path


def is_complete(cfg: SynthConfig) -> bool:
    """True when `cfg.out_dir` holds a finished build of exactly this config."""
    manifest = Path(cfg.out_dir) / "manifest.json"
    if not manifest.is_file():
        return False
    built = json.loads(manifest.read_text())["config"]
    ignore = {"workers"}  # does not change the output
    wanted = config_lib.to_dict(cfg)
    return {k: v for k, v in built.items() if k not in ignore} == \
        {k: v for k, v in wanted.items() if k not in ignore}


def _collect(results, total: int, progress) -> list[dict]:
    stream = progress(results, total=total) if progress else results
    return list(stream)
