"""Paper 004 (VLAVAD) as a detector on the shared stack: answers of the backbone per object,
the Selective Prompt Adapter, a sequence predictor on the answers' embeddings, score fusion.

Every tracked object (the simulator's tracks, or `data.tracker` over noisy detections made
from them) every `answer_stride`-th frame t it is seen: a clip of frames t - clip_len + 1 .. t
around it at the tower's frame aspect (`data.object_crops.track_clips`; square for a square
tower, as pretraining cuts its single-object question clips), which the frozen backbone's
decoder answers each prompt of the pool about (`infer.vqa`, greedy). On the normal training
split, SPA (`models.spa`) keeps the prompt whose answers concentrate most in their top-k
(prompts with at most k distinct answers last) and counts them; a test object's static
score is 1 / (count of its answer + 1). The text tower embeds each answer (mean-pooled, unit
norm: E_i(t)); along each track the predictor (`models.predictors`: S3M by default) learns on
the normal tracks to predict the next L_f embeddings from the past L_p; its prediction error
is the temporal score. A frame's score is the max over the objects covering it (an answer at
t covers frames t - answer_stride + 1 .. t; 0 without objects), and the detector's score is
A = minmax(A_s) + lambda minmax(A_t) (`eval.fusion`, per video as the paper; divided by
1 + lambda), Gaussian-smoothed at evaluation. Table 2's kNN baseline (the distance of the
tower's pooled crop feature to the nearest normal training crop) is scored beside it.

    tvad train vlavad [--run-dir DIR] [vlavad.tracks=tracker vlavad.predictor=rnn ...]
    tvad eval run RUN_DIR [--split test]

Run folder: config.json, predictor/ (engine run: checkpoints, metrics.jsonl),
vlavad_stats.json (SPA, error scale, counts, the answer files read; written last),
eval_<split>.json/.md. Every clip's answers and pooled feature live in the answer cache,
<vlavad.cache_dir or prepared_dir/answers>/<split>-<key>.json + .npy, key a digest of what
they depend on (the backbone, the benchmark's files, the tracks, the clips, the decoding):
the answers do not depend on a run's seed, so a sweep's seeds and settings, a demo run
again, and the evaluation of any run on the same inputs ask the backbone once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.batches import array_batches
from tvad_jax.data.files import check_output_dir, save_npy, waiting_lock, write_text_atomic
from tvad_jax.data.object_crops import record_sidecar, track_clips
from tvad_jax.data.prepare import source_fingerprint
from tvad_jax.data.readers import iter_records, reader_options, source_reader
from tvad_jax.data.track_windows import clips
from tvad_jax.data.tracker import track_categories, tracks_from_sidecar
from tvad_jax.errors import DataError
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.fusion import frame_max, fuse
from tvad_jax.eval.report import write_summary
from tvad_jax.infer.vqa import CropQA
from tvad_jax.jobs.common import (Report, ensure_benchmark_once, finish_run, finished_run,
                                  frame_auc_rows, start_run)
from tvad_jax.jobs.config import Config, VLAVADJobConfig
from tvad_jax.jobs.shares import join_shares, read_in_shares
from tvad_jax.models.family import family
from tvad_jax.models.predictors import TrackPredictor
from tvad_jax.models.spa import SPA, fit_spa, normalize_answer
from tvad_jax.models.text import mean_pool
from tvad_jax.models.tvad import FrozenBackbone, load_frozen_backbone, plain_model
from tvad_jax.runs import progress
from tvad_jax.train import distributed
from tvad_jax.train.loop import StageSpec, restore_params, train
from tvad_jax.train.state import merge_params

KIND = "vlavad"
STATS_FILE = "vlavad_stats.json"
ANSWERS_VERSION = 1  # of the answer cache's contents: a change of ask_share bumps it


# ----------------------------------------------------------------------------- answers


@dataclasses.dataclass
class SplitAnswers:
    """Every object clip of a split and the backbone's answers about it. Rows are clips."""

    videos: list[str]
    labels: dict[str, np.ndarray]     # video -> [T] frame labels
    video: np.ndarray                 # [K] index into videos
    frame: np.ndarray                 # [K] t: the clip ends at frame t
    object: np.ndarray                # [K] track id
    category: list[str]               # [K] the object's class noun
    answers: dict[str, list[str]]     # prompt -> [K] answers
    pooled: np.ndarray                # [K, D_v] the tower's pooled feature (kNN baseline)

    def __len__(self) -> int:
        return len(self.frame)


