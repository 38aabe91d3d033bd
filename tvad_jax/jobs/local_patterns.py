"""Paper 003 ("Local patterns generalize better") as a detector on the shared stack.

Every tracked object every other frame: its box grown by half its size on each side is cropped
(`data.object_crops`; the simulator's tracks stand in for YOLO and the IoU tracker; a crop at t
holds frames t-1 and t and speaks for the `crop_stride` frames up to t) and read by the frozen
vision tower (or, with `local.tokens=region`, the tower reads the whole video and the object's
tokens are sampled from its patch grid under the grown box); the frozen ITAM (`models.itam`, a
BLIP-2 Q-Former trained with BLIP-2's three losses on object crops and their plain
descriptions: by default the one pretrained with the backbone on its corpus, `<backbone>/itam`
from `tvad pretrain --itam`, as paper 003 takes BLIP-2's pretrained Q-Former, its "D. 1"; with
`local.itam=train`, trained in the run on the normal training videos, its "D. 2") turns the
tower's tokens into N_q image tokens F^I; its captioner writes a caption, whose sentence
feature F^T[0] weights the image tokens into the local pattern G = (F^T[0] F^I^T) F^I (CMAM,
eq. 1); TME adds the box's 8-bin histogram of motion-vector magnitudes by orientation
(`data.motion`, from an H.264 re-encode: FFmpeg exports no motion vectors for the paper's
HEVC). RM (`models.local_patterns`) learns to reconstruct the standardized [G ; M] of normal
objects (`train_normal`); an object's score is its reconstruction error e, mapped to e / (e +
e_ref) with e_ref the training median (monotone), and a frame's score is the max over the crops
covering it (0 where no object is: the paper does not say). A split's crops as the frozen tower
reads them, with their motion histograms and descriptions, are cached on disk (`jobs.local_objects`)
for every later run and evaluation.

    tvad train local-patterns [--run-dir DIR] [local.pattern=cmam local.motion=true ...]
    tvad eval run RUN_DIR [--split test]

Run folder: config.json, itam/ (`local.itam=train`), smm/ and rm/ (engine runs: checkpoints,
metrics.jsonl), local_stats.json (feature statistics, e_ref, counts; written last),
eval_<split>.json/.md.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.config import ConfigError
from tvad_jax.data.batches import array_batches
from tvad_jax.data.clip_texts import encode_caption
from tvad_jax.data.files import check_output_dir
from tvad_jax.errors import DataError
from tvad_jax.eval.baselines import baseline_scores
from tvad_jax.eval.fusion import frame_max
from tvad_jax.eval.metrics import roc_auc
from tvad_jax.eval.report import write_summary
from tvad_jax.jobs.common import (Report, ensure_benchmark_once, finish_run, finished_run,
                                  frame_auc_rows, start_run)
from tvad_jax.jobs.config import Config, LocalPatternsJobConfig
from tvad_jax.jobs.local_objects import SplitObjects, in_batches, split_objects
from tvad_jax.models import backbone_io, itam as itam_lib
from tvad_jax.models.local_patterns import ReconstructionModule, cmam, reconstruction_errors
from tvad_jax.models.smm import (SMM, SMMConfig, pair_inputs, pair_outputs, to_question,
                                 yes_no_loss, yes_probability)
from tvad_jax.models.tvad import FrozenBackbone, load_frozen_backbone
from tvad_jax.train import distributed
from tvad_jax.train.loop import StageSpec, restore_params, train
from tvad_jax.train.state import merge_params

KIND = "local-patterns"
STATS_FILE = "local_stats.json"


# ----------------------------------------------------------------------------- object scores


def crop_aucs(acting: list[str], errors: np.ndarray) -> dict[str, Any]:
    """How well the object scores alone find the anomalous objects: ROC-AUC of `errors` [K]
    with the crops whose object acts an anomaly as positives ("all"), and per anomaly type
    against every crop that acts none; {} when the split has no such crop."""
    kinds = np.asarray(acting, str)
    normal = kinds == ""
    if normal.all() or not normal.any():
        return {}
    per_type = {kind: roc_auc(kinds[normal | (kinds == kind)] != "",
                              errors[normal | (kinds == kind)])
                for kind in sorted(set(acting) - {""})}
    return {"all": roc_auc(~normal, errors), "per_anomaly_type": per_type}


# ----------------------------------------------------------------------------- ITAM


def itam_config(job: LocalPatternsJobConfig, backbone: FrozenBackbone) -> itam_lib.ITAMConfig:
    """ITAM's sizes from the job, its input width and vocabulary from the backbone."""
    tok = backbone.tokenizer
    return itam_lib.ITAMConfig(
        vision_width=backbone.cfg.vision.width, width=job.itam_width, depth=job.itam_depth,
        heads=job.itam_heads, num_queries=job.num_queries, vocab_size=len(tok),
        max_text_len=job.text_len, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def itam_spec(job: LocalPatternsJobConfig, icfg: itam_lib.ITAMConfig
              ) -> tuple[itam_lib.ITAM, StageSpec]:
    model = itam_lib.ITAM(icfg)

    def init_fn(rng):
        tokens = jnp.zeros((1, 2, icfg.vision_width), jnp.float32)
        ids = jnp.zeros((1, icfg.max_text_len), jnp.int32)
        return model.init(rng, tokens, ids, ids > 0)["params"]

    def loss_fn(trainable, frozen, batch, rng):
        return itam_lib.blip2_loss(model, merge_params(trainable, frozen),
                                   batch["tokens"].astype(jnp.float32), batch["ids"],
                                   batch["mask"], rng)

    return model, StageSpec(job.itam_train, init_fn, loss_fn)


def text_ids(texts: list[str], tokenizer, length: int) -> np.ndarray:
    return np.stack([encode_caption(tokenizer, t, length) for t in texts])


@functools.partial(jax.jit, static_argnums=0)
def _image_tokens(model: itam_lib.ITAM, params, tokens):
    return model.apply({"params": params}, tokens, method=itam_lib.ITAM.image_tokens)


@functools.partial(jax.jit, static_argnums=0)
def _padded_text_features(model: itam_lib.ITAM, params, ids):
    """F^T with the rows past a sentence's end set to zeros, as the paper pads F^T."""
    real = ids != model.cfg.pad_token_id
    return model.apply({"params": params}, ids, real,
                       method=itam_lib.ITAM.text_features) * real[..., None]


class ITAMReader:
    """The trained ITAM's readings of crops and sentences, batched (the compiled functions
    are module-level, so every reader of the same sizes shares them)."""

    def __init__(self, model: itam_lib.ITAM, params: Any, tokenizer, job: LocalPatternsJobConfig):
        self.model, self.params, self.tokenizer, self.job = model, params, tokenizer, job
        self._image = functools.partial(_image_tokens, model, params)
        self._caption = lambda t: itam_lib.caption(model, params, t, job.text_len)
        self._text = functools.partial(_padded_text_features, model, params)

    def image_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """F^I [K, N_q, H] of the crops' tower tokens [K, 1+N, D_v]."""
        return in_batches(self._image, self.job.encode_batch, tokens.astype(np.float32))

    def caption_ids(self, tokens: np.ndarray) -> np.ndarray:
        """The captioner's (IGTG) greedy token ids [K, S_l] for each crop (bos first)."""
        return in_batches(self._caption, self.job.encode_batch, tokens.astype(np.float32))

    def captions(self, tokens: np.ndarray) -> list[str]:
        """The captioner's sentence for each crop."""
        return [self._decode(row) for row in self.caption_ids(tokens)]

    def _decode(self, row: np.ndarray) -> str:
        ids = [int(i) for i in row[1:]]                 # after bos, up to eos
        eos = self.model.cfg.eos_token_id
        if eos in ids:
            ids = ids[:ids.index(eos)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def text_features(self, texts: list[str]) -> np.ndarray:
        """F^T [K, S_l, H] of sentences (row 0: the sentence feature). Each distinct sentence
        is read once: TSGM's kept sentences and their questions repeat along the tracks."""
        distinct = list(dict.fromkeys(texts))
        row = {text: i for i, text in enumerate(distinct)}
        features = in_batches(self._text, self.job.encode_batch,
                              text_ids(distinct, self.tokenizer, self.job.text_len))
        return features[[row[text] for text in texts]]


def patterns(job: LocalPatternsJobConfig, reader: ITAMReader | None, tsgm: TSGM | None,
             objects: SplitObjects) -> np.ndarray:
    """What RM reconstructs beside the motion, per crop [K, H] (`job.pattern`)."""
    tokens = objects.tokens
    if job.pattern == "none":
        return np.zeros((len(tokens), 0), np.float32)
    if job.pattern == "backbone":
        return tokens[:, 1:].astype(np.float32).mean(1)
    image = reader.image_tokens(tokens)
    if job.pattern == "itam":
        return image.mean(1)
    if tsgm is None:
        sentences = reader.captions(tokens)
    else:
        sentences = tsgm.sentences(objects, image, lambda rows: reader.captions(tokens[rows]))
    sentence = reader.text_features(sentences)[:, 0]
    if job.pattern == "text":
        return sentence
    return np.asarray(cmam(jnp.asarray(sentence), jnp.asarray(image), job.cmam_weights))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _p_yes(model: SMM, form: str, params, emb_yes, emb_no, questions, image):
    """p("yes") of the SMM on [question tokens ; image tokens]."""
    return yes_probability(model.apply({"params": params},
                                       jnp.concatenate([questions, image], axis=1)),
                           emb_yes, emb_no, form)


class TSGM:
    """Temporal sentence generation (paper 003 §3.4): along each track, the SMM reads the
    previous sentence turned into a question (F^T of `to_question`) beside the current image
    tokens F^I and answers whether that sentence still holds; "yes" keeps it, "no" (or a new
    track) takes the captioner's caption of the current crop, so only those crops are
    captioned."""

    def __init__(self, model: SMM, params: Any, reader: ITAMReader):
        self.reader = reader
        yes, no = reader.text_features(["yes", "no"])[:, 0]
        self._p_yes = functools.partial(_p_yes, model, reader.job.smm_yes_no, params, yes, no)

    def keeps(self, previous: list[str], image: np.ndarray) -> np.ndarray:
        """[K] bool: does each previous sentence still hold for its crop's image tokens?"""
        questions = self.reader.text_features([to_question(s) for s in previous])
        return in_batches(self._p_yes, self.reader.job.encode_batch, questions, image) > 0.5

    def sentences(self, objects: SplitObjects, image: np.ndarray,
                  caption: Callable[[np.ndarray], list[str]]) -> list[str]:
        """The sentence S_i(t) of every crop: frame after frame, every video's tracks at once
        (one SMM call, then one captioner call for the crops it did not keep, per frame index
        of the split). caption(rows) -> the captioner's sentences of those crops."""
        out = [""] * len(objects)
        last: dict[tuple[int, int], str] = {}           # (video, object) -> latest sentence
        track = list(zip(objects.video.tolist(), objects.object.tolist()))
        for t in np.unique(objects.frame):
            now = np.flatnonzero(objects.frame == t)
            known = [r for r in now if track[r] in last]
            kept = set()
            if known:
                previous = [last[track[r]] for r in known]
                for r, sentence, keep in zip(known, previous, self.keeps(previous, image[known])):
                    if keep:
                        out[r] = sentence
                        kept.add(r)
            new = np.asarray([r for r in now if r not in kept], np.int64)
            if len(new):
                for r, sentence in zip(new, caption(new)):
                    out[r] = sentence
            last.update((track[r], out[r]) for r in now)
        return out


def smm_spec(job: LocalPatternsJobConfig, emb_yes: np.ndarray, emb_no: np.ndarray
             ) -> tuple[SMM, StageSpec]:
    """The SMM's training stage: every (image i, question j) pair of a batch (eq. 6), labelled
    "yes" where crop i's description is the sentence question j was made from; the "yes" and
    "no" pairs weigh equally (`smm.yes_no_loss(balanced=True)`)."""
    model = SMM(smm_config(job))

    def init_fn(rng):
        tokens = jnp.zeros((1, job.text_len + job.num_queries, job.itam_width), jnp.float32)
        return model.init(rng, tokens)["params"]

    def loss_fn(trainable, frozen, batch, rng):
        del rng
        pred = pair_outputs(model.apply({"params": merge_params(trainable, frozen)},
                                        pair_inputs(batch["question"], batch["image"])))  # b, b, H
        sentence = batch["sentence"]
        labels = (sentence[:, None] == sentence[None, :]).astype(jnp.float32)     # b, b
        p_yes = yes_probability(pred, emb_yes, emb_no, job.smm_yes_no)
        correct = (p_yes > 0.5) == (labels > 0)
        return yes_no_loss(pred, emb_yes, emb_no, labels, job.smm_yes_no, balanced=True), {
            "accuracy": correct.mean(),
            "yes_recall": (correct * labels).sum() / labels.sum()}

    return model, StageSpec(job.smm_train, init_fn, loss_fn)


def smm_config(job: LocalPatternsJobConfig) -> SMMConfig:
    return SMMConfig(width=job.itam_width, channels=job.smm_channels,
                     state_size=job.smm_channels, num_machines=job.smm_machines)


# ----------------------------------------------------------------------------- RM


def rm_spec(job: LocalPatternsJobConfig, width: int) -> tuple[ReconstructionModule, StageSpec]:
    model = ReconstructionModule(job.rm)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, width), jnp.float32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        del rng
        x = batch["x"]
        errors = reconstruction_errors(x, model.apply({"params": merge_params(trainable, frozen)},
                                                      x))
        return errors.mean(), {}

    return model, StageSpec(job.rm_train, init_fn, loss_fn)


def object_features(job: LocalPatternsJobConfig, reader: ITAMReader | None,
                    tsgm: TSGM | None, objects: SplitObjects) -> np.ndarray:
    """[K, H + 8] (or without either part): the local pattern beside the motion histogram."""
    parts = [patterns(job, reader, tsgm, objects)]
    if job.motion:
        parts.append(objects.motion)
    return np.concatenate(parts, axis=1).astype(np.float32)


def frame_scores(objects: SplitObjects, errors: np.ndarray, error_ref: float, stride: int
                 ) -> dict[str, np.ndarray]:
    """Per-video frame scores in [0, 1): the max of e / (e + e_ref) over the crops covering
    each frame (a crop at t covers frames t - stride + 1 .. t); 0 where no crop does."""
    scaled = errors / (errors + max(error_ref, 1e-12))
    lengths = {name: len(labels) for name, labels in objects.labels.items()}
    return frame_max(objects.videos, lengths, objects.video, objects.frame, scaled, stride)


# ----------------------------------------------------------------------------- the job


def train_local_patterns(cfg: Config, run_dir: str | Path | None = None,
                         itam_from: str | Path | None = None, report: Report = print) -> Path:
    """Train the SMM (and, with `local.itam=train`, ITAM) on described crops, then RM on the
    normal training objects; returns the run folder. `itam_from`: a run folder whose trained
    ITAM (same ITAM settings) a `local.itam=train` run takes instead of training its own (the
    sweeps' settings that share it).

    On several processes (`local.rm_train.distributed` or TVAD_COORDINATOR_ADDRESS & co.) each
    reads its share of a split's objects into the object cache (`read_in_shares`), every
    stage trains data-parallel over the global mesh, each process loading its part of every
    batch, and process 0 writes the run's files."""
    job = cfg.local
    check_output_dir(run_dir or cfg.runs_dir)
    distributed.initialize(job.rm_train.distributed)
    backbone = load_frozen_backbone(job.backbone or cfg.tvad.backbone)
    trains_itam = uses_itam(job) and job.itam == "train"
    if uses_itam(job) and not trains_itam:
        pretrained_itam(itam_config(job, backbone), backbone, job.tokens)   # fails early
    ensure_benchmark_once(cfg, report)
    run_dir = start_run(KIND, cfg, run_dir)
    if trains_itam and itam_from:
        lend_itam(Path(itam_from) / "itam", run_dir / "itam")
    objects = split_objects(cfg, backbone, job.train_split, report)
    if uses_itam(job):
        described = (objects if job.itam_split == job.train_split
                     else split_objects(cfg, backbone, job.itam_split, report))
        if trains_itam and not itam_from:
            train_itam(job, backbone, described, job.itam_split, run_dir, report)
        if uses_smm(job):
            train_smm(job, itam_reader(job, backbone, run_dir), described, run_dir, report)
    reader, tsgm = trained_stages(job, backbone, run_dir)
    x = object_features(job, reader, tsgm, objects)
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-6)
    x = (x - mean) / std
    rm, spec = rm_spec(job, x.shape[1])
    report(f"[tvad] RM: {len(x)} normal objects of {len(objects.videos)} videos "
           f"({job.train_split}), {x.shape[1]} features")
    result = train(spec, data=iter(array_batches({"x": x}, job.rm_batch, job.data_seed)),
                   run_dir=run_dir / "rm")
    errors = np.asarray(reconstruction_errors(
        x, rm.apply({"params": merge_params(result.state.params, result.frozen)}, x)))
    stats = {"mean": mean.tolist(), "std": std.tolist(), "error_ref": float(np.median(errors)),
             "train_error_mean": float(errors.mean()), "train_objects": len(x),
             "train_videos": len(objects.videos), "train_split": job.train_split,
             "rm_epochs": job.rm_train.loop.steps * job.rm_batch / len(x),
             "features": x.shape[1]}
    finish_run(run_dir, STATS_FILE, stats)
    report(f"[tvad] local patterns trained: {run_dir}")
    return run_dir


