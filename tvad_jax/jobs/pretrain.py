"""Backbone pretraining on the synthetic benchmark (`tvad pretrain`): the shipped default.

Objectives on clips of `pretrain.split` (since backbone v4 a corpus of normal traffic and
the training anomaly types, 1440 videos since v5; v1-v3 read the benchmark's `train` split),
each clip paired with generic text from `tvad_jax.data.captions` and
`tvad_jax.data.object_text` (plain descriptions of what objects look like and do; never the
anomaly annotations, never "normal" / "abnormal"):

* clip-caption contrastive alignment of the vision and text towers: the most visible
  object's description plus a statement about a (class, zone) pair, true and often negated
  ("no car is on the sidewalk"), so that the text tower learns what "no" means (CLIP's
  symmetric InfoNCE with a learnable temperature; identical captions are positives);
* region-text contrastive alignment: the last layer's patch features pooled under each of the
  `regions` most visible objects' boxes (coverage-weighted, per tubelet) against that object's
  description, so that patch features carry class, look, action, speed, direction and zone;
* region motion (`motion_weight`, off by default): a linear head on each region's patch
  features, pooled per tubelet, regresses the object's velocity (pixels per frame, from its
  boxes; Huber loss), so that the tower must encode how objects move, which no text objective
  taught it (speed stayed unreadable); the head is dropped from the saved backbone;
* dense attributes (`dense_weight`, on since backbone v3): a linear classifier per attribute
  on every last-layer patch token predicts the class, action, speed band, direction, pose and
  zone of the regions covering it (class-balanced), so that every patch token carries them;
  the heads are dropped from the saved backbone;
* playback speed (`playback_weight`, off by default; SpeedNet's self-supervised task): the
  tower also reads each clip's first half at its own speed and every second frame of the
  whole clip (twice as fast), and a linear classifier on every last-layer patch token under a
  moving object tells the two apart, so that patch features carry how fast an object moves
  for its kind (a walker at twice the speed moves like a runner), with no label but the
  playback; the head is dropped from the saved backbone;
* captioning / QA language modelling of the decoder: [P_V ; <s> question ; answer </s>] with
  the loss on answer tokens only: scene descriptions, counts, yes/no zone questions and, on
  crop clips (every `crop_every`-th clip, cropped around its main object), VLAVAD's
  single-object questions (pose, behaviour or action, appearance).

The vision tower's stem is `pretrain.stem` (v3: convolutions over each frame and its difference
to the previous one, which let the small tower learn motion that the linear tubelet embedding
of v1 and v2 never encoded). The tokenizer is trained first (byte-level BPE on the benchmark's
text). After training the run reports zero-shot clip<->caption and region<->description
retrieval on held-out clips of `eval_split` and writes the backbone (`backbone/`, Hugging Face
layout) into the run folder. With `init` the job continues from a backbone folder (its
weights and tokenizer) instead of a fresh initialization, and with `insert_blocks` a deeper
tower grown from it (`models.grow`). The shipped default (v9) is the
default recipe followed by such continuations (`SHIPPED_CONTINUATIONS`), which
`pretrain_shipped` (`tvad pretrain --ship`) runs and installs, followed by the backbone's ITAM
for paper 003's detector (`pretrain_itam`, `tvad pretrain --itam`: BLIP-2's Q-Former trained
on the corpus's object crops and their plain descriptions).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.data.clip_texts import (DESCRIBE, AttachText, ClipText, ClipTexts, clip_texts,
                                      encode_caption, encode_texts)
from tvad_jax.data.dialogues import turn_tokens
from tvad_jax.data.files import check_output_dir
from tvad_jax.data.object_text import ATTRIBUTE_PHRASES
from tvad_jax.data.pipeline import (LoaderConfig, clip_index, find_builder_dir, make_dataset,
                                    open_split)
from tvad_jax.data.readers import source_reader
from tvad_jax.jobs.common import Report, ensure_benchmark, ensure_prepared, start_run
from tvad_jax.jobs.config import Config, PretrainConfig
from tvad_jax.jobs.local_objects import split_objects
from tvad_jax.jobs.local_patterns import itam_config, itam_reader, train_itam
from tvad_jax.models import backbone_io
from tvad_jax.models.configs import BackboneConfig, default_backbone
from tvad_jax.models.family import LLAVA, family
from tvad_jax.models.generate import generate
from tvad_jax.models.grow import insert_identity_blocks
from tvad_jax.models.losses import (balanced_region_patch_loss, contrastive_loss,
                                    grouped_choice_loss, lm_loss, unit_rows)
from tvad_jax.models.tokenizer import annotation_texts, train_tokenizer
from tvad_jax.models.tvad import load_frozen_backbone
from tvad_jax.models.vlm import Backbone, init_params
from tvad_jax.train.loop import StageSpec, train
from tvad_jax.train.mesh import make_mesh
from tvad_jax.train.state import merge_params


def backbone_config(pcfg: PretrainConfig, vocab_size: int, image_size: int) -> BackboneConfig:
    """The architecture to pretrain: the shipped default's, or a tiny one for tests."""
    cfg = default_backbone(vocab_size, image_size)
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(
        cfg.vision, stem=pcfg.stem, motion_spans=pcfg.motion_spans))
    if pcfg.model == "default":
        return cfg
    return dataclasses.replace(
        cfg, projector_dim=32, embed_dim=16,
        vision=dataclasses.replace(cfg.vision, width=32, depth=2, heads=2, mlp_dim=64),
        text=dataclasses.replace(cfg.text, width=32, depth=1, heads=2, mlp_dim=64),
        decoder=dataclasses.replace(cfg.decoder, width=32, depth=1, heads=2, kv_heads=2,
                                    mlp_dim=64))


