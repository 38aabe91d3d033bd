"""Backbone pretraining on the synthetic benchmark (`tvad pretrain`): the shipped default.

Three objectives on clips of the prepared `train` split, each clip paired with generic text
from `tvad_jax.data.captions` and `tvad_jax.data.object_text` (plain descriptions of what
objects look like and do; never the anomaly annotations, never "normal" / "abnormal"):

* clip-caption contrastive alignment of the vision and text towers: the most visible
  object's description plus a statement about a (class, zone) pair, true and often negated
  ("no car is on the sidewalk"), so that the text tower learns what "no" means (CLIP's
  symmetric InfoNCE with a learnable temperature; identical captions are positives);
* region-text contrastive alignment: the last layer's patch features pooled under each of the
  `regions` most visible objects' boxes (coverage-weighted, per tubelet) against that object's
  description, so that patch features carry class, look, action, speed, direction and zone;
* captioning / QA language modelling of the decoder: [P_V ; <s> question ; answer </s>] with
  the loss on answer tokens only: scene descriptions, counts, yes/no zone questions and, on
  crop clips (every `crop_every`-th clip, cropped around its main object), VLAVAD's
  single-object questions (pose, behaviour or action, appearance).

The tokenizer is trained first (byte-level BPE on the benchmark's text). After training the run
reports zero-shot clip<->caption and region<->description retrieval on held-out clips of
`eval_split` and writes the backbone (`backbone/`, Hugging Face layout) into the run folder;
`ship=True` also installs it as the package's default.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.captions import clip_caption, clip_questions, clip_timelines
from tvad_jax.data.object_boxes import box_coverage, crop_box, crop_frames
from tvad_jax.data.object_text import clip_objects, scene_of, zone_question, zone_statement
from tvad_jax.data.pipeline import (LoaderConfig, clip_index, find_builder_dir, make_dataset,
                                    open_split, split_names)
from tvad_jax.data.readers import make_reader
from tvad_jax.jobs.common import Report, ensure_prepared
from tvad_jax.jobs.config import Config, PretrainConfig
from tvad_jax.models import backbone_io
from tvad_jax.models.configs import BackboneConfig, default_backbone
from tvad_jax.models.generate import generate
from tvad_jax.models.losses import contrastive_loss, lm_loss, unit_rows
from tvad_jax.models.tokenizer import annotation_texts, train_tokenizer
from tvad_jax.models.vlm import Backbone
from tvad_jax.runs import new_run_dir
from tvad_jax.train.loop import StageSpec, train
from tvad_jax.train.mesh import make_mesh
from tvad_jax.train.state import merge_params

DESCRIBE = "Describe the clip."


def backbone_config(pcfg: PretrainConfig, vocab_size: int, image_size: int) -> BackboneConfig:
    """The architecture to pretrain: the shipped default's, or a tiny one for tests."""
    cfg = default_backbone(vocab_size, image_size)
    if pcfg.model == "default":
        return cfg
    return dataclasses.replace(
        cfg, projector_dim=32, embed_dim=16,
        vision=dataclasses.replace(cfg.vision, width=32, depth=2, heads=2, mlp_dim=64),
        text=dataclasses.replace(cfg.text, width=32, depth=1, heads=2, mlp_dim=64),
        decoder=dataclasses.replace(cfg.decoder, width=32, depth=1, heads=2, kv_heads=2,
                                    mlp_dim=64))


# ------------------------------------------------------------------ text of every clip
@dataclasses.dataclass
class ClipTexts:
    """Token arrays aligned with a split's clip index (row r = clip r); K = `regions`."""

    captions: list[str]
    caption_ids: np.ndarray      # [C, Lc] int32, <s> caption </s> <pad>...
    qa_ids: np.ndarray           # [C, Lq] int32, <s> question answer </s> <pad>...
    qa_targets: np.ndarray       # [C, Lq] int32, next token where it is an answer token, else -1
    region_ids: np.ndarray       # [C, K, Lc] int32, the description of each region's object
    region_boxes: np.ndarray     # [C, K, T, 4] float32 boxes per clip frame, NaN where absent
    crop_boxes: np.ndarray       # [C, 4] float32 square crop (x0, y0, side, side), or -1


