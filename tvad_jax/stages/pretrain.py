"""Backbone pretraining on the synthetic benchmark (`tvad pretrain`): the shipped default.

Two objectives on clips of the prepared `train` split, each clip paired with generic text from
`tvad_jax.data.captions` (never the anomaly annotations):

* contrastive clip-caption alignment of the vision and text towers on a caption of the clip's
  most visible target (CLIP's symmetric InfoNCE with a learnable temperature; clips whose
  captions are identical count as positives of each other);
* captioning / QA language modelling of the decoder: [P_V ; <s> question ; answer </s>] with the
  loss on answer tokens only, so the decoder can talk about the scene before T-VAD's stage 2.

The tokenizer is trained first (byte-level BPE on the benchmark's text). After training the run
reports zero-shot clip<->caption retrieval on held-out clips of `eval_split` and writes the
backbone (`backbone/`, Hugging Face layout) into the run folder; `ship=True` also installs it
as the package's default.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.captions import clip_caption, clip_questions, clip_timelines
from tvad_jax.data.pipeline import (LoaderConfig, clip_index, find_builder_dir, make_dataset,
                                    open_split, split_names)
from tvad_jax.data.prepare import prepare
from tvad_jax.data.readers import make_reader
from tvad_jax.data.synthetic.generate import is_complete, synthesize
from tvad_jax.models import backbone_io
from tvad_jax.models.configs import BackboneConfig, default_backbone
from tvad_jax.models.generate import generate
from tvad_jax.models.tokenizer import annotation_texts, train_tokenizer
from tvad_jax.models.vlm import Backbone
from tvad_jax.runs import new_run_dir, progress
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import TrainConfig, TrainLoopConfig, train
from tvad_jax.train.mesh import make_mesh
from tvad_jax.train.optim import OptimConfig
from tvad_jax.train.state import merge_params

DESCRIBE = "Describe the clip."


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """`tvad pretrain`: data, objectives and the engine settings.

    Attributes:
      split / eval_split: prepared splits to train on and to measure retrieval on.
      clip_len, clip_stride: frames per clip and between clip starts.
      batch_size: global batch (clips).
      vocab_size: BPE vocabulary of the tokenizer trained first.
      caption_len / qa_len: padded token lengths of captions and of question + answer.
      lm_weight: weight of the language-modelling loss beside the contrastive one.
      eval_clips: held-out clips for retrieval.
      model: "default" (the shipped architecture) or "tiny" (tests).
    """

    train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=300, sync_every=25, log_every=5),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.05,
                          weight_decay=0.05, clip_norm=1.0),
        checkpoint=CheckpointConfig(every_steps=100, keep_last=1, keep_best=0))
    split: str = "train"
    eval_split: str = "test"
    clip_len: int = 8
    clip_stride: int = 4
    batch_size: int = 16
    vocab_size: int = 1024
    caption_len: int = 32
    qa_len: int = 40
    lm_weight: float = 1.0
    eval_clips: int = 128
    model: Literal["default", "tiny"] = "default"


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
    """Token arrays aligned with a split's clip index (row r = clip r)."""

    captions: list[str]
    caption_ids: np.ndarray      # [C, Lc] int32, <s> caption </s> <pad>...
    qa_ids: np.ndarray           # [C, Lq] int32, <s> question answer </s> <pad>...
    qa_targets: np.ndarray       # [C, Lq] int32, next token where it is an answer token, else -1


class ClipText(NamedTuple):
    caption: str     # the most visible target (the contrastive caption)
    scene: str       # up to three targets (the answer to "Describe the clip.")
    question: str    # this clip's QA pair; pairs rotate over clips
    answer: str


def clip_texts(cfg, split: str, loader: LoaderConfig) -> list[ClipText]:
    """The texts of every clip of a split, in clip-index order."""
    _, lengths = open_split(cfg.prepared_dir, split)
    names = split_names(cfg.prepared_dir, split)
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    sidecars, out = {}, []
    span = (loader.clip_len - 1) * loader.frame_step + 1
    for row, (video, start) in enumerate(clip_index(lengths, loader)):
        name = names[video]
        sidecar = sidecars.setdefault(name, reader.read_sidecar(name))
        timelines = clip_timelines(sidecar, int(start), span)
        width, height = sidecar["width"], sidecar["height"]
        scene = clip_caption(timelines, width, height)
        pairs = [(DESCRIBE, scene[:1].upper() + scene[1:] + ".")] + clip_questions(timelines)
        out.append(ClipText(clip_caption(timelines, width, height, max_targets=1), scene,
                            *pairs[row % len(pairs)]))
    return out