# ------------------------------------------------------------------ objectives
def _forward(module: Backbone, frames, caption_ids, qa_ids, region_ids, region_weights,
             phrase_ids=None):
    """Clip, caption, region, region-text and (with phrase_ids) attribute-phrase embeddings,
    each region's patch features per tubelet and the decoder's QA logits, from one pass of
    each tower. region_ids [B, K, L], region_weights [B, K, T', h, w], phrase_ids [P, L] (the
    attribute phrases) or None."""
    pad = module.cfg.text.pad_token_id
    video, visual = module.encode_video_and_tokens(frames)          # [B, T', E], [B, S, D]
    b, k, length = region_ids.shape
    ids = jnp.concatenate([caption_ids, region_ids.reshape(b * k, length)]
                          + ([] if phrase_ids is None else [phrase_ids]))
    text = module.encode_text(ids, ids != pad).embeds               # [B + B K + P, E]
    patches = video.final[:, :, 1:]                                 # [B, T', N, D_v]
    weights = region_weights.reshape(b, k, *patches.shape[1:3])     # [B, K, T', N]
    pooled = jnp.einsum("btnd,bktn->bkd", patches, weights) / jnp.maximum(
        weights.sum(axis=(2, 3))[..., None], 1e-6)
    region = module.vision.visual_projection(pooled)                # [B, K, E]
    per_tubelet = jnp.einsum("btnd,bktn->bktd", patches, weights) / jnp.maximum(
        weights.sum(axis=3)[..., None], 1e-6)                       # [B, K, T', D_v]
    embeds = jnp.concatenate([visual, module.embed_tokens(qa_ids)], axis=1)
    positions = jnp.arange(embeds.shape[1])[None]
    logits, _ = module.decode(embeds, positions)
    return {"video": video.embeds.mean(axis=1), "caption": text[:b], "region": region,
            "region_text": text[b:b + b * k].reshape(b, k, -1), "phrases": text[b + b * k:],
            "region_tubelets": per_tubelet, "patches": patches, "logit_scale": module.logit_scale,
            "qa_logits": logits[:, visual.shape[1]:]}


MOTION_HEAD = "motion_head"     # the pretraining-only velocity head beside the backbone params
DENSE_HEADS = "dense_heads"     # the pretraining-only per-patch attribute classifiers
PLAYBACK_HEAD = "playback_head"  # the pretraining-only per-patch playback-speed classifier
PLAYBACK_MIN_SPEED = 0.2        # px per frame: slower regions (a standing person) look the same
                                # at either speed and get no playback label