class ClipText(NamedTuple):
    caption: str     # the most visible object's description + a zone statement (contrastive)
    scene: str       # up to three targets (the answer to "Describe the clip.")
    question: str    # this clip's QA pair; pairs rotate over clips
    answer: str
    regions: tuple[str, ...]          # descriptions of the K most visible objects
    boxes: np.ndarray                 # [K, T, 4] their boxes (NaN: absent or no object)
    crop: np.ndarray | None           # crop rows: (x0, y0, side, side) around the main object


def clip_texts(cfg: Config, split: str, loader: LoaderConfig, pcfg: PretrainConfig) -> list[ClipText]:
    """The texts of every clip of a split, in clip-index order.

    Every `crop_every`-th clip becomes a crop sample: the frames are cropped around its main
    object (the box over the clip, expanded by half its size on each side) and its texts are
    that object's description and single-object QA."""
    _, lengths = open_split(cfg.prepared_dir, split)
    names = split_names(cfg.prepared_dir, split)
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    sidecars, scenes, out = {}, {}, []
    span = (loader.clip_len - 1) * loader.frame_step + 1
    for row, (video, start) in enumerate(clip_index(lengths, loader)):
        name = names[video]
        sidecar = sidecars.setdefault(name, reader.read_sidecar(name))
        scene = scenes.setdefault(name, scene_of(sidecar))
        frame_ids = np.minimum(start + np.arange(loader.clip_len) * loader.frame_step,
                               sidecar["num_frames"] - 1)
        objects = clip_objects(sidecar, frame_ids, scene)
        timelines = clip_timelines(sidecar, int(start), span)
        width, height = sidecar["width"], sidecar["height"]
        crop = pcfg.crop_every and row % pcfg.crop_every == pcfg.crop_every - 1 and objects
        if crop:
            main = objects[(row // pcfg.crop_every) % min(len(objects), 2)]
            box = crop_box(main.boxes, width, height)
            question, answer = main.questions[(row // pcfg.crop_every) % len(main.questions)]
            boxes = np.full((pcfg.regions, loader.clip_len, 4), np.nan)
            boxes[0] = (main.boxes - np.tile(box[:2], 2)) * (width / box[2])
            out.append(ClipText(main.description, main.description, question, answer,
                                (main.description,), boxes, box))
            continue
        scene_text = clip_caption(timelines, width, height)
        statement, _ = zone_statement(objects, row)
        main = objects[0].description if objects else "an empty street"
        pairs = [(DESCRIBE, scene_text[:1].upper() + scene_text[1:] + "."),
                 zone_question(objects, row // 2)] + clip_questions(timelines)
        boxes = np.full((pcfg.regions, loader.clip_len, 4), np.nan)
        for k, obj in enumerate(objects[:pcfg.regions]):
            boxes[k] = obj.boxes
        out.append(ClipText(f"{main}; {statement}", scene_text, *pairs[row % len(pairs)],
                            tuple(o.description for o in objects[:pcfg.regions]), boxes, None))
    return out


def encode_texts(texts: list[ClipText], tokenizer, pcfg: PretrainConfig) -> ClipTexts:
    """Token arrays of `clip_texts` output."""
    def caption(text):
        return _pad([tokenizer.bos_token_id, *tokenizer(text)["input_ids"]], pcfg.caption_len,
                    tokenizer, end=tokenizer.eos_token_id)

    empty = np.full(pcfg.caption_len, tokenizer.pad_token_id, np.int32)
    caption_ids, qa_ids, qa_targets, region_ids = [], [], [], []
    for text in texts:
        caption_ids.append(caption(text.caption))
        ids, targets = qa_sequence(tokenizer, text.question, text.answer, pcfg.qa_len)
        qa_ids.append(ids)
        qa_targets.append(targets)
        regions = [caption(r) for r in text.regions]
        region_ids.append(regions + [empty] * (pcfg.regions - len(regions)))
    crops = [t.crop if t.crop is not None else np.full(4, -1) for t in texts]
    return ClipTexts([t.caption for t in texts], np.asarray(caption_ids, np.int32),
                     np.asarray(qa_ids, np.int32), np.asarray(qa_targets, np.int32),
                     np.asarray(region_ids, np.int32),
                     np.stack([t.boxes for t in texts]).astype(np.float32),
                     np.asarray(crops, np.float32))


def qa_sequence(tokenizer, question: str, answer: str, length: int):
    """(ids, targets) of `<s> question answer </s>` padded to `length`; targets[i] is ids[i+1]
    where that is an answer token (or the closing </s>), else -1."""
    prompt = [tokenizer.bos_token_id, *tokenizer(question)["input_ids"]]
    reply = [*tokenizer(" " + answer)["input_ids"], tokenizer.eos_token_id]
    ids = (prompt + reply)[:length]
    targets = np.full(length, -1, np.int32)
    for i in range(len(prompt) - 1, len(ids) - 1):
        targets[i] = ids[i + 1]
    return _pad(ids, length, tokenizer), targets


def _pad(ids: list[int], length: int, tokenizer, end: int | None = None) -> np.ndarray:
    if end is not None:
        ids = ids[:length - 1] + [end]
    return np.asarray(ids + [tokenizer.pad_token_id] * (length - len(ids)), np.int32)


class AttachText:
    """grain transform: frames (cropped on crop rows) + this clip's text arrays and the
    per-patch coverage of its region boxes (other keys dropped)."""

    def __init__(self, texts: ClipTexts, index: np.ndarray, patch: int, tubelet: int):
        self.texts, self.patch, self.tubelet = texts, patch, tubelet
        self.rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}

    def __call__(self, example: dict) -> dict:
        row = self.rows[(int(example["video_index"]), int(example["start"]))]
        frames, crop = example["frames"], self.texts.crop_boxes[row]
        if crop[0] >= 0:
            frames = crop_frames(frames, crop)
        coverage = box_coverage(self.texts.region_boxes[row], frames.shape[1], self.patch,
                                self.tubelet)
        return {"frames": frames, "caption_ids": self.texts.caption_ids[row],
                "qa_ids": self.texts.qa_ids[row], "qa_targets": self.texts.qa_targets[row],
                "region_ids": self.texts.region_ids[row], "region_weights": coverage}


# ------------------------------------------------------------------ objectives
def _forward(module: Backbone, frames, caption_ids, qa_ids, region_ids, region_weights):
    """Clip, caption, region and region-text embeddings and the decoder's QA logits, from one
    pass of each tower. region_ids [B, K, L], region_weights [B, K, T', h, w]."""
    pad = module.cfg.text.pad_token_id
    video, visual = module.encode_video_and_tokens(frames)          # [B, T', E], [B, S, D]
    b, k, length = region_ids.shape
    ids = jnp.concatenate([caption_ids, region_ids.reshape(b * k, length)])
    text = module.encode_text(ids, ids != pad).embeds               # [B + B K, E]
    patches = video.final[:, :, 1:]                                 # [B, T', N, D_v]
    weights = region_weights.reshape(b, k, *patches.shape[1:3])     # [B, K, T', N]
    pooled = jnp.einsum("btnd,bktn->bkd", patches, weights) / jnp.maximum(
        weights.sum(axis=(2, 3))[..., None], 1e-6)
    region = module.vision.visual_projection(pooled)                # [B, K, E]
    embeds = jnp.concatenate([visual, module.embed_tokens(qa_ids)], axis=1)
    positions = jnp.arange(embeds.shape[1])[None]
    logits, _ = module.decode(embeds, positions)
    return {"video": video.embeds.mean(axis=1), "caption": text[:b], "region": region,
            "region_text": text[b:].reshape(b, k, -1), "logit_scale": module.logit_scale,
            "qa_logits": logits[:, visual.shape[1]:]}


def make_spec(bcfg: BackboneConfig, pcfg: PretrainConfig) -> StageSpec:
    """The pretraining stage: every backbone param trains."""
    model = Backbone(bcfg)

    def init_fn(rng):
        frames = jnp.zeros((1, pcfg.clip_len, bcfg.vision.image_size, bcfg.vision.image_size, 3))
        return model.init(rng, frames, jnp.zeros((1, 2), jnp.int32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        params = merge_params(trainable, frozen)
        out = model.apply({"params": params}, batch["frames"], batch["caption_ids"],
                          batch["qa_ids"], batch["region_ids"], batch["region_weights"],
                          method=_forward)
        contrastive, accuracy = contrastive_loss(out["video"], out["caption"],
                                                 out["logit_scale"], batch["caption_ids"])
        b, k, length = batch["region_ids"].shape
        valid = batch["region_weights"].reshape(b * k, -1).sum(-1) > 0
        region, region_accuracy = contrastive_loss(
            out["region"].reshape(b * k, -1), out["region_text"].reshape(b * k, -1),
            out["logit_scale"], batch["region_ids"].reshape(b * k, length), valid)
        language = lm_loss(out["qa_logits"], batch["qa_targets"])
        loss = contrastive + pcfg.region_weight * region + pcfg.lm_weight * language
        return loss, {"contrastive": contrastive, "region": region, "lm": language,
                      "batch_t2v_top1": accuracy, "batch_t2r_top1": region_accuracy}

    return StageSpec(pcfg.train, init_fn, loss_fn)


# ------------------------------------------------------------------ evaluation
def retrieval(bcfg: BackboneConfig, params, cfg: Config, pcfg: PretrainConfig, tokenizer) -> dict:
    """Zero-shot retrieval among `eval_clips` held-out clips (no crops): clip <-> caption, and
    region <-> description (patch features pooled under each object's boxes, every object of
    those clips against every description).

    A retrieved item is correct when its text equals the query's (several clips or objects can
    share one); `*_chance_top1` is the expected accuracy of a random ranking."""
    pcfg = dataclasses.replace(pcfg, crop_every=0)
    loader = _loader(cfg, pcfg, shuffle=False)
    raw = clip_texts(cfg, pcfg.eval_split, loader, pcfg)
    texts = encode_texts(raw, tokenizer, pcfg)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    index = clip_index(lengths, loader)
    stride = max(len(index) // pcfg.eval_clips, 1)
    chosen = set(range(0, len(index), stride)[:pcfg.eval_clips])
    model = Backbone(bcfg)
    attach = AttachText(texts, index, bcfg.vision.patch_size, bcfg.vision.tubelet)

    @jax.jit
    def embed(batch):
        out = model.apply({"params": params}, batch["frames"], batch["caption_ids"],
                          batch["qa_ids"], batch["region_ids"], batch["region_weights"],
                          method=_forward)
        return {k: unit_rows(v) for k, v in out.items() if k in ("video", "caption", "region", "region_text")}

    rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}
    found = {"video": [], "caption": [], "region": [], "region_text": []}
    names, region_names = [], []
    for batch in make_dataset(source, lengths, loader):
        keep = [i for i, (v, s) in enumerate(zip(batch["video_index"], batch["start"]))
                if rows[(int(v), int(s))] in chosen]
        if not keep:
            continue
        examples = [attach({k: batch[k][i] for k in ("frames", "video_index", "start")})
                    for i in keep]
        out = embed({k: np.stack([e[k] for e in examples]) for k in examples[0]})
        for i, e in zip(keep, examples):
            row = rows[(int(batch["video_index"][i]), int(batch["start"][i]))]
            names.append(texts.captions[row])
            valid = e["region_weights"].reshape(pcfg.regions, -1).sum(-1) > 0
            region_names += [raw[row].regions[k] for k in np.flatnonzero(valid)]
        for key, value in out.items():
            value = np.asarray(value)
            if key.startswith("region"):
                value = np.concatenate([v[e["region_weights"].reshape(pcfg.regions, -1)
                                          .sum(-1) > 0] for v, e in zip(value, examples)])
            found[key].append(value)
    found = {k: np.concatenate(v) for k, v in found.items()}
    return {"clips": len(names), "distinct_captions": len(set(names)),
            **_retrieval(found["video"], found["caption"], names, "video"),
            "regions": len(region_names), "distinct_descriptions": len(set(region_names)),
            **_retrieval(found["region"], found["region_text"], region_names, "region")}


def _retrieval(visual: np.ndarray, text: np.ndarray, names: list[str], what: str) -> dict:
    same = np.asarray([[a == b for b in names] for a in names])
    sims = text @ visual.T                                              # [text, visual]
    return {f"text_to_{what}_top1": _topk(sims, same, 1),
            f"text_to_{what}_top5": _topk(sims, same, 5),
            f"{what}_to_text_top1": _topk(sims.T, same, 1),
            f"{what}_to_text_top5": _topk(sims.T, same, 5),
            f"{what}_chance_top1": float(same.mean())}


def _topk(sims: np.ndarray, same: np.ndarray, k: int) -> float:
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.take_along_axis(same, top, axis=1).any(axis=1).mean())


def sample_captions(bcfg: BackboneConfig, params, cfg: Config, pcfg: PretrainConfig, tokenizer, count: int = 4
                    ) -> list[dict]:
    """Greedy answers to "Describe the clip." on the first held-out clips, beside the truth."""
    loader = _loader(cfg, pcfg, shuffle=False)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    scenes = [text.scene for text in clip_texts(cfg, pcfg.eval_split, loader,
                                                dataclasses.replace(pcfg, crop_every=0))]
    batch = next(iter(make_dataset(source, lengths, dataclasses.replace(loader,
                                                                        batch_size=count))))
    model = Backbone(bcfg)
    visual = model.apply({"params": params}, batch["frames"], method=Backbone.visual_tokens)
    prompt = [tokenizer.bos_token_id, *tokenizer(DESCRIBE)["input_ids"]]
    words = model.apply({"params": params}, jnp.asarray([prompt] * count),
                        method=Backbone.embed_tokens)
    embeds = jnp.concatenate([visual, words], axis=1)
    lengths_ = jnp.full((count,), embeds.shape[1], jnp.int32)
    tokens, _ = generate(params["decoder"], bcfg.decoder, embeds, lengths_, 32,
                         jax.random.key(0))
    index = clip_index(lengths, loader)
    rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}
    out = []
    for i in range(count):
        row = rows[(int(batch["video_index"][i]), int(batch["start"][i]))]
        ids = [int(t) for t in np.asarray(tokens[i])]
        if bcfg.decoder.eos_token_id in ids:
            ids = ids[:ids.index(bcfg.decoder.eos_token_id)]
        out.append({"truth": scenes[row], "generated": tokenizer.decode(ids).strip()})
    return out


# ------------------------------------------------------------------ the job
def _loader(cfg: Config, pcfg: PretrainConfig, shuffle: bool = True) -> LoaderConfig:
    return dataclasses.replace(cfg.loader, clip_len=pcfg.clip_len, clip_stride=pcfg.clip_stride,
                               batch_size=pcfg.batch_size, shuffle=shuffle,
                               num_epochs=0 if shuffle else 1, drop_remainder=shuffle)


def pretrain(cfg: Config, ship: bool = False, report: Report = print) -> Path:
    """Run the whole pretraining job; returns the run folder (with `backbone/` inside)."""
    pcfg = cfg.pretrain
    run_dir = new_run_dir("pretrain", cfg, cfg.runs_dir)
    ensure_prepared(cfg, report)
    annotations = sorted((find_builder_dir(cfg.prepared_dir) / "annotations").glob("*.jsonl"))
    corpus = [t for t in annotation_texts(a for a in annotations if a.stem != pcfg.eval_split)]
    loader = _loader(cfg, pcfg)
    raw = clip_texts(cfg, pcfg.split, loader, pcfg)
    tokenizer = train_tokenizer(corpus + [text for row in raw for text in row[:4] + row[4]],
                                pcfg.vocab_size)
    texts = encode_texts(raw, tokenizer, pcfg)
    report(f"[tvad] tokenizer: {len(tokenizer)} tokens; {len(texts.captions)} training clips, "
           f"{len(set(texts.captions))} distinct captions")
    bcfg = backbone_config(pcfg, len(tokenizer), cfg.prepare.height)
    source, lengths = open_split(cfg.prepared_dir, pcfg.split)
    index = clip_index(lengths, loader)
    data = iter(make_dataset(source, lengths, loader, transform=AttachText(
        texts, index, bcfg.vision.patch_size, bcfg.vision.tubelet)))
    result = train(make_spec(bcfg, pcfg), data=data, run_dir=run_dir,
                   mesh=make_mesh(pcfg.train.mesh))
    params = nn.meta.unbox(jax.device_get(merge_params(result.state.params, result.frozen)))
    metrics = {"retrieval": retrieval(bcfg, params, cfg, pcfg, tokenizer),
               "samples": sample_captions(bcfg, params, cfg, pcfg, tokenizer),
               "train": {k: result.summary.get(k) for k in (
                   "steps", "final_metrics", "steps_per_s", "examples_per_s", "compile_s",
                   "train_wall_s")}}
    (run_dir / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    out = backbone_io.save_backbone(run_dir / "backbone", bcfg, params, tokenizer,
                                    extra={"pretrain_metrics": metrics["retrieval"]})
    report(json.dumps(metrics["retrieval"], indent=2))
    if ship:
        shutil.rmtree(backbone_io.SHIPPED_DIR, ignore_errors=True)
        shutil.copytree(out, backbone_io.SHIPPED_DIR)
        report(f"[tvad] installed as the shipped default: {backbone_io.SHIPPED_DIR}")
    report(f"[tvad] pretrained backbone in {out}")
    return run_dir