def encode_texts(texts: list[ClipText], tokenizer, pcfg: PretrainConfig) -> ClipTexts:
    """Token arrays of `clip_texts` output."""
    caption_ids, qa_ids, qa_targets = [], [], []
    for caption, _, question, answer in texts:
        caption_ids.append(_pad([tokenizer.bos_token_id, *tokenizer(caption)["input_ids"]],
                                pcfg.caption_len, tokenizer, end=tokenizer.eos_token_id))
        ids, targets = qa_sequence(tokenizer, question, answer, pcfg.qa_len)
        qa_ids.append(ids)
        qa_targets.append(targets)
    return ClipTexts([t.caption for t in texts], np.asarray(caption_ids, np.int32),
                     np.asarray(qa_ids, np.int32), np.asarray(qa_targets, np.int32))


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
    """grain transform: frames + this clip's text arrays (other keys dropped)."""

    def __init__(self, texts: ClipTexts, index: np.ndarray):
        self.texts = texts
        self.rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}

    def __call__(self, example: dict) -> dict:
        row = self.rows[(int(example["video_index"]), int(example["start"]))]
        return {"frames": example["frames"], "caption_ids": self.texts.caption_ids[row],
                "qa_ids": self.texts.qa_ids[row], "qa_targets": self.texts.qa_targets[row]}


# ------------------------------------------------------------------ objectives
def _forward(module: Backbone, frames, caption_ids, qa_ids):
    """Video/text embeddings and the decoder's logits over the QA tokens."""
    video, visual = module.encode_video_and_tokens(frames)          # [B, T', E], [B, S, D]
    text = module.encode_text(caption_ids, caption_ids != module.cfg.text.pad_token_id)
    embeds = jnp.concatenate([visual, module.embed_tokens(qa_ids)], axis=1)
    positions = jnp.arange(embeds.shape[1])[None]
    logits, _ = module.decode(embeds, positions)
    return video.embeds.mean(axis=1), text.embeds, module.logit_scale, \
        logits[:, visual.shape[1]:]


def contrastive_loss(video: jax.Array, text: jax.Array, logit_scale: jax.Array,
                     caption_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE over the batch; rows with identical captions are all positives.
    Returns (loss, top-1 text->video accuracy)."""
    video = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(logit_scale, np.log(100.0))) * video @ text.T   # [B, B]
    same = jnp.all(caption_ids[:, None] == caption_ids[None], axis=-1).astype(jnp.float32)
    targets = same / same.sum(-1, keepdims=True)
    loss_v = -(targets * jax.nn.log_softmax(logits, axis=1)).sum(-1).mean()
    loss_t = -(targets * jax.nn.log_softmax(logits.T, axis=1)).sum(-1).mean()
    hit = same[jnp.arange(len(same)), jnp.argmax(logits.T, axis=1)]
    return (loss_v + loss_t) / 2, hit.mean()


def lm_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy over answer tokens (targets >= 0)."""
    mask = targets >= 0
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum() / jnp.maximum(mask.sum(), 1)


def make_fns(bcfg, pcfg: PretrainConfig):
    """(init_fn, loss_fn) for the engine."""
    model = Backbone(bcfg)

    def init_fn(rng):
        frames = jnp.zeros((1, pcfg.clip_len, bcfg.vision.image_size, bcfg.vision.image_size, 3))
        return model.init(rng, frames, jnp.zeros((1, 2), jnp.int32))["params"]

    def loss_fn(trainable, frozen, batch, rng):
        params = merge_params(trainable, frozen)
        video, text, scale, logits = model.apply({"params": params}, batch["frames"],
                                                 batch["caption_ids"], batch["qa_ids"],
                                                 method=_forward)
        contrastive, accuracy = contrastive_loss(video, text, scale, batch["caption_ids"])
        language = lm_loss(logits, batch["qa_targets"])
        return contrastive + pcfg.lm_weight * language, {
            "contrastive": contrastive, "lm": language, "batch_t2v_top1": accuracy}

    return init_fn, loss_fn


# ------------------------------------------------------------------ evaluation
def retrieval(bcfg, params, cfg, pcfg: PretrainConfig, tokenizer) -> dict:
    """Zero-shot clip<->caption retrieval among `eval_clips` held-out clips.

    A retrieved item is correct when its caption equals the query's (several clips can share
    a caption); `chance_top1` is the expected accuracy of a random ranking."""
    loader = _loader(cfg, pcfg, shuffle=False)
    texts = encode_texts(clip_texts(cfg, pcfg.eval_split, loader), tokenizer, pcfg)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    index = clip_index(lengths, loader)
    stride = max(len(index) // pcfg.eval_clips, 1)
    chosen = set(range(0, len(index), stride)[:pcfg.eval_clips])
    model = Backbone(bcfg)

    @jax.jit
    def embed(frames, caption_ids):
        video = model.apply({"params": params}, frames, method=Backbone.encode_video)
        text = model.apply({"params": params}, caption_ids,
                           caption_ids != bcfg.text.pad_token_id, method=Backbone.encode_text)
        v, t = video.embeds.mean(1), text.embeds
        return (v / jnp.linalg.norm(v, axis=-1, keepdims=True),
                t / jnp.linalg.norm(t, axis=-1, keepdims=True))

    rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}
    videos, captions, names = [], [], []
    for batch in make_dataset(source, lengths, loader):
        keep = [i for i, (v, s) in enumerate(zip(batch["video_index"], batch["start"]))
                if rows[(int(v), int(s))] in chosen]
        if not keep:
            continue
        picked = [rows[(int(batch["video_index"][i]), int(batch["start"][i]))] for i in keep]
        v, t = embed(batch["frames"][keep], texts.caption_ids[picked])
        videos.append(np.asarray(v))
        captions.append(np.asarray(t))
        names += [texts.captions[r] for r in picked]
    v, t = np.concatenate(videos), np.concatenate(captions)
    same = np.asarray([[a == b for b in names] for a in names])
    sims = t @ v.T                                                      # [text, video]
    return {
        "clips": len(names), "distinct_captions": len(set(names)),
        "text_to_video_top1": _topk(sims, same, 1), "text_to_video_top5": _topk(sims, same, 5),
        "video_to_text_top1": _topk(sims.T, same, 1), "video_to_text_top5": _topk(sims.T, same, 5),
        "chance_top1": float(same.mean()),
    }


def _topk(sims: np.ndarray, same: np.ndarray, k: int) -> float:
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.take_along_axis(same, top, axis=1).any(axis=1).mean())