def motion_loss(head: dict, features: jax.Array, motion: jax.Array, valid: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """(Huber loss, R^2) of the linear velocity head on per-tubelet region features.

    features [B, K, T', D_v], motion [B, K, T', 2] target velocities, valid [B, K, T'] (the
    object is seen and its motion defined there). R^2 is against the batch's mean velocity."""
    predicted = features @ head["kernel"] + head["bias"]            # [B, K, T', 2]
    weight = valid.astype(jnp.float32)[..., None]
    count = jnp.maximum(weight.sum() * 2, 1.0)
    loss = (optax.huber_loss(predicted, motion) * weight).sum() / count
    mean = (motion * weight).sum(axis=(0, 1, 2)) / jnp.maximum(weight.sum(), 1.0)
    total = (((motion - mean) ** 2) * weight).sum()
    r2 = 1.0 - (((predicted - motion) ** 2) * weight).sum() / jnp.maximum(total, 1e-9)
    return loss, r2


def dense_attribute_loss(heads: dict, patches: jax.Array, region_weights: jax.Array,
                         region_attributes: jax.Array, attribute_weights=None
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, balanced top-1 per attribute) of the per-patch attribute classifiers; the loss is
    the mean over the attributes of ATTRIBUTE_PHRASES of each one's loss times its weight.

    patches [B, T', N, D_v] last-layer patch tokens, region_weights [B, K, T', h, w] each
    region's coverage of every patch, region_attributes [B, K, A] phrase indices (-1: none),
    attribute_weights [A] in ATTRIBUTE_PHRASES' order (None: all 1)."""
    b, k = region_weights.shape[:2]
    coverage = region_weights.reshape(b, k, *patches.shape[1:3])       # [B, K, T', N]
    losses, hits = [], {}
    for a, name in enumerate(ATTRIBUTE_PHRASES):
        logits = patches @ heads[name]["kernel"] + heads[name]["bias"]   # [B, T', N, C_a]
        loss, hits[name] = balanced_region_patch_loss(logits, coverage,
                                                      region_attributes[..., a])
        losses.append(loss)
    weights = jnp.ones(len(losses)) if attribute_weights is None else jnp.asarray(
        attribute_weights, jnp.float32)
    return jnp.mean(jnp.stack(losses) * weights), hits


def _tower_patches(module: Backbone, frames: jax.Array) -> jax.Array:
    """Last-layer patch tokens [B, T', N, D_v] of clips [B, F, H, W, 3]."""
    return module.encode_video(frames).final[:, :, 1:]


def check_playback(pcfg: PretrainConfig, tubelet: int) -> None:
    """The playback task halves each clip into whole tubelets: refuse clips it cannot."""
    if pcfg.playback_weight and pcfg.clip_len % (2 * tubelet):
        raise ConfigError(f"pretrain.playback_weight halves each {pcfg.clip_len}-frame clip "
                          f"into whole {tubelet}-frame tubelets: pretrain.clip_len must "
                          f"divide by {2 * tubelet}")


def playback_views(frames: jax.Array, region_weights: jax.Array, region_motion: jax.Array,
                   region_motion_valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The playback-speed task's clips, region coverage and labels.

    frames [B, F, H, W, 3], region_weights [B, K, T', h, w] (T' = F / tubelet), region_motion
    [B, K, T', 2] px per frame, region_motion_valid [B, K, T'] -> frames [2B, F/2, H, W, 3]
    (rows 0..B-1 the first F/2 frames at their own speed, rows B..2B-1 every second frame:
    twice as fast), coverage [2B, K, T'/2, N] (the fast view's tubelet j holds frames of the
    tubelets 2j and 2j+1, whose coverage it averages) and labels [2B, K] (0 at own speed, 1
    twice as fast; -1 for regions absent or slower than PLAYBACK_MIN_SPEED on average).
    F must divide by 2 x tubelet (`check_playback`)."""
    b, f = frames.shape[:2]
    k, t = region_weights.shape[1:3]
    coverage = region_weights.reshape(b, k, t, -1)                          # [B, K, T', N]
    own, fast = coverage[:, :, :t // 2], coverage.reshape(b, k, t // 2, 2, -1).mean(axis=3)
    valid = region_motion_valid.astype(jnp.float32)
    speed = (jnp.linalg.norm(region_motion, axis=-1) * valid).sum(-1) / jnp.maximum(
        valid.sum(-1), 1.0)                                                 # [B, K]
    moving = (speed >= PLAYBACK_MIN_SPEED) & (coverage.sum(axis=(2, 3)) > 0)
    labels = jnp.concatenate([jnp.where(moving, 0, -1), jnp.where(moving, 1, -1)])
    views = jnp.concatenate([frames[:, :f // 2], frames[:, ::2]])
    return views, jnp.concatenate([own, fast]), labels


def attribute_phrase_ids(tokenizer, length: int) -> np.ndarray:
    """Token ids [P, length] of every attribute phrase, group after group."""
    return np.stack([encode_caption(tokenizer, phrase, length)
                     for phrases in ATTRIBUTE_PHRASES.values() for phrase in phrases])


def make_spec(bcfg: BackboneConfig, pcfg: PretrainConfig, phrase_ids: np.ndarray,
              start=None) -> StageSpec:
    """The pretraining stage: every backbone param trains. phrase_ids: `attribute_phrase_ids`
    (left out of the graph when `attribute_weight` is 0, so that the recipe without it trains
    exactly as before it existed); start: backbone params to begin from (None: initialize)."""
    model = Backbone(bcfg)
    group_sizes = tuple(len(p) for p in ATTRIBUTE_PHRASES.values())
    phrase_ids = phrase_ids if pcfg.attribute_weight else None

    def init_fn(rng):
        frames = jnp.zeros((1, pcfg.clip_len, bcfg.vision.image_size, bcfg.vision.image_size, 3))
        params = model.init(rng, frames, jnp.zeros((1, 2), jnp.int32))["params"]
        if start is not None:
            params = jax.tree.map(_with_value, params, start, is_leaf=_is_boxed)
        if pcfg.motion_weight:
            params[MOTION_HEAD] = {"kernel": jnp.zeros((bcfg.vision.width, 2)),
                                   "bias": jnp.zeros(2)}
        if pcfg.playback_weight:
            params[PLAYBACK_HEAD] = {"kernel": jnp.zeros((bcfg.vision.width, 2)),
                                     "bias": jnp.zeros(2)}
        if pcfg.dense_weight:
            params[DENSE_HEADS] = {
                name: {"kernel": jnp.zeros((bcfg.vision.width, len(phrases))),
                       "bias": jnp.zeros(len(phrases))}
                for name, phrases in ATTRIBUTE_PHRASES.items()}
        return params

    def loss_fn(trainable, frozen, batch, rng):
        params = merge_params(trainable, frozen)
        head = params.pop(MOTION_HEAD, None)
        dense_heads = params.pop(DENSE_HEADS, None)
        playback_head = params.pop(PLAYBACK_HEAD, None)
        out = model.apply({"params": params}, batch["frames"], batch["caption_ids"],
                          batch["qa_ids"], batch["region_ids"], batch["region_weights"],
                          phrase_ids, method=_forward)
        contrastive, accuracy = contrastive_loss(out["video"], out["caption"],
                                                 out["logit_scale"], batch["caption_ids"])
        b, k, length = batch["region_ids"].shape
        valid = batch["region_weights"].reshape(b * k, -1).sum(-1) > 0
        region, region_accuracy = contrastive_loss(
            out["region"].reshape(b * k, -1), out["region_text"].reshape(b * k, -1),
            out["logit_scale"], batch["region_ids"].reshape(b * k, length), valid)
        language = lm_loss(out["qa_logits"], batch["qa_targets"])
        loss = contrastive + pcfg.region_weight * region + pcfg.lm_weight * language
        metrics = {"contrastive": contrastive, "region": region, "lm": language,
                   "batch_t2v_top1": accuracy, "batch_t2r_top1": region_accuracy}
        if phrase_ids is not None:
            attribute, metrics["attribute_top1"] = grouped_choice_loss(
                out["region"].reshape(b * k, -1), out["phrases"], out["logit_scale"],
                batch["region_attributes"].reshape(b * k, -1), group_sizes, valid)
            loss += pcfg.attribute_weight * attribute
            metrics["attribute"] = attribute
        if head is not None:
            motion, metrics["motion_r2"] = motion_loss(
                head, out["region_tubelets"], batch["region_motion"], batch["region_motion_valid"])
            loss += pcfg.motion_weight * motion
            metrics["motion"] = motion
        if dense_heads is not None:
            dense, hits = dense_attribute_loss(
                dense_heads, out["patches"], batch["region_weights"], batch["region_attributes"],
                pcfg.dense_attribute_weights or None)
            loss += pcfg.dense_weight * dense
            metrics["dense"] = dense
            metrics["dense_balanced_top1"] = jnp.mean(jnp.stack(list(hits.values())))
            metrics.update({f"dense_top1_{name}": hit for name, hit in hits.items()})
        if playback_head is not None:
            views, coverage, labels = playback_views(
                batch["frames"], batch["region_weights"], batch["region_motion"],
                batch["region_motion_valid"])
            patches = model.apply({"params": params}, views, method=_tower_patches)
            playback, metrics["playback_top1"] = balanced_region_patch_loss(
                patches @ playback_head["kernel"] + playback_head["bias"], coverage, labels)
            loss += pcfg.playback_weight * playback
            metrics["playback"] = playback
        return loss, metrics

    return StageSpec(pcfg.train, init_fn, loss_fn)


def _is_boxed(leaf) -> bool:
    return isinstance(leaf, nn.meta.AxisMetadata)


def _with_value(initialized, value):
    """`value` in place of a freshly initialized param, keeping its logical axis names."""
    value = jnp.asarray(value, jnp.float32)
    return initialized.replace_boxed(value) if _is_boxed(initialized) else value


# ------------------------------------------------------------------ evaluation
def retrieval(bcfg: BackboneConfig, params, cfg: Config, pcfg: PretrainConfig, tokenizer) -> dict:
    """Zero-shot retrieval among `eval_clips` held-out clips (no crops): clip <-> caption, and
    region <-> description (patch features pooled under each object's boxes, every object of
    those clips against every description).

    A retrieved item is correct when its text equals the query's (several clips or objects can
    share one); `*_chance_top1` is the expected accuracy of a random ranking."""
    pcfg = dataclasses.replace(pcfg, crop_every=0)
    loader = _loader(cfg, pcfg, shuffle=False)
    raw = _clip_texts(cfg, pcfg, pcfg.eval_split, loader)
    texts = _encode(raw, tokenizer, pcfg)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    index = clip_index(lengths, loader)
    stride = max(len(index) // pcfg.eval_clips, 1)
    chosen = set(range(0, len(index), stride)[:pcfg.eval_clips])
    model = Backbone(bcfg)
    attach = AttachText(texts, index, bcfg.vision.patch_size, bcfg.vision.tubelet)
    phrase_ids = attribute_phrase_ids(tokenizer, pcfg.caption_len)

    @jax.jit
    def embed(batch):
        out = model.apply({"params": params}, batch["frames"], batch["caption_ids"],
                          batch["qa_ids"], batch["region_ids"], batch["region_weights"],
                          phrase_ids, method=_forward)
        return {k: unit_rows(out[k]) for k in ("video", "caption", "region", "region_text",
                                               "phrases")}

    rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}
    found = {"video": [], "caption": [], "region": [], "region_text": []}
    names, region_names, attributes, phrases = [], [], [], None
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
            attributes.append(e["region_attributes"][valid])
        phrases = np.asarray(out.pop("phrases"))
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
            **_retrieval(found["region"], found["region_text"], region_names, "region"),
            "region_attributes": _attribute_choice(found["region"], phrases,
                                                   np.concatenate(attributes))}


def _attribute_choice(regions: np.ndarray, phrases: np.ndarray, labels: np.ndarray) -> dict:
    """Zero-shot attribute reading of unit region embeddings [R, E] against the unit phrase
    embeddings [P, E]: per attribute, {accuracy, balanced_accuracy, majority} over the regions
    that have one (labels [R, A], -1: none)."""
    out, start = {}, 0
    for g, (name, group) in enumerate(ATTRIBUTE_PHRASES.items()):
        sims = regions @ phrases[start:start + len(group)].T
        start += len(group)
        label = labels[:, g]
        keep = label >= 0
        if not keep.any():
            continue
        guess, label = sims[keep].argmax(1), label[keep]
        present = np.unique(label)
        out[name] = {"accuracy": float((guess == label).mean()),
                     "balanced_accuracy": float(np.mean([(guess[label == c] == c).mean()
                                                         for c in present])),
                     "majority": float(np.bincount(label).max() / len(label))}
    return out


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


def sample_captions(bcfg: BackboneConfig, params, cfg: Config, pcfg: PretrainConfig,
                    tokenizer, count: int = 4) -> list[dict]:
    """Greedy answers to "Describe the clip." on the first held-out clips, beside the truth."""
    loader = _loader(cfg, pcfg, shuffle=False)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    scenes = [text.scene for text in _clip_texts(cfg, pcfg, pcfg.eval_split, loader,
                                                 crops=False)]
    batch = next(iter(make_dataset(source, lengths, dataclasses.replace(loader,
                                                                        batch_size=count))))
    model = Backbone(bcfg)
    visual = model.apply({"params": params}, batch["frames"], method=Backbone.visual_tokens)
    prompt, _ = turn_tokens(tokenizer, DESCRIBE, None)
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
def _clip_texts(cfg: Config, pcfg: PretrainConfig, split: str, loader: LoaderConfig,
                crops: bool = True) -> list[ClipText]:
    reader = source_reader(cfg)
    return clip_texts(cfg.prepared_dir, reader, split, loader, pcfg.regions,
                      pcfg.crop_every if crops else 0)


def _encode(texts: list[ClipText], tokenizer, pcfg: PretrainConfig) -> ClipTexts:
    return encode_texts(texts, tokenizer, pcfg.caption_len, pcfg.qa_len, pcfg.regions)


def _loader(cfg: Config, pcfg: PretrainConfig, shuffle: bool = True) -> LoaderConfig:
    return dataclasses.replace(cfg.loader, clip_len=pcfg.clip_len, clip_stride=pcfg.clip_stride,
                               frame_step=pcfg.frame_step, batch_size=pcfg.batch_size,
                               shuffle=shuffle, num_epochs=0 if shuffle else 1,
                               drop_remainder=shuffle)


def corpus_data(cfg: Config) -> Config:
    """The config whose data pretraining reads: with `pretrain.split` "pretrain", the
    benchmark plus `corpus_videos` corpus videos in a folder of its own, where only the corpus
    and `eval_split` are prepared; otherwise `cfg` itself."""
    pcfg = cfg.pretrain
    if pcfg.split != "pretrain":
        return cfg
    synth = dataclasses.replace(cfg.synth, out_dir=f"{cfg.synth.out_dir}-pretrain",
                                videos_pretrain=pcfg.corpus_videos)
    prepare = dataclasses.replace(cfg.prepare, splits=("pretrain", pcfg.eval_split))
    return dataclasses.replace(cfg, synth=synth, prepare=prepare)


# The shipped backbone (v9) is five runs: the config's own recipe (v5's for the default), then
# these continuations, each from the previous run's backbone: 600 steps on a 480-video corpus
# at half the learning rate, the dense per-patch attributes weighted ever more (x4 .. x32:
# v6 .. v9; each step raised every heatmap number of the demo: docs/studies/backbones.md),
# a new clip order each time.
_CONTINUE = ("pretrain.corpus_videos=480", "pretrain.train.loop.steps=600",
             "pretrain.train.optim.learning_rate=5e-4")
SHIPPED_CONTINUATIONS: tuple[tuple[str, ...], ...] = (
    ("pretrain.dense_weight=4", *_CONTINUE),
    ("pretrain.dense_weight=8", *_CONTINUE, "pretrain.train.loop.seed=1"),
    ("pretrain.dense_weight=16", *_CONTINUE, "pretrain.train.loop.seed=2"),
    ("pretrain.dense_weight=32", *_CONTINUE, "pretrain.train.loop.seed=3"),
)


def continuation_config(cfg: Config, start: str | Path, continuation: tuple[str, ...]) -> Config:
    """One continuation of the shipped recipe: `cfg` with `continuation`, starting from the
    backbone folder `start`."""
    return config_lib.apply_overrides(cfg, [*continuation, f"pretrain.init={start}"])


# The shipped backbone's ITAM (`tvad pretrain --itam`, run last by `--ship`): every 4th
# frame's object crops of the 480-video corpus (52,330 crops), 1200 steps of 64.
SHIPPED_ITAM: tuple[str, ...] = ("pretrain.corpus_videos=480", "local.crop_stride=4",
                                 "local.itam_train.loop.steps=1200")


def pretrain_shipped(cfg: Config, report: Report = print, run_dir: str | Path | None = None,
                     continuations: tuple[tuple[str, ...], ...] = SHIPPED_CONTINUATIONS,
                     itam: tuple[str, ...] = SHIPPED_ITAM) -> Path:
    """`tvad pretrain --ship`: `cfg`'s run into `<run_dir>/base`, then each continuation into
    `<run_dir>/continued-<i>` from the previous backbone (every run resumed from its
    checkpoint when rerun), the last one installed as the package's default backbone, then
    its ITAM (`pretrain_itam` with the overrides `itam`, into `<run_dir>/itam`) installed
    beside it; returns the run folder."""
    check_output_dir(run_dir or cfg.runs_dir)
    for continuation in continuations:   # bad overrides fail before any work
        continuation_config(cfg, "base", continuation)
    itam_cfg = config_lib.apply_overrides(
        cfg, [*itam, f"local.backbone={backbone_io.SHIPPED_DIR}"])
    run_dir = start_run("pretrain-ship", cfg, run_dir)
    out = pretrain(cfg, report, run_dir / "base") / "backbone"
    for i, continuation in enumerate(continuations, 1):
        out = pretrain(continuation_config(cfg, out, continuation), report,
                       run_dir / f"continued-{i}") / "backbone"
    shutil.rmtree(backbone_io.SHIPPED_DIR, ignore_errors=True)
    shutil.copytree(out, backbone_io.SHIPPED_DIR)
    report(f"[tvad] installed as the shipped default: {backbone_io.SHIPPED_DIR}")
    pretrain_itam(itam_cfg, report, run_dir / "itam", install=True)
    return run_dir


def pretrain_itam(cfg: Config, report: Report = print, run_dir: str | Path | None = None,
                  install: bool = False) -> Path:
    """`tvad pretrain --itam`: an ITAM (paper 003's Q-Former, `models.itam`) for the backbone
    `local.backbone` (else `tvad.backbone`), trained with BLIP-2's three losses on the object
    crops of the pretraining corpus (`pretrain.split`, read as `pretrain` reads it; crops
    every `local.crop_stride`-th frame) and their plain descriptions: our stand-in for the
    Q-Former BLIP-2 pretrained on its own data, which paper 003 keeps frozen (its default
    "D. 1"). Writes the engine's run into `<run>/itam` and the ITAM into `<run>/pretrained/
    itam`; with `install`, also into the backbone's folder, where `local.itam=backbone` finds
    it. Returns the run folder."""
    corpus = corpus_data(cfg)
    job = cfg.local
    check_output_dir(run_dir or cfg.runs_dir)
    backbone = load_frozen_backbone(job.backbone or cfg.tvad.backbone)
    ensure_benchmark(corpus, report)
    run_dir = start_run("pretrain-itam", cfg, run_dir)
    split = cfg.pretrain.split
    train_itam(job, backbone, split_objects(corpus, backbone, split, report), split, run_dir,
               report)
    params = itam_reader(dataclasses.replace(job, itam="train"), backbone, run_dir).params
    icfg = itam_config(job, backbone)
    out = backbone_io.save_itam(run_dir / "pretrained", icfg, params, job.tokens)
    report(f"[tvad] pretrained ITAM in {out}")
    if install:
        report(f"[tvad] installed beside the backbone: "
               f"{backbone_io.save_itam(backbone.path, icfg, params, job.tokens)}")
    return run_dir


def pretrain(cfg: Config, report: Report = print, run_dir: str | Path | None = None) -> Path:
    """Run the whole pretraining job into `run_dir` (resumed from its checkpoint) or a new
    run folder; returns the run folder (with `backbone/` inside)."""
    cfg = corpus_data(cfg)
    pcfg = cfg.pretrain
    check_output_dir(run_dir or cfg.runs_dir)
    starting = (_starting_backbone(pcfg.init, cfg.prepare.height, pcfg.insert_blocks)
                if pcfg.init else None)
    check_playback(pcfg, (starting[0] if starting else
                          backbone_config(pcfg, 1, cfg.prepare.height)).vision.tubelet)
    ensure_prepared(cfg, report)
    run_dir = start_run("pretrain", cfg, run_dir)
    annotations = sorted((find_builder_dir(cfg.prepared_dir) / "annotations").glob("*.jsonl"))
    corpus = [t for t in annotation_texts(a for a in annotations if a.stem != pcfg.eval_split)]
    loader = _loader(cfg, pcfg)
    raw = _clip_texts(cfg, pcfg, pcfg.split, loader)
    if starting:
        bcfg, start, tokenizer = starting
    else:
        tokenizer = train_tokenizer(corpus + [text for row in raw for text in row[:4] + row[4]],
                                    pcfg.vocab_size)
        bcfg, start = backbone_config(pcfg, len(tokenizer), cfg.prepare.height), None
    texts = _encode(raw, tokenizer, pcfg)
    report(f"[tvad] tokenizer: {len(tokenizer)} tokens; {len(texts.captions)} training clips, "
           f"{len(set(texts.captions))} distinct captions")
    source, lengths = open_split(cfg.prepared_dir, pcfg.split)
    index = clip_index(lengths, loader)
    data = iter(make_dataset(source, lengths, loader, transform=AttachText(
        texts, index, bcfg.vision.patch_size, bcfg.vision.tubelet)))
    spec = make_spec(bcfg, pcfg, attribute_phrase_ids(tokenizer, pcfg.caption_len), start)
    result = train(spec, data=data, run_dir=run_dir,
                   mesh=make_mesh(pcfg.train.mesh))
    params = nn.meta.unbox(jax.device_get(merge_params(result.state.params, result.frozen)))
    for head in (MOTION_HEAD, DENSE_HEADS, PLAYBACK_HEAD):
        params.pop(head, None)
    metrics = {"retrieval": retrieval(bcfg, params, cfg, pcfg, tokenizer),
               "samples": sample_captions(bcfg, params, cfg, pcfg, tokenizer),
               "train": {k: result.summary.get(k) for k in (
                   "steps", "final_metrics", "steps_per_s", "examples_per_s", "compile_s",
                   "train_wall_s")}}
    (run_dir / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    out = backbone_io.save_backbone(run_dir / "backbone", bcfg, params, tokenizer,
                                    extra={"pretrain_metrics": metrics["retrieval"]})
    report(json.dumps(metrics["retrieval"], indent=2))
    report(f"[tvad] pretrained backbone in {out}")
    return run_dir


def _starting_backbone(directory: str, image_size: int, insert_blocks: tuple[int, ...] = ()):
    """(config, params, tokenizer) of the backbone folder pretraining continues from, its
    tower deepened by identity blocks after the layers `insert_blocks`."""
    bcfg, params, tokenizer = backbone_io.load_backbone(directory)
    if family(bcfg) is not LLAVA or bcfg.vision.image_size != image_size:
        raise ConfigError(f"pretrain.init={directory}: continuing needs a ViT backbone for "
                          f"{image_size}-pixel frames (prepare.height); this one is "
                          f"{family(bcfg).name} at {getattr(bcfg.vision, 'image_size', '?')}")
    if insert_blocks:
        try:
            bcfg, params = insert_identity_blocks(bcfg, params, insert_blocks)
        except ValueError as err:
            raise ConfigError(f"pretrain.insert_blocks with init={directory}: {err}") from None
    return bcfg, params, tokenizer


def random_backbone(like: str | Path, out: str | Path, seed: int = 0) -> Path:
    """A backbone folder with the architecture and tokenizers of `like` and freshly
    initialized weights (the "no pretraining" ablation); a ViT backbone only."""
    source = load_frozen_backbone(like)
    if family(source.cfg) is not LLAVA:
        raise ConfigError(f"{like}: a random initialization needs a ViT backbone, this one is "
                          f"{family(source.cfg).name}")
    params = init_params(source.cfg, jax.random.key(seed))
    return backbone_io.save_backbone(out, source.cfg, params, source.tokenizer,
                                     text_tokenizer=source.text_tokenizer)