ROWS = ("frame", "object", "category", "answers", "pooled")   # SplitAnswers' row fields


def answers_path(cfg: Config, backbone: FrozenBackbone, split: str) -> Path:
    """The split's file in the answer cache: <cache_dir>/<split>-<key>.json, key a digest of
    what the answers depend on (the backbone's weights and tokenizer, every source file's
    name, size and modification time, the tracks and their noise, the clips, the decoding
    budget, the model section the plain backbone is built with); not the run's seed, except
    for tracks made from seeded noisy detections."""
    job = cfg.vlavad
    tracks: dict[str, Any] = {"tracks": job.tracks}
    if job.tracks == "tracker":
        tracks.update(detections=dataclasses.asdict(job.detections),
                      tracker=dataclasses.asdict(job.tracker), seed=job.data_seed)
    payload = {"version": ANSWERS_VERSION, "backbone": backbone.digest, "split": split,
               "source": source_fingerprint(cfg, reader_options(cfg)),
               "skip_bad": cfg.prepare.skip_bad,
               "clips": [job.clip_len, job.answer_stride], "tokens": job.max_new_tokens,
               "model": dataclasses.asdict(cfg.tvad.model), **tracks}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    root = Path(job.cache_dir or Path(cfg.prepared_dir) / "answers")
    return root / f"{split}-{key.hexdigest()[:20]}.json"


def answers_of(cfg: Config, backbone: FrozenBackbone, split: str, prompts: tuple[str, ...],
               report: Report = print) -> SplitAnswers:
    """The split's answers to `prompts`, read from the answer cache (`answers_path`) when an
    earlier call stored answers to all of them, else computed (every clip encoded, the
    prompts not stored yet asked) and stored beside the answers to the other prompts already
    there. Independent processes sharing the cache (`tvad sweep --parallel-runs`) ask one at a
    time, the others reading what it stored; the processes of one job (`jobs.shares`) each
    ask about their share of the videos."""
    path = answers_path(cfg, backbone, split)

    def cached() -> tuple[SplitAnswers | None, bool]:
        earlier = _load_answers(path) if path.is_file() else None
        return earlier, earlier is not None and set(prompts) <= set(earlier.answers)

    earlier, hit = cached()
    if hit:
        report(f"[tvad] answer cache hit: {path}")
        return earlier

    def publish(answers: SplitAnswers) -> None:     # never an empty table: an error instead
        if len(answers):
            _store_answers(answers, path)
        else:
            path.unlink(missing_ok=True)

    if jax.process_count() == 1:
        with waiting_lock(path.with_name(f".{path.stem}.lock")):
            earlier, hit = cached()         # another process may have asked meanwhile
            if not hit:
                publish(ask_share(cfg, backbone, split, prompts, earlier, (0, 1), report))
    else:
        order = source_reader(cfg).video_names(split)
        read_in_shares(path.with_name(f"incomplete-{path.stem}"), ".json",
                       lambda share: ask_share(cfg, backbone, split, prompts, earlier, share,
                                               report),
                       _store_answers, _load_answers,
                       lambda shares: publish(join_shares(shares, order, ROWS)))
    # read back: the first run and every later one see the same stored (float16) features
    answers = _load_answers(path) if path.is_file() else None
    if answers is None or not len(answers):
        raise DataError(cfg.prepare_source, f"split {split!r}: no object is seen on an "
                                            "answer frame")
    report(f"[tvad] answer cache: {path}")
    return answers