def sample_captions(bcfg, params, cfg, pcfg: PretrainConfig, tokenizer, count: int = 4
                    ) -> list[dict]:
    """Greedy answers to "Describe the clip." on the first held-out clips, beside the truth."""
    loader = _loader(cfg, pcfg, shuffle=False)
    source, lengths = open_split(cfg.prepared_dir, pcfg.eval_split)
    scenes = [text.scene for text in clip_texts(cfg, pcfg.eval_split, loader)]
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
def _loader(cfg, pcfg: PretrainConfig, shuffle: bool = True) -> LoaderConfig:
    return dataclasses.replace(cfg.loader, clip_len=pcfg.clip_len, clip_stride=pcfg.clip_stride,
                               batch_size=pcfg.batch_size, shuffle=shuffle,
                               num_epochs=0 if shuffle else 1, drop_remainder=shuffle)


def pretrain(cfg, ship: bool = False, report=print) -> Path:
    """Run the whole pretraining job; returns the run folder (with `backbone/` inside)."""
    pcfg = cfg.pretrain
    run_dir = new_run_dir("pretrain", cfg, cfg.runs_dir)
    if not is_complete(cfg.synth):
        synthesize(cfg.synth, lambda it, total: progress(it, "synth", total, "video"))
    prepare(cfg, report)
    annotations = sorted((find_builder_dir(cfg.prepared_dir) / "annotations").glob("*.jsonl"))
    corpus = [t for t in annotation_texts(a for a in annotations if a.stem != pcfg.eval_split)]
    loader = _loader(cfg, pcfg)
    raw = clip_texts(cfg, pcfg.split, loader)
    tokenizer = train_tokenizer(corpus + [text for row in raw for text in row],
                                pcfg.vocab_size)
    texts = encode_texts(raw, tokenizer, pcfg)
    report(f"[tvad] tokenizer: {len(tokenizer)} tokens; {len(texts.captions)} training clips, "
           f"{len(set(texts.captions))} distinct captions")
    bcfg = backbone_config(pcfg, len(tokenizer), cfg.prepare.height)
    source, lengths = open_split(cfg.prepared_dir, pcfg.split)
    index = clip_index(lengths, loader)
    data = iter(make_dataset(source, lengths, loader, transform=AttachText(texts, index)))
    init_fn, loss_fn = make_fns(bcfg, pcfg)
    result = train(pcfg.train, init_fn=init_fn, loss_fn=loss_fn, data=data, run_dir=run_dir,
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