def lend_itam(lent: Path, into: Path) -> None:
    """A copy of another run's trained ITAM as this run's (process 0 copies, renamed into
    place: never half there)."""
    if not into.exists() and not (lent / "checkpoints").is_dir():
        raise DataError(lent, "no trained ITAM to reuse")
    if jax.process_index() == 0 and not into.exists():
        shutil.copytree(lent, into.with_name(into.name + ".tmp"), dirs_exist_ok=True)
        into.with_name(into.name + ".tmp").replace(into)
    distributed.barrier("itam-lent")


def uses_itam(job: LocalPatternsJobConfig) -> bool:
    return job.pattern in ("cmam", "itam", "text")


def uses_smm(job: LocalPatternsJobConfig) -> bool:
    return job.smm and job.pattern in ("cmam", "text")


def train_itam(job: LocalPatternsJobConfig, backbone: FrozenBackbone, described: SplitObjects,
               split: str, run_dir: Path, report: Report) -> None:
    """ITAM with BLIP-2's losses on the crops and their descriptions, into run_dir/itam."""
    icfg = itam_config(job, backbone)
    _, spec = itam_spec(job, icfg)
    report(f"[tvad] ITAM: {len(described)} object crops of {len(described.videos)} videos "
           f"({split}), {len(set(described.texts))} distinct descriptions")
    ids = text_ids(described.texts, backbone.tokenizer, job.text_len)
    data = array_batches({"tokens": described.tokens, "ids": ids,
                          "mask": ids != icfg.pad_token_id}, job.itam_batch, job.data_seed)
    train(spec, data=iter(data), run_dir=run_dir / "itam")