def ask_share(cfg: Config, backbone: FrozenBackbone, split: str, prompts: tuple[str, ...],
              stored: SplitAnswers | None, share: tuple[int, int], report: Report
              ) -> SplitAnswers:
    """Every object clip of the share's videos (share (i, n): every n-th video of the split
    from the i-th) encoded and asked `prompts`; the stored answers of the same clips kept, and
    their prompts not asked again."""
    job = cfg.vlavad
    qa = CropQA(plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view,
                            cfg.tvad.stage2.view), job.vqa_batch, job.max_new_tokens)
    reader = source_reader(cfg)
    videos, labels, parts = [], {}, []
    records = iter_records(reader, split, cfg.prepare.skip_bad, report, share)
    for record in progress(records, f"vlavad: answers ({split})",
                           len(reader.video_names(split)[share[0]::share[1]]), "video"):
        sidecar = record_sidecar(record, "VLAVAD")
        noise = job.detections if job.tracks == "tracker" else None
        tracks = tracks_from_sidecar(sidecar, str(record.source), noise, job.tracker,
                                     job.data_seed)
        categories = track_categories(tracks, sidecar)
        crops = track_clips(record.frames, tracks, job.clip_len, job.answer_stride,
                            backbone.cfg.vision.frame_size, str(record.source))
        if len(crops):
            part = {"video": np.full(len(crops), len(videos)), "frame": crops.frame,
                    "object": crops.object,
                    "category": [categories[int(o)] for o in crops.object]}
            part["visual"], part["pooled"] = qa.encode(crops.pixels)
            parts.append(part)
        videos.append(record.name)
        labels[record.name] = record.labels.astype(np.int64)
    if parts:
        joined = {k: np.concatenate([p[k] for p in parts])
                  for k in ("video", "frame", "object", "visual", "pooled")}
    else:               # no clip in the share: an empty table (a share may be that small)
        joined = {**{k: np.zeros(0, np.int64) for k in ("video", "frame", "object")},
                  "visual": None, "pooled": np.zeros((0, 0), np.float32)}
    category = [c for p in parts for c in p["category"]]
    result = SplitAnswers(videos, labels, joined["video"], joined["frame"], joined["object"],
                          category, {}, joined["pooled"])
    if stored is not None:
        kept = _rows_of(stored, videos)
        if _same_clips(kept, result):
            result.answers = dict(kept.answers)  # kept; only the missing prompts are asked
    for prompt in prompts:
        if prompt not in result.answers:
            report(f"[tvad] VLAVAD: asking {len(category)} object clips ({split}): {prompt}")
            result.answers[prompt] = (qa.answers(joined["visual"], category, prompt)
                                      if category else [])
    return result


def _rows_of(a: SplitAnswers, videos: list[str]) -> SplitAnswers:
    """The rows of `a` that belong to `videos` (which must be among a's; else nothing)."""
    if not set(videos) <= set(a.videos):
        return dataclasses.replace(a, videos=[])
    index = np.asarray([a.videos.index(v) for v in videos], np.int64)
    rows = np.flatnonzero(np.isin(a.video, index))
    remap = np.full(len(a.videos), -1)
    remap[index] = np.arange(len(videos))
    return SplitAnswers(list(videos), {v: a.labels[v] for v in videos}, remap[a.video[rows]],
                        a.frame[rows], a.object[rows], [a.category[i] for i in rows],
                        {p: [x[i] for i in rows] for p, x in a.answers.items()},
                        a.pooled[rows])


def _same_clips(a: SplitAnswers, b: SplitAnswers) -> bool:
    """Whether two answer tables list the same clips in the same order."""
    return (a.videos == b.videos and a.category == b.category
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("video", "frame", "object")))


