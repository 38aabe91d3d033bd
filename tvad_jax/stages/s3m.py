"""S3M as a job: per-object track sequences -> S3M trained on normal tracks -> frame scores.

VLAVAD (paper 004 §3.3) detects and tracks every object (ByteTrack), captions each object crop
with a VLM, embeds the captions with a text encoder and trains S3M, on normal videos only, to
predict an object's next L_f embeddings from its last L_p; the prediction error at test time is
the object's temporal anomaly score and a frame scores the max over its objects. Here, on the
synthetic benchmark, the simulator's own object tracks (every object's per-frame boxes in the
video's sidecar `{name}.json`) play the role of the detector + tracker, and until the
backbone's text tower lands the per-frame embedding is the object's box geometry and motion
alone (no caption embeddings yet).

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
with mean and std over every step of the training split only (saved with the run in
`s3m_stats.json`). `models.s3m.clips` cuts each sequence into windows of L_p observed steps ->
the next L_f steps; a sequence shorter than L_p + L_f gives none.

The model (`TrackPredictor`) embeds the F features linearly to S3M's width D, runs S3M, and
reads the predicted change of the embedding back out to F features, added to the last
observed step (so an untrained model predicts "nothing changes").

Scores: a window's score is its mean squared prediction error in standardized units
(`s3m.object_scores`), credited to each of the L_f frames it predicts; a frame's score is the
max over the windows crediting it, i.e. over its objects (`s3m.frame_scores`); frames nothing
credits score 0 (no object, or only objects seen for fewer than L_p + 1 frames so far).
Errors e are mapped into [0, 1) by e / (e + e_ref), e_ref the median window error on the
training split after training (saved with the run): monotone, so the micro AUC is unchanged,
and it keeps the macro AUC's padding (one normal frame scored 0, one abnormal frame scored 1
per video) meaningful. Gaussian smoothing (`sigma`, frames) is applied per video by
`eval.metrics.frame_auc`, exactly as for the frame-difference baseline beside it.

    tvad train s3m [--config NAME] [--run-dir DIR] [key=value ...]   -> run folder
    tvad eval run RUN_DIR [--split test] [--plot]                     -> eval_<split>.json/.md

Run folder: config.json, s3m_stats.json, metrics.jsonl, tensorboard/, checkpoints/<step>/,
summary.json; after `tvad eval run`: eval_<split>.json, eval_<split>.md (roc_<split>.png).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.errors import DataError
from tvad_jax.data.readers import make_reader
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.models import s3m
from tvad_jax.models.s3m import S3MConfig
from tvad_jax.train import distributed
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import TrainConfig, TrainLoopConfig, restore_params, train
from tvad_jax.train.optim import OptimConfig
from tvad_jax.train.state import merge_params

FEATURES = ("cx", "cy", "w", "h", "vx", "vy")
NUM_FEATURES = len(FEATURES)
STATS_FILE = "s3m_stats.json"


@dataclasses.dataclass(frozen=True)
class S3MJobConfig:
    """The `s3m` section of the top-level config: `tvad train s3m` and `tvad eval run`.

    Attributes:
      model: S3M sizes (width D, state P, layers, L_p past -> L_f future steps); the default
        is paper 004's Avenue/Ped2 setting (3 layers, 10 -> 2) at a width suited to 6 features.
      train: the engine's section (steps, optimizer, checkpoints, mesh).
      batch_size: windows per global batch.
      data_seed: seeds the shuffling of the training windows.
      train_split: split trained on (normal videos only).
      eval_split: split `tvad eval run` scores by default.
      sigma: Gaussian smoothing of frame scores, frames (0 = off); results are reported both
        without smoothing and with this sigma, for S3M and for the baseline.
      score_batch: windows per prediction call when scoring (fixed shape, last one padded).
    """

    model: S3MConfig = S3MConfig(width=64, state_size=32, num_layers=3, past=10, future=2)
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        loop=TrainLoopConfig(steps=3000, log_every=10, sync_every=100),
        optim=OptimConfig(learning_rate=3e-3, warmup_ratio=0.05, lr_floor=0.05),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=1, keep_best=0),
    ))
    batch_size: int = 256
    data_seed: int = 0
    train_split: str = "train_normal"
    eval_split: str = "test"
    sigma: float = 3.0
    score_batch: int = 4096


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
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
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
        x, y = s3m.clips((feats - mean) / std, past, future)
        if not len(x):
            continue
        _, f = s3m.clips(frames[:, None], past, future)
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
    """This process's training batches {"past": (b, L_p, F), "future": (b, L_f, F)}, forever.

    Shuffled window indices are batched globally and each process keeps its consecutive
    block of rows (b = batch_size / process_count), as the engine expects. The iterator of
    the result is checkpointable (`get_state`/`set_state`).
    """
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if batch_size % pc:
        raise ValueError(f"batch_size {batch_size} is not divisible by {pc} processes")
    if not len(windows):
        raise ValueError("no training windows")
    local = batch_size // pc
    past, future = windows.past, windows.future
    ds = (grain.MapDataset.range(len(windows)).shuffle(seed=seed).repeat()
          .batch(batch_size, drop_remainder=True)
          .map(lambda idx: idx[pi * local:(pi + 1) * local])
          .map(lambda idx: {"past": past[idx], "future": future[idx]}))
    return ds.to_iter_dataset()


# ----------------------------------------------------------------------------- model


class TrackPredictor(nn.Module):
    """Features (..., L_p, F) -> predicted features (..., L_f, F) through S3M at width D."""

    config: S3MConfig
    features: int = NUM_FEATURES

    @nn.compact
    def __call__(self, past):  # (..., L_p, F) -> (..., L_f, F)
        emb = nn.Dense(self.config.width, name="embed")(past)  # (..., L_p, D)
        out = s3m.S3M(self.config, name="s3m")(emb)  # (..., L_f, D)
        delta = nn.Dense(self.features, name="readout")(out - emb[..., -1:, :])  # (..., L_f, F)
        return past[..., -1:, :] + delta


def make_fns(job: S3MJobConfig):
    """(model, init_fn, loss_fn) for the engine."""
    model = TrackPredictor(job.model)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, job.model.past, NUM_FEATURES), jnp.float32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        del rng  # no dropout
        pred = model.apply({"params": merge_params(trainable, frozen)}, batch["past"])
        loss = s3m.mse_loss(pred, batch["future"])
        # Reference: the error of predicting that nothing changes (the untrained model).
        copy_last = s3m.mse_loss(batch["past"][:, -1:], batch["future"])
        return loss, {"copy_last_mse": copy_last}

    return model, init_fn, loss_fn


def window_errors(model: TrackPredictor, params: Any, windows: Windows,
                  chunk: int) -> np.ndarray:
    """Mean squared prediction error (N,) of every window, in fixed-size jitted chunks."""
    n = len(windows)
    if n == 0:
        return np.zeros(0, np.float32)
    chunk = max(1, min(chunk, n))
    fn = jax.jit(lambda p, x, y: s3m.object_scores(model.apply({"params": p}, x), y))
    out = []
    for start in range(0, n, chunk):
        x, y = windows.past[start:start + chunk], windows.future[start:start + chunk]
        k = len(x)
        if k < chunk:  # pad the last chunk to keep one compiled shape
            pad = ((0, chunk - k), (0, 0), (0, 0))
            x, y = np.pad(x, pad), np.pad(y, pad)
        out.append(np.asarray(fn(params, x, y))[:k])
    return np.concatenate(out)


def frame_scores(windows: Windows, errors: np.ndarray, error_ref: float,
                 future: int) -> dict[str, np.ndarray]:
    """Per-video frame scores (T,) in [0, 1): max over the windows predicting each frame of
    e / (e + e_ref); 0 where no window predicts the frame."""
    scaled = errors / (errors + max(float(error_ref), 1e-12))
    out = {}
    for v, (name, T) in enumerate(zip(windows.videos, windows.num_frames)):
        sel = windows.video == v
        scores = np.repeat(scaled[sel], future)  # each window credits its L_f frames
        frames = windows.frames[sel].reshape(-1)
        out[name] = np.asarray(s3m.frame_scores(jnp.asarray(scores, jnp.float32),
                                                jnp.asarray(frames), T), np.float64)
    return out


# ----------------------------------------------------------------------------- train


def ensure_benchmark(cfg, report: Callable[[str], None] = print) -> None:
    """Render the synthetic benchmark if the config reads it and it is missing."""
    if cfg.prepare.layout != "synthetic" or cfg.prepare.source:
        return
    from tvad_jax.data.synthetic.generate import is_complete, synthesize
    from tvad_jax.runs import progress

    if not is_complete(cfg.synth):
        report(f"[tvad] synthesizing the benchmark into {cfg.synth.out_dir}")
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))


def train_s3m(cfg, run_dir: str | Path | None = None,
              report: Callable[[str], None] = print) -> Path:
    """Train S3M on `cfg.s3m.train_split` and return the run folder.

    Without `run_dir` a new one is made under `cfg.runs_dir`; with one, training resumes from
    its latest checkpoint if it has any. Feature statistics and the error scale are written
    to `s3m_stats.json` once training ends.
    """
    from tvad_jax.runs import new_run_dir

    job = cfg.s3m
    distributed.initialize(job.train.distributed)
    ensure_benchmark(cfg, report)
    seqs = sequences(read_sidecars(cfg, job.train_split))
    if not seqs.items:
        raise DataError(cfg.prepare_source, f"split {job.train_split!r} has no object tracks")
    mean, std = feature_stats(seqs)
    windows = make_windows(seqs, mean, std, job.model.past, job.model.future)
    if not len(windows):
        raise DataError(cfg.prepare_source,
                        f"split {job.train_split!r} has no track of at least "
                        f"{job.model.past + job.model.future + 1} frames (L_p + L_f + 1)")
    primary = jax.process_index() == 0
    if run_dir is None:
        run_dir = new_run_dir("s3m", cfg, cfg.runs_dir)
    else:
        run_dir = Path(run_dir)
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            config_lib.save(cfg, run_dir / "config.json")
    report(f"[tvad] S3M: {len(windows)} training windows from {len(seqs.items)} track "
           f"segments of {len(seqs.videos)} videos ({job.train_split})")
    model, init_fn, loss_fn = make_fns(job)
    data = iter(make_dataset(windows, job.batch_size, job.data_seed))
    result = train(job.train, init_fn=init_fn, loss_fn=loss_fn, data=data, run_dir=run_dir)
    params = merge_params(result.state.params, result.frozen)
    errors = window_errors(model, params, windows, job.score_batch)
    stats = {
        "features": list(FEATURES),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "error_ref": float(np.median(errors)),
        "train_error_mean": float(errors.mean()),
        "train_windows": len(windows),
        "train_segments": len(seqs.items),
        "train_videos": len(seqs.videos),
        "train_split": job.train_split,
    }
    if primary:
        tmp = run_dir / (STATS_FILE + ".tmp")
        tmp.write_text(json.dumps(stats, indent=2) + "\n")
        tmp.replace(run_dir / STATS_FILE)
    return run_dir


# ----------------------------------------------------------------------------- evaluate


@dataclasses.dataclass
class S3MRun:
    """A finished run, loaded: its config, model, params, statistics, checkpoint step."""

    path: Path
    config: Any
    model: TrackPredictor
    params: Any
    stats: dict
    step: int


def load_run(run_dir: str | Path) -> S3MRun:
    """Load a run folder of `tvad train s3m`; bad folders raise a DataError naming the path."""
    from tvad_jax.configs import Config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run folder not found")
    config_path, stats_path = run_dir / "config.json", run_dir / STATS_FILE
    ckpt_dir = run_dir / "checkpoints"
    if not config_path.is_file():
        raise DataError(config_path, "missing: not a run folder of `tvad train s3m`")
    if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise DataError(ckpt_dir, "no checkpoint: not a finished run of `tvad train s3m`")
    if not stats_path.is_file():
        raise DataError(stats_path, "missing: the run did not finish training (the feature "
                                    "statistics are written at its end)")
    try:
        cfg = config_lib.load(Config, config_path)
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(config_path, f"not a config of this version ({err})") from err
    stats = json.loads(stats_path.read_text())
    job = cfg.s3m
    model, init_fn, loss_fn = make_fns(job)
    try:
        params, step = restore_params(job.train, init_fn=init_fn, loss_fn=loss_fn,
                                      checkpoint_dir=ckpt_dir, which="latest")
    except FileNotFoundError:
        raise DataError(ckpt_dir, "no complete checkpoint") from None
    return S3MRun(run_dir, cfg, model, params, stats, step)


def score_split(run: S3MRun, split: str, sidecars: list[tuple[str, dict]] | None = None
                ) -> tuple[dict[str, np.ndarray], Windows]:
    """S3M frame scores (T,) of every video of a split, and the windows behind them."""
    job = run.config.s3m
    if sidecars is None:
        sidecars = read_sidecars(run.config, split)
    seqs = sequences(sidecars)
    windows = make_windows(seqs, run.stats["mean"], run.stats["std"], job.model.past,
                           job.model.future)
    errors = window_errors(run.model, run.params, windows, job.score_batch)
    return frame_scores(windows, errors, run.stats["error_ref"], job.model.future), windows


def anomaly_types(sidecar: dict) -> set[str]:
    """The anomaly types acted out in a video (empty for a normal one)."""
    return {o["anomaly_type"] for o in sidecar["objects"] if o.get("anomaly")}


def evaluate_run(run_dir: str | Path, split: str | None = None, plot: bool = False,
                 report: Callable[[str], None] = print) -> dict:
    """Frame AUC (micro/macro) of a finished run on a split, beside the frame-difference
    baseline on the same videos; written to `eval_<split>.json/.md` in the run folder (and
    `roc_<split>.png` with `plot`)."""
    from tvad_jax.eval.metrics import frame_auc, micro_roc_curve
    from tvad_jax.eval.report import plot_roc, write_summary

    run = load_run(run_dir)
    cfg = run.config
    split = split or cfg.s3m.eval_split
    sidecars = read_sidecars(cfg, split)
    scores, windows = score_split(run, split, sidecars)
    base, labels = baseline_scores(cfg, split, report)
    if set(base) != set(scores):
        raise DataError(cfg.prepare_source, f"split {split!r}: the sidecars and the videos "
                                            "name different sets of videos")
    for name in scores:
        if len(scores[name]) != len(labels[name]):
            raise DataError(cfg.prepare_source, f"{name}: sidecar says {len(scores[name])} "
                                                f"frames, the video has {len(labels[name])}")
    sigmas = sorted({0.0, float(cfg.s3m.sigma)})
    results: dict[str, Any] = {}
    curves = {}
    for method, method_scores in (("s3m", scores), ("frame_difference", base)):
        for sigma in sigmas:
            auc = frame_auc(method_scores, labels, sigma)
            results[f"{method}_sigma{sigma:g}"] = {"micro_auc": auc.micro_auc,
                                                    "macro_auc": auc.macro_auc}
            if plot and sigma == sigmas[-1]:
                fpr, tpr = micro_roc_curve(method_scores, labels, sigma)
                curves[f"{method} (sigma {sigma:g})"] = (fpr, tpr, auc.micro_auc)
    # Per anomaly type: the videos acting it out plus every normal video, micro AUC.
    types = {name: anomaly_types(sidecar) for name, sidecar in sidecars}
    normal = [n for n, t in types.items() if not t]
    sigma = sigmas[-1]
    per_type = {}
    for kind in sorted(set().union(*types.values())):
        subset = normal + [n for n, t in types.items() if kind in t]
        sub_labels = {n: labels[n] for n in subset}
        if not any(sub_labels[n].any() for n in subset) or not normal:
            continue
        per_type[kind] = {
            "videos": len(subset) - len(normal),
            "s3m_micro_auc": frame_auc({n: scores[n] for n in subset}, sub_labels,
                                       sigma).micro_auc,
            "frame_difference_micro_auc": frame_auc({n: base[n] for n in subset}, sub_labels,
                                                    sigma).micro_auc,
        }
    results[f"per_anomaly_type_sigma{sigma:g}"] = per_type
    all_labels = np.concatenate([labels[n] for n in sorted(labels)])
    results.update({
        "split": split,
        "videos": len(labels),
        "frames": int(all_labels.size),
        "abnormal_frames": int(all_labels.sum()),
        "frames_scored_by_s3m": int(sum(int((s > 0).sum()) for s in scores.values())),
        "windows": len(windows),
        "checkpoint_step": run.step,
    })
    write_summary(run.path, f"eval_{split}", results)
    if plot:
        plot_roc(curves, run.path / f"roc_{split}.png", title=f"Frame-level ROC ({split})")
    return results