def train_smm(job: LocalPatternsJobConfig, reader: ITAMReader, described: SplitObjects,
              run_dir: Path, report: Report) -> None:
    """The SMM on (crop, question) pairs of the described crops, into run_dir/smm."""
    yes, no = reader.text_features(["yes", "no"])[:, 0]
    _, spec = smm_spec(job, yes, no)
    _, sentence = np.unique(described.texts, return_inverse=True)
    report(f"[tvad] SMM: {len(described)} (crop, question) pairs")
    data = array_batches({
        "image": reader.image_tokens(described.tokens),
        "question": reader.text_features([to_question(t) for t in described.texts]),
        "sentence": sentence.astype(np.int32)}, job.smm_batch, job.data_seed)
    train(spec, data=iter(data), run_dir=run_dir / "smm")


def itam_reader(job: LocalPatternsJobConfig, backbone: FrozenBackbone, run_dir: Path
                ) -> ITAMReader:
    """The run's frozen ITAM: the backbone's pretrained one (`local.itam=backbone`) or the one
    trained into run_dir/itam."""
    icfg = itam_config(job, backbone)
    model, spec = itam_spec(job, icfg)
    if job.itam == "backbone":
        if (run_dir / "itam").is_dir():     # a run from before `local.itam` (then "train")
            raise ConfigError(f"{run_dir / 'itam'}: the run trained an ITAM of its own, its "
                              "config reads the backbone's; set \"itam\": \"train\" in the "
                              f"local section of {run_dir / 'config.json'}")
        params = pretrained_itam(icfg, backbone, job.tokens)
    else:
        params, _ = restore_params(spec, run_dir / "itam" / "checkpoints", "latest")
    return ITAMReader(model, params, backbone.tokenizer, job)