def _store_answers(a: SplitAnswers, path: Path) -> None:
    """<name>.json (rows, answers, labels) and <name>.npy (pooled), each written under a
    temporary name of this process and renamed (the .npy first, the .json marks completion),
    so that runs sharing the cache at the same time never read a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path.with_suffix(".npy"), a.pooled.astype(np.float16))
    data = {"videos": a.videos, "labels": {k: v.tolist() for k, v in a.labels.items()},
            "video": a.video.tolist(), "frame": a.frame.tolist(), "object": a.object.tolist(),
            "category": a.category, "answers": a.answers}
    write_text_atomic(path, json.dumps(data) + "\n")


def _load_answers(path: Path) -> SplitAnswers:
    try:
        data = json.loads(path.read_text())
        pooled = np.load(path.with_suffix(".npy")).astype(np.float32)
        result = SplitAnswers(data["videos"],
                              {k: np.asarray(v, np.int64) for k, v in data["labels"].items()},
                              np.asarray(data["video"], np.int64),
                              np.asarray(data["frame"], np.int64),
                              np.asarray(data["object"], np.int64), data["category"],
                              data["answers"], pooled)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(path, f"unreadable stored answers ({err}); delete the file to "
                              "recompute them") from err
    if len(pooled) != len(result) or any(len(a) != len(result)
                                         for a in result.answers.values()):
        raise DataError(path, "stored answers and features disagree in length; delete the "
                              "file to recompute them")
    return result


# ----------------------------------------------------------------------------- embeddings


def answer_embeddings(backbone: FrozenBackbone, texts: list[str], batch: int = 256
                      ) -> np.ndarray:
    """E of each answer [K, D_t]: the text tower's mean-pooled tokens, unit norm (each
    distinct normalized answer encoded once)."""
    fam = family(backbone.cfg)
    unique, inverse = np.unique([normalize_answer(t) for t in texts], return_inverse=True)
    encode = jax.jit(lambda ids, mask: mean_pool(
        fam.text_features(backbone.cfg, backbone.params, ids, mask), mask))
    rows = []
    for lo in range(0, len(unique), batch):
        ids, mask = fam.tokenize(backbone.cfg, backbone.sentence_tokenizer,
                                 list(unique[lo:lo + batch]))
        n = len(ids)
        ids = np.pad(ids, ((0, batch - n), (0, 0)))
        mask = np.pad(mask, ((0, batch - n), (0, 0)))
        rows.append(np.asarray(encode(ids, mask), np.float32)[:n])
    emb = np.concatenate(rows)
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-6))[inverse]


@dataclasses.dataclass
class Windows:
    """Past -> future windows of the answers' embeddings along every track."""

    past: np.ndarray     # [N, L_p, D_t]
    future: np.ndarray   # [N, L_f, D_t]
    video: np.ndarray    # [N]
    frames: np.ndarray   # [N, L_f] frame of each predicted step

    def __len__(self) -> int:
        return len(self.past)


def track_windows(a: SplitAnswers, emb: np.ndarray, job: VLAVADJobConfig) -> Windows:
    """Cut each track's answer embeddings, in frame order, into L_p -> L_f windows; a track
    restarts where it skips an answer frame (it was not seen)."""
    past, future, video, frames = [], [], [], []
    keys = np.stack([a.video, a.object], 1)
    for key in np.unique(keys, axis=0):
        rows = np.flatnonzero((keys == key).all(1))
        rows = rows[np.argsort(a.frame[rows], kind="stable")]
        breaks = np.flatnonzero(np.diff(a.frame[rows]) != job.answer_stride) + 1
        for seg in np.split(rows, breaks):
            x, y = clips(emb[seg], job.model.past, job.model.future)
            if not len(x):
                continue
            _, f = clips(a.frame[seg][:, None], job.model.past, job.model.future)
            past.append(x)
            future.append(y)
            video.append(np.full(len(x), key[0]))
            frames.append(f[..., 0])
    d, lp, lf = emb.shape[1], job.model.past, job.model.future
    if not past:
        return Windows(np.zeros((0, lp, d), np.float32), np.zeros((0, lf, d), np.float32),
                       np.zeros(0, np.int64), np.zeros((0, lf), np.int64))
    return Windows(np.concatenate(past).astype(np.float32),
                   np.concatenate(future).astype(np.float32), np.concatenate(video),
                   np.concatenate(frames))


# ----------------------------------------------------------------------------- predictor


def predictor_spec(job: VLAVADJobConfig, features: int) -> tuple[TrackPredictor, StageSpec]:
    model = TrackPredictor(job.model, features, job.predictor)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, job.model.past, features), jnp.float32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        del rng
        pred = model.apply({"params": merge_params(trainable, frozen)}, batch["past"])
        copy_last = jnp.mean((batch["past"][:, -1:] - batch["future"]) ** 2)
        return jnp.mean((pred - batch["future"]) ** 2), {"copy_last_mse": copy_last}

    return model, StageSpec(job.train, init_fn, loss_fn)


def step_errors(model: TrackPredictor, params: Any, w: Windows, batch: int = 1024
                ) -> np.ndarray:
    """Squared prediction error of every predicted step [N, L_f] (mean over D)."""
    fn = jax.jit(lambda p, x, y: jnp.mean((model.apply({"params": p}, x) - y) ** 2, -1))
    out = []
    for lo in range(0, len(w), batch):
        x, y = w.past[lo:lo + batch], w.future[lo:lo + batch]
        n = len(x)
        pad = ((0, batch - n), (0, 0), (0, 0))
        out.append(np.asarray(fn(params, np.pad(x, pad), np.pad(y, pad)))[:n])
    return np.concatenate(out) if out else np.zeros((0, model.config.future), np.float32)


