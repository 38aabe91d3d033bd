"""Per-module speed of paper 003's local-patterns pipeline (its Table 6) on this machine.

    .venv/bin/python benchmarks/bench_local_patterns.py [--frames 64] [--objects 5]
        [--repeats 3] [--out FILE]

Prints one JSON object on stdout and a markdown table on stderr. One synthetic video (uint8
[frames, 96, 96, 3]: `--objects` textured squares moving over a textured background, each
tracked on every frame) goes through `tvad_jax.jobs.local_patterns`' pieces in the job's order,
each module timed over the whole video:

  tracking/crops         `video_crops` (the tracks are given: our stand-in for YOLO and the
                         IoU tracker costs only the crops: boxes grown, cut, resized)
  backbone + ITAM        `CropTokens` (the shipped frozen tower) + `ITAMReader.image_tokens`
  TSGM (IGTG captioner)  `ITAMReader.captions` of every crop (greedy decoding, up to
                         `local.text_len` tokens; the job captions only the crops whose
                         sentence the SMM does not keep, so this is its upper bound)
  TSGM (SMM)             `TSGM.sentences` (per crop frame: the questions' text features, then
                         the SMM's yes/no; the captions looked up from the row above)
  CMAM                   `ITAMReader.text_features` of the sentences (F^T[0]) + `cmam` (eq. 1)
  TME                    `motion_field` (H.264 re-encode, motion vectors) + `box_histograms`
  RM                     standardize [G ; M], RM forward, reconstruction errors, `frame_scores`

ITAM, the SMM and RM have random parameters of the default config's sizes (`Config().local`;
timing does not depend on training, except that an untrained captioner may write longer or
shorter captions than a trained one: `caption_tokens_mean` says how many it wrote). With
`crop_stride` 2 there are crops at every other frame (each a 2-frame tubelet), `--objects` per
crop frame; every time is reported in milliseconds per VIDEO frame (the module's time for the
whole video / `--frames`), as the paper reports per frame.

Timing: a warm-up pass first (every jitted function compiles there: its compile seconds,
from jax.monitoring's trace + lowering + backend-compile events, are reported per module
apart, with the warm-up pass's wall time), then `--repeats` timed passes (each module's
outputs are host numpy arrays, so every time ends with the work done); a module's row is the
median of its repeats and "total" is the sum of the rows. Beside each row stands paper 003's
Table 6 figure (A100 GPU, batch 256) where it maps: hardware differs (A100 (paper) vs this CPU).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine  # noqa: E402
from _compiles import TRACE_LOWER_COMPILE, CompileClock  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.data.motion import box_histograms  # noqa: E402
from tvad_jax.data.object_crops import video_crops  # noqa: E402
from tvad_jax.data.video_io import motion_field  # noqa: E402
from tvad_jax.jobs.config import Config, LocalPatternsJobConfig  # noqa: E402
from tvad_jax.jobs.local_objects import CropTokens, SplitObjects  # noqa: E402
from tvad_jax.jobs.local_patterns import (TSGM, ITAMReader, frame_scores, itam_config,  # noqa: E402
                                          itam_spec, rm_spec, smm_spec)
from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models.local_patterns import cmam, reconstruction_errors  # noqa: E402
from tvad_jax.models.tvad import load_frozen_backbone  # noqa: E402

MODULES = ("tracking/crops", "backbone + ITAM", "TSGM (IGTG captioner)", "TSGM (SMM)", "CMAM",
           "TME", "RM")

# Paper 003, Appendix H, Table 6 ("Runtime and memory consumption of different modules in the
# proposed framework", ms, batch size 256, NVIDIA A100 + Xeon Gold 6248R, 5 objects per frame
# on average). The paper does not say whether a row is per frame or per object.
PAPER_TABLE6_MS = {
    "tracking/crops": 2.5,             # "Object detection (YOLO)"
    "backbone + ITAM": 10.1,           # "Backbone and ITAM"
    "TSGM (IGTG captioner)": 5.9,      # "TSGM (IGTG)"
    "TSGM (SMM)": 1.5,                 # "TSGM (SMM)"
    "CMAM": 0.0078,
    "TME": 2.6,
    "RM": 0.28,
}
# The whole method per frame: Table 7 ("Runtime per frame", "Ours"), ~12 FPS in Appendix H's
# text. It is not the sum of Table 6's rows (22.89 ms), which the paper does not explain.
PAPER_TOTAL_MS = 83.95
PAPER_HARDWARE = "A100 (paper) vs this CPU"


# ----------------------------------------------------------------------------- input


def synthetic_video(frames: int, objects: int, size: int = 96, seed: int = 0
                    ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """uint8 frames [frames, size, size, 3] of `objects` textured squares (side 14 to 22 px)
    bouncing over a static textured background, and their tracks [(object id, rows [frames, 5]
    of (t, x0, y0, x1, y1) inclusive)]: every object on every frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    background = (96 + 40 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
                  + rng.integers(-12, 13, (size, size, 3))).clip(0, 255)
    video = np.repeat(background[None], frames, 0).astype(np.uint8)
    tracks = []
    for obj in range(objects):
        side = int(rng.integers(14, 23))
        checker = ((np.arange(side)[:, None] // 4 + np.arange(side)[None] // 4) % 2)
        color = rng.integers(40, 256, 3)
        patch = (checker[..., None] * color + (1 - checker[..., None]) * color // 3)
        pos = rng.uniform(0, size - side, 2)
        vel = rng.uniform(1.0, 3.0, 2) * rng.choice([-1, 1], 2)
        rows = []
        for t in range(frames):
            x0, y0 = (int(round(p)) for p in pos)
            video[t, y0:y0 + side, x0:x0 + side] = patch
            rows.append((t, x0, y0, x0 + side - 1, y0 + side - 1))
            pos = pos + vel
            for k in range(2):                                  # bounce off the borders
                if not 0 <= pos[k] <= size - side:
                    vel[k] = -vel[k]
                    pos[k] = float(np.clip(pos[k], 0, size - side))
        tracks.append((obj + 1, np.asarray(rows, np.int64)))
    return video, tracks


# ----------------------------------------------------------------------------- the pipeline


class Pipeline:
    """The job's pieces with random ITAM / SMM / RM parameters of `job`'s sizes."""

    def __init__(self, job: LocalPatternsJobConfig, seed: int = 0):
        self.job = job
        self.backbone = load_frozen_backbone(job.backbone)
        self.size = self.backbone.cfg.vision.frame_size
        self.encode = CropTokens(self.backbone, job.encode_batch, job.token_pool)
        keys = jax.random.split(jax.random.key(seed), 3)
        itam, ispec = itam_spec(job, itam_config(job, self.backbone))
        # random parameters (jitted inits: one compile each instead of op-by-op dispatch)
        self.reader = ITAMReader(itam, jax.jit(ispec.init_fn)(keys[0]),
                                 self.backbone.tokenizer, job)
        yes, no = self.reader.text_features(["yes", "no"])[:, 0]
        smm, sspec = smm_spec(job, yes, no)
        self.tsgm = TSGM(smm, jax.jit(sspec.init_fn)(keys[1]), self.reader)
        self.rm, rspec = rm_spec(job, job.itam_width + 8)
        self.rm_params = jax.jit(rspec.init_fn)(keys[2])

    def modules(self, frames: np.ndarray, tracks: list) -> tuple[list, dict]:
        """(name, step) in the job's order; each step reads and writes the shared `state`."""
        job, state = self.job, {}

        def crops():
            state["crops"] = video_crops(frames, tracks, self.size, job.crop_stride, job.expand,
                                         "synthetic")

        def backbone_itam():
            self.encode.add(frames, state["crops"])
            state["tokens"] = self.encode.finish()
            state["image"] = self.reader.image_tokens(state["tokens"])

        def captioner():
            state["captions"] = self.reader.captions(state["tokens"])

        def smm():
            c = state["crops"]
            state["objects"] = SplitObjects(
                videos=["synthetic"], labels={"synthetic": np.zeros(len(frames), np.int64)},
                video=np.zeros(len(c), np.int64), frame=c.frame, object=c.object,
                tokens=state["tokens"], motion=np.zeros((len(c), 8), np.float32), texts=[],
                acting=[])
            captions = np.asarray(state["captions"])
            state["sentences"] = self.tsgm.sentences(state["objects"], state["image"],
                                                     lambda rows: captions[rows].tolist())

        def cmam_step():
            start = time.perf_counter()
            sentence = self.reader.text_features(state["sentences"])[:, 0]
            middle = time.perf_counter()
            state["pattern"] = np.asarray(cmam(jnp.asarray(sentence), jnp.asarray(state["image"]),
                                               job.cmam_weights))
            state["cmam_parts_s"] = {"sentence_features": middle - start,
                                     "eq1": time.perf_counter() - middle}

        def tme():
            flow = motion_field(frames, "synthetic")
            c = state["crops"]
            state["motion"] = box_histograms(flow, np.column_stack([c.frame, c.box]))

        def rm():
            x = np.concatenate([state["pattern"], state["motion"]], 1).astype(np.float32)
            # the training statistics are the video's own here (the same arithmetic)
            x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
            errors = np.asarray(reconstruction_errors(
                x, self.rm.apply({"params": self.rm_params}, x)))
            state["scores"] = frame_scores(state["objects"], errors, float(np.median(errors)),
                                           job.crop_stride)

        steps = (crops, backbone_itam, captioner, smm, cmam_step, tme, rm)
        return list(zip(MODULES, steps)), state


def caption_lengths(pipeline: Pipeline, tokens: np.ndarray) -> np.ndarray:
    """[K] tokens the captioner wrote per crop (after bos, up to eos; text_len - 1 where it
    never wrote eos): how many decoding steps IGTG ran."""
    ids = pipeline.reader.caption_ids(tokens)[:, 1:]
    eos = ids == pipeline.reader.model.cfg.eos_token_id
    return np.where(eos.any(1), eos.argmax(1), ids.shape[1])


def run_pass(steps, clock: CompileClock | None = None, label: str = "") -> dict[str, float]:
    """Seconds of each module, run in order."""
    out = {}
    for name, step in steps:
        if clock is not None:
            clock.phase = f"{label}{name}"
        start = time.perf_counter()
        step()
        out[name] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- the table


def table(seconds: dict[str, float], first: dict[str, float], compile_s: dict[str, float],
          frames: int) -> dict:
    """Rows {module: ms per video frame, ...} and the total (the sum of the rows), fps, and the
    paper's figures beside them."""
    rows = {}
    for name, s in seconds.items():
        ms = 1e3 * s / frames
        paper = PAPER_TABLE6_MS.get(name)
        rows[name] = {"ms_per_frame": ms, "video_s": s,
                      "warmup_s": first.get(name), "compile_s": compile_s.get(name, 0.0),
                      "paper_ms_per_frame": paper,
                      "ratio_to_paper": None if paper is None else ms / paper}
    total_ms = sum(r["ms_per_frame"] for r in rows.values())
    return {"rows": rows,
            "total": {"ms_per_frame": total_ms, "fps": 1e3 / total_ms,
                      "video_s": sum(seconds.values()),
                      "compile_s": sum(r["compile_s"] for r in rows.values()),
                      "paper_ms_per_frame": PAPER_TOTAL_MS, "paper_fps": 1e3 / PAPER_TOTAL_MS,
                      "paper_table6_rows_sum_ms": sum(PAPER_TABLE6_MS.values()),
                      "ratio_to_paper": total_ms / PAPER_TOTAL_MS}}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"{report['frames']} frames, {report['objects']} objects per frame, "
             f"{report['crops']} crops; median of {report['repeats']}; {PAPER_HARDWARE} "
             f"({m['cpu_count']} CPUs, load {m['loadavg_before'][0]:.2f} -> "
             f"{m['loadavg_after'][0]:.2f})", "",
             "| module | ms/frame | compile s | paper ms/frame (A100) | x paper |",
             "|---|---:|---:|---:|---:|"]

    def cell(v, fmt):
        return "" if v is None else format(v, fmt)

    for name, r in report["table"]["rows"].items():
        lines.append(f"| {name} | {r['ms_per_frame']:.2f} | {r['compile_s']:.1f} | "
                     f"{cell(r['paper_ms_per_frame'], 'g')} | "
                     f"{cell(r['ratio_to_paper'], '.1f')} |")
    t = report["table"]["total"]
    lines.append(f"| **total** ({t['fps']:.1f} fps; paper {t['paper_fps']:.1f}) | "
                 f"{t['ms_per_frame']:.2f} | {t['compile_s']:.1f} | {t['paper_ms_per_frame']} | "
                 f"{t['ratio_to_paper']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="video length T")
    parser.add_argument("--objects", type=int, default=5, help="objects per frame")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after the warm-up")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.objects < 1 or args.repeats < 1:
        parser.error("need --frames >= 2, --objects >= 1, --repeats >= 1")
    wall = time.perf_counter()
    load_before = os.getloadavg()
    job = Config().local
    frames, tracks = synthetic_video(args.frames, args.objects)
    with CompileClock(TRACE_LOWER_COMPILE) as clock:
        pipeline = Pipeline(job)
        steps, state = pipeline.modules(frames, tracks)
        print("[bench_local_patterns] warm-up pass", file=sys.stderr)
        first = run_pass(steps, clock)
        passes, cmam_parts = [], []
        for i in range(args.repeats):
            print(f"[bench_local_patterns] timed pass {i + 1}/{args.repeats}", file=sys.stderr)
            passes.append(run_pass(steps, clock, label="timed:"))
            cmam_parts.append(state["cmam_parts_s"])
    seconds = {name: statistics.median(p[name] for p in passes) for name in MODULES}
    compile_s = {k: v for k, v in clock.seconds.items() if k in MODULES}
    crops = len(state["crops"])
    generated = caption_lengths(pipeline, state["tokens"])
    report = {
        "benchmark": "local patterns (paper 003 Table 6): ms per video frame per module",
        "machine": {**_machine.machine_info(), "loadavg_before": list(load_before),
                    "loadavg_after": list(os.getloadavg())},
        "frames": args.frames, "objects": args.objects, "repeats": args.repeats,
        "crops": crops, "crop_frames": len(np.unique(state["crops"].frame)),
        "crops_per_frame": crops / args.frames,
        "crops_per_crop_frame": crops / len(np.unique(state["crops"].frame)),
        "caption_tokens_mean": float(generated.mean()),
        "caption_tokens_max": int(generated.max()),
        "captions_without_eos": int((generated == job.text_len - 1).sum()),
        "cmam_parts_ms_per_frame": {k: 1e3 * statistics.median(p[k] for p in cmam_parts)
                                    / args.frames for k in cmam_parts[0]},
        "sizes": {"frame_size": list(pipeline.size), "encode_batch": job.encode_batch,
                  "token_pool": job.token_pool, "crop_stride": job.crop_stride,
                  "itam_width": job.itam_width, "itam_depth": job.itam_depth,
                  "num_queries": job.num_queries, "text_len": job.text_len,
                  "smm_channels": job.smm_channels, "smm_machines": job.smm_machines,
                  "rm_hidden": job.rm.hidden, "rm_layers": job.rm.layers},
        "units": {"ms_per_frame": "median over the repeats of the module's seconds for the "
                                  "whole video, x 1000 / frames",
                  "video_s": "the same median, seconds for the whole video",
                  "warmup_s": "the module's seconds in the warm-up pass (compiles included)",
                  "compile_s": "jax trace + lowering + backend compile seconds in the warm-up "
                               "pass (jax.monitoring events)",
                  "total": "the sum of the rows; fps = 1000 / total ms_per_frame",
                  "paper": f"Table 6 (total: Table 7), {PAPER_HARDWARE}; the paper does "
                           "not say whether Table 6's rows are per frame or per object, and "
                           "they sum to 22.89 ms, not Table 7's 83.95 ms per frame"},
        "table": table(seconds, first, compile_s, args.frames),
        "setup_compile_s": clock.seconds.get("setup", 0.0),
        "compiles_during_timed_passes": sum(n for k, n in clock.count.items()
                                            if k.startswith("timed:")),
        "passes_s": passes,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    emit(report, args.out, markdown(report))
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()
    sys.exit(main())