def pretrained_itam(icfg: itam_lib.ITAMConfig, backbone: FrozenBackbone, tokens: str) -> Any:
    """The params of the ITAM pretrained with `backbone` (`tvad pretrain --itam`); a ConfigError
    when it has none, or its sizes or the object tokens it read (`local.tokens`) are not the
    job's."""
    path = backbone.path / backbone_io.ITAM_DIR
    if not path.is_dir():
        raise ConfigError(f"{path}: the backbone has no pretrained ITAM; make one with "
                          "`tvad pretrain --itam --install` or train one in the run with "
                          "local.itam=train")
    cfg, params = backbone_io.load_itam(backbone.path)
    differ = [f"{f.name} {getattr(cfg, f.name)} (the job's {getattr(icfg, f.name)})"
              for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(icfg, f.name)]
    trained_on = backbone_io.itam_tokens(backbone.path)
    if trained_on != tokens:
        differ.append(f"tokens {trained_on} (the job's local.tokens {tokens})")
    if differ:
        raise ConfigError(f"{path}/config.json: the pretrained ITAM does not fit this job and "
                          f"backbone: {'; '.join(differ)}; set local.itam_* to its sizes or "
                          "local.itam=train")
    return params


def trained_stages(job: LocalPatternsJobConfig, backbone: FrozenBackbone, run_dir: Path
                   ) -> tuple[ITAMReader | None, TSGM | None]:
    """The run's trained ITAM and TSGM, where its setting uses them."""
    if not uses_itam(job):
        return None, None
    reader = itam_reader(job, backbone, run_dir)
    if not uses_smm(job):
        return reader, None
    yes, no = reader.text_features(["yes", "no"])[:, 0]
    model, spec = smm_spec(job, yes, no)
    params, _ = restore_params(spec, run_dir / "smm" / "checkpoints", "latest")
    return reader, TSGM(model, params, reader)