# ----------------------------------------------------------------------------- the job


def train_vlavad(cfg: Config, run_dir: str | Path | None = None,
                 report: Report = print) -> Path:
    """Answers on the normal training split, SPA fitted on them, the predictor trained on
    their embeddings; returns the run folder.

    On several processes (`vlavad.train.distributed` or TVAD_COORDINATOR_ADDRESS & co.) each
    asks about its share of a split's videos, the predictor trains data-parallel over the
    global mesh, each process loading its part of every batch, and process 0 writes the
    run's files."""
    job = cfg.vlavad
    check_output_dir(run_dir or cfg.runs_dir)
    distributed.initialize(job.train.distributed)
    ensure_benchmark_once(cfg, report)
    run_dir = start_run(KIND, cfg, run_dir)
    backbone = load_frozen_backbone(job.backbone or cfg.tvad.backbone)
    a = answers_of(cfg, backbone, job.train_split, job.prompts, report)
    spa = fit_spa({p: a.answers[p] for p in job.prompts}, job.top_k, job.num_prompts,
                  job.skip_saturated)
    report(f"[tvad] SPA: concentration (top {job.top_k}) "
           + ", ".join(f"{p} {c:.3f}" for p, c in spa.concentrations.items())
           + f"; chosen: {', '.join(spa.prompts)}")
    emb = embeddings(backbone, a, spa)
    w = track_windows(a, emb, job)
    if not len(w):
        raise DataError(cfg.prepare_source, f"split {job.train_split!r} has no track with "
                                            f"{job.model.past + job.model.future} answer steps "
                                            "(L_p + L_f)")
    model, spec = predictor_spec(job, emb.shape[1])
    report(f"[tvad] VLAVAD predictor ({job.predictor}): {len(w)} windows of "
           f"{len(a)} answered clips, {len(a.videos)} videos ({job.train_split})")
    result = train(spec, data=iter(array_batches({"past": w.past, "future": w.future},
                                                 job.batch_size, job.data_seed)),
                   run_dir=run_dir / "predictor")
    errors = step_errors(model, merge_params(result.state.params, result.frozen), w)
    stats = {"spa": spa.to_json(), "error_ref": float(np.median(errors)),
             "train_error_mean": float(errors.mean()), "train_windows": len(w),
             "train_clips": len(a), "train_videos": len(a.videos),
             "train_split": job.train_split,
             "train_answers": str(answers_path(cfg, backbone, job.train_split)),
             "distinct_answers": {p: len({normalize_answer(x) for x in a.answers[p]})
                                  for p in job.prompts}}
    finish_run(run_dir, STATS_FILE, stats)
    report(f"[tvad] VLAVAD trained: {run_dir}")
    return run_dir


def embeddings(backbone: FrozenBackbone, a: SplitAnswers, spa: SPA) -> np.ndarray:
    """E_i(t) [K, D_t]: the embedding of each clip's answer to the chosen prompt (several
    chosen prompts: their embeddings side by side)."""
    return np.concatenate([answer_embeddings(backbone, a.answers[p]) for p in spa.prompts], 1)


def is_vlavad_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "predictor").is_dir() or (Path(run_dir) / STATS_FILE).is_file()


def vlavad_scores(run_dir: str | Path, split: str, report: Report = print,
                  scoring: VLAVADJobConfig | None = None
                  ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """A finished run's frame scores on a split, {score: {video: [T]}} for the fusion
    ("vlavad"), its halves ("spa", "s3m_answers") and the kNN baseline ("knn_visual"), and
    what they came from (the answers' statistics, counts, the chosen prompts). `scoring`: a
    `vlavad` section whose fusion (weight, normalize) replaces the run's own."""
    run_dir, cfg, stats = finished_run(run_dir, STATS_FILE, "vlavad")
    job = cfg.vlavad
    fusion = scoring or job
    spa = SPA.from_json(stats["spa"])
    backbone = load_frozen_backbone(job.backbone or cfg.tvad.backbone)
    train_a = answers_of(cfg, backbone, job.train_split, spa.prompts, report)
    a = answers_of(cfg, backbone, split, spa.prompts, report)
    lengths = {name: len(a.labels[name]) for name in a.videos}
    stride = job.answer_stride

    static = spa.scores(a.answers) / len(spa.prompts)
    emb = embeddings(backbone, a, spa)
    w = track_windows(a, emb, job)
    model, spec = predictor_spec(job, emb.shape[1])
    params, step = restore_params(spec, run_dir / "predictor" / "checkpoints", "latest")
    errors = step_errors(model, params, w)
    scaled = errors / (errors + max(stats["error_ref"], 1e-12))
    scores = {
        "spa": frame_max(a.videos, lengths, a.video, a.frame, static, stride),
        "s3m_answers": frame_max(a.videos, lengths, np.repeat(w.video, job.model.future),
                                 w.frames.reshape(-1), scaled.reshape(-1), stride),
        "knn_visual": frame_max(a.videos, lengths, a.video, a.frame,
                                knn_distance(train_a.pooled, a.pooled) / 2.0, stride),
    }
    scores["vlavad"] = fuse({"spa": scores["spa"], "s3m": scores["s3m_answers"]},
                            {"spa": 1.0, "s3m": fusion.weight}, fusion.normalize)
    seen = {p: set(spa.counts[p]) for p in spa.prompts}
    found = {
        "answers": {p: {"distinct": len({normalize_answer(x) for x in a.answers[p]}),
                        "unseen_in_training": float(np.mean([normalize_answer(x) not in seen[p]
                                                             for x in a.answers[p]]))}
                    for p in spa.prompts},
        "clips": len(a), "windows": len(w), "chosen_prompts": list(spa.prompts),
        "predictor": job.predictor, "predictor_step": step}
    return scores, found


def vlavad_aucs(run_dir: str | Path, split: str | None = None, report: Report = print,
                baseline: tuple[dict, dict] | None = None,
                scoring: VLAVADJobConfig | None = None) -> dict:
    """Micro/macro frame AUC on a split of the fused score, its two halves and the kNN
    baseline, beside frame difference; per anomaly type too. `scoring`: a `vlavad` section
    whose fusion and smoothing (weight, normalize, sigma) replace the run's own (a sweep row
    that scores another row's run differently). Nothing is written."""
    run_dir, cfg, _ = finished_run(run_dir, STATS_FILE, "vlavad")
    scoring = scoring or cfg.vlavad
    split = split or cfg.vlavad.eval_split
    scores, found = vlavad_scores(run_dir, split, report, scoring)
    base, labels = baseline or baseline_scores(cfg, split, report)
    if set(base) != set(scores["vlavad"]):
        raise DataError(cfg.prepare_source, f"split {split!r}: the stored answers and the "
                                            "videos name different sets of videos")
    results = frame_auc_rows(cfg, {**scores, "frame_difference": base}, labels,
                             scoring.sigma, typed="vlavad")
    results.update({**found, "split": split, "videos": len(labels), "sigma": scoring.sigma,
                    "weight": scoring.weight, "normalize": scoring.normalize})
    return results


def evaluate_vlavad_run(run_dir: str | Path, split: str | None = None, plot: bool = False,
                        report: Report = print,
                        baseline: tuple[dict, dict] | None = None) -> dict:
    """`vlavad_aucs` of the run as configured, written to its eval_<split>.json/.md."""
    del plot  # no figures yet
    results = vlavad_aucs(run_dir, split, report, baseline)
    write_summary(Path(run_dir), f"eval_{results['split']}", results)
    return results


def knn_distance(bank: np.ndarray, queries: np.ndarray, batch: int = 4096) -> np.ndarray:
    """1 - the largest cosine of each query [Q, D] with the bank [B, D]: Table 2's kNN (k = 1)
    on visual features."""
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)  # noqa
    bank, queries = unit(bank.astype(np.float32)), unit(queries.astype(np.float32))
    out = [1.0 - (queries[lo:lo + batch] @ bank.T).max(1)
           for lo in range(0, len(queries), batch)]
    return np.clip(np.concatenate(out), 0.0, 2.0)