def is_local_patterns_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "rm").is_dir() or (Path(run_dir) / "itam").is_dir()


def local_patterns_scores(run_dir: str | Path, split: str, report: Report = print
                          ) -> tuple[dict[str, np.ndarray], dict]:
    """A finished run's frame scores on a split ({video: [T]}) and what they came from
    (`objects`, `rm_step`, `crop_auc`: the object scores alone against which objects act an
    anomaly, `crop_aucs`)."""
    run_dir, cfg, stats = finished_run(run_dir, STATS_FILE, "local-patterns")
    job = cfg.local
    backbone = load_frozen_backbone(job.backbone or cfg.tvad.backbone)
    reader, tsgm = trained_stages(job, backbone, run_dir)
    objects = split_objects(cfg, backbone, split, report)
    x = (object_features(job, reader, tsgm, objects) - np.asarray(stats["mean"])) / \
        np.asarray(stats["std"])
    rm, rspec = rm_spec(job, x.shape[1])
    rm_params, step = restore_params(rspec, run_dir / "rm" / "checkpoints", "latest")
    errors = np.asarray(reconstruction_errors(x, rm.apply({"params": rm_params}, x)))
    scores = frame_scores(objects, errors, stats["error_ref"], job.crop_stride)
    return scores, {"objects": len(x), "rm_step": step,
                    "crop_auc": crop_aucs(objects.acting, errors)}


def evaluate_local_patterns_run(run_dir: str | Path, split: str | None = None,
                                plot: bool = False, report: Report = print,
                                baseline: tuple[dict, dict] | None = None) -> dict:
    """Micro/macro frame AUC of a finished run on a split beside frame difference, per
    anomaly type too; written to eval_<split>.json/.md in the run folder."""
    del plot  # no figures yet
    run_dir, cfg, _ = finished_run(run_dir, STATS_FILE, "local-patterns")
    split = split or cfg.local.eval_split
    scores, found = local_patterns_scores(run_dir, split, report)
    base, labels = baseline or baseline_scores(cfg, split, report)
    results = frame_auc_rows(cfg, {"local_patterns": scores, "frame_difference": base},
                             labels, cfg.local.sigma, typed="local_patterns")
    results.update({"split": split, "videos": len(labels), **found, "sigma": cfg.local.sigma})
    write_summary(run_dir, f"eval_{split}", results)
    return results
