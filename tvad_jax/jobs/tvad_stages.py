"""T-VAD's two training stages (paper 000 §4.1) on cached features of the frozen backbone.

Stage 1 trains only the AHD (pixel cross-entropy against the tubelet-merged masks at patch
resolution), AdamW with warmup-cosine, accumulation, selection by validation micro frame AUC.
Stage 2 trains the RAE, the three anomaly prompt-token embeddings and LoRA on the decoder's
q/v projections: phase A on the all-object narratives, phase B on the anomaly-focused
dialogues with LoRA only on the last `lora_layers_b` layers; the loss is on answer tokens only;
the RAE reads the frozen AHD's maps of the clip view pooled onto the decoder's tubelets,
computed once before the phases (`infer.heatmaps.with_decoder_view_maps`); phase B may read
another video's visual tokens in a share of its dialogues (`Stage2Config.visual_swap`) and
also scores the teacher-forced judgment of the val videos. After each phase its kept
checkpoint (the best by the phase's `checkpoint.best_metric`, or the last where that is empty,
as phase B's by default) is merged into the decoder (LoRA into q/v, the special embeddings
into the embedding table), and phase B starts from that self-contained decoder.
`stage1_spec` / `stage2_spec` are also what `tvad plan` compiles at real scale.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from tvad_jax.config import ConfigError
from tvad_jax.data.dialogues import chat_format, dialogue_texts, read_annotations
from tvad_jax.data.pipeline import make_dataset, open_split, view_loader
from tvad_jax.eval.metrics import judgment_scores
from tvad_jax.eval.tvad import RegionScorer, heatmap_auc
from tvad_jax.infer.features import cache_stream, encode_fn, encode_split, feature_cache
from tvad_jax.infer.heatmaps import video_heatmaps, with_decoder_view_maps
from tvad_jax.infer.judgment import JudgmentPrompt, judgment_gap, judgment_prompt
from tvad_jax.jobs.common import Report
from tvad_jax.jobs.config import Config, Stage1Config, Stage2Config
from tvad_jax.models import lora as lora_lib
from tvad_jax.models.ahd import AHD, frame_loss, patch_targets, pixel_loss
from tvad_jax.models.configs import BackboneConfig
from tvad_jax.models.losses import lm_loss
from tvad_jax.models.rae import RAE
from tvad_jax.models.tvad import (FrozenBackbone, TVADConfig, TVADModel, class_text_features,
                                  heatmaps, merge_stage2, special_token_ids, text_logits)
from tvad_jax.models.vit import VisionTransformer
from tvad_jax.train.loop import StageSpec, TrainConfig, restore_params, train


def stage1_spec(tcfg: TVADConfig, s1: Stage1Config, text_fn: Callable[[], Any],
                hidden_shape: tuple[int, ...], vision: tuple[Any, Any] | None = None
                ) -> StageSpec:
    """Stage 1: params {"ahd": trainable, "text": frozen [2, D_t]} on batches of cached ViT
    layers ("hidden").

    text_fn() gives the class features (a constant, or an abstract init for planning);
    hidden_shape is one clip's cached ViT layers [I, T', 1+N, D_v]. With `vision` =
    (VisionTransformer, its params) the batches hold clip frames instead and the vision tower
    trains too, under "vision" (the upper bound of `Stage1Config.train_vision`)."""

    def init_fn(rng):
        text = text_fn()
        hidden = jnp.zeros((1,) + tuple(hidden_shape), jnp.float32)
        layers = [hidden[:, i] for i in range(hidden.shape[1])]
        params = {"ahd": AHD(tcfg.ahd).init(rng, layers, text)["params"], "text": text}
        if vision is not None:
            params["vision"] = vision[1]
        return params

    def loss_fn(trainable, frozen, batch, rng):
        if vision is None:
            hidden = batch["hidden"]
        else:
            out = vision[0].apply({"params": trainable["vision"]}, batch["frames"])
            hidden = jnp.stack(out.hidden, axis=1)                      # [B, I, T', 1+N, D_v]
        out = heatmaps(tcfg, trainable["ahd"], hidden, frozen["text"])
        targets = patch_targets(batch["tubelet_masks"], out.heatmap.shape[-2:], s1.target)
        B, T = batch["valid"].shape
        valid = batch["valid"].reshape(B, T // 2, 2).any(-1)[:, :, None, None]
        loss = pixel_loss(out.logits, targets, valid, s1.abnormal_weight, s1.focal_gamma)
        if s1.frame_weight:
            loss += s1.frame_weight * frame_loss(out.logits, targets, valid)
        return loss, {"mean_heat": out.heatmap.mean(), "target_share": targets.mean()}

    config = s1.train
    if vision is not None:
        config = dataclasses.replace(config, trainable=config.trainable + ("vision/.*",))
    return StageSpec(config, init_fn, loss_fn)


class _Keep:
    """grain transform: keep some keys of a clip."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys

    def __call__(self, example: dict) -> dict:
        return {k: example[k] for k in self.keys}


def train_stage1(cfg: Config, backbone: FrozenBackbone, run_dir: Path,
                 report: Report = print) -> dict:
    """Train the AHD; returns {"ahd": best params, "text": class features} (host arrays),
    and "vision" too with `train_vision`."""
    job = cfg.tvad
    s1 = job.stage1
    tcfg = job.model.for_backbone(backbone.cfg)
    train_cache = feature_cache(cfg, backbone, job.train_split, s1.view, report)
    val_cache = feature_cache(cfg, backbone, job.val_split, s1.view, report)
    text = class_text_features(tcfg, backbone.cfg, backbone.params,
                               backbone.sentence_tokenizer)
    hidden_shape = train_cache[0]["hidden"].shape
    abnormal = np.flatnonzero(train_cache.column("labels").any(axis=1))
    rows = np.concatenate([np.arange(len(train_cache))] + [abnormal] * (s1.abnormal_repeat - 1))
    regions = RegionScorer(cfg.prepared_dir, job.val_split, val_cache.meta["lengths"])
    if s1.train_vision:
        vit = VisionTransformer(backbone.cfg.vision, backbone.cfg.embed_dim)
        spec = stage1_spec(tcfg, s1, lambda: text, hidden_shape,
                           (vit, backbone.params["vision"]))
        source, lengths = open_split(cfg.prepared_dir, job.train_split)
        loader = view_loader(s1.view, batch_size=s1.batch_size, seed=s1.train.loop.seed)
        data = iter(make_dataset(source, lengths, loader, jax.process_index(),
                                 jax.process_count(),
                                 transform=_Keep(("frames", "tubelet_masks", "valid"))))
        encode = jax.jit(encode_fn(backbone.cfg))
    else:
        spec = stage1_spec(tcfg, s1, lambda: text, hidden_shape)
        data = cache_stream(train_cache, s1.batch_size, ("hidden", "tubelet_masks", "valid"),
                            seed=s1.train.loop.seed, rows=rows)

    def eval_fn(trainable, frozen):
        features = val_cache
        if s1.train_vision:   # the tower is training: its validation features change
            params = dict(backbone.params, vision=trainable["vision"])
            features = encode_split(functools.partial(encode, params), cfg.prepared_dir,
                                    job.val_split, s1.view)
        maps = video_heatmaps(tcfg, trainable["ahd"], frozen["text"], features)
        auc, _ = heatmap_auc(maps, val_cache)
        found = regions(maps)
        return {"val_micro_auc": auc["micro_auc"], "val_macro_auc": auc["macro_auc"],
                "val_rbdc": found.rbdc, "val_tbdc": found.tbdc,
                "val_score": auc["micro_auc"] + s1.rbdc_weight * found.rbdc}

    report(f"[tvad] stage 1 (AHD{' + vision tower' if s1.train_vision else ''}): "
           f"{len(train_cache)} training clips ({len(abnormal)} with abnormal frames, "
           f"x{s1.abnormal_repeat}), {len(val_cache)} validation clips")
    train(spec, data=data, run_dir=run_dir, eval_fn=eval_fn)
    params, step = restore_params(spec, run_dir / "checkpoints")
    report(f"[tvad] stage 1: best checkpoint at step {step}")
    return jax.device_get(params)


# ---------------------------------------------------------------------------------------------
# Stage 2

def stage2_decoder_cfg(bcfg: BackboneConfig, dtype: str) -> BackboneConfig:
    return dataclasses.replace(bcfg, decoder=dataclasses.replace(bcfg.decoder, dtype=dtype))


def phase_config(s2: Stage2Config, phase: str, tcfg: TVADConfig, depth: int
                 ) -> tuple[TrainConfig, int | None]:
    """(engine config, LoRA layers: None = all) of stage-2 phase "A" or "B"; without anomaly
    prompts only the LoRA trains."""
    train_cfg = s2.phase_a if phase == "A" else s2.phase_b
    layers = None if phase == "A" else min(s2.lora_layers_b, depth)
    trainable = train_cfg.trainable if tcfg.anomaly_prompts else ("lora/.*",)
    return dataclasses.replace(train_cfg, trainable=trainable), layers


def stage2_spec(tcfg: TVADConfig, bcfg: BackboneConfig, train_cfg: TrainConfig,
                frozen_fn: Callable[[jax.Array], dict], maps_shape: tuple[int, ...],
                lora_layers: int | None, start: dict | None = None,
                prefix: tuple[int, ...] = ()) -> StageSpec:
    """One stage-2 phase.

    frozen_fn(rng) gives the frozen params: {"decoder", "special_init" [3, D]} (constants
    when training; an abstract init for planning). start: trainable values to start from
    ({"rae", "special"} of the previous phase), or None to initialize them. Trainable: "lora"
    (fresh, b = 0), and with anomaly prompts "rae" and "special", whose input is the batch's
    "maps". maps_shape: one video's RAE input [T', h, w, 2]. prefix: the chat format's ids
    before the visual block.
    """
    depth = bcfg.decoder.depth

    def init_fn(rng):
        r_frozen, r_lora, r_rae = jax.random.split(rng, 3)
        params = dict(frozen_fn(r_frozen))
        special_init = params.pop("special_init")
        params["lora"] = lora_lib.to_tree(lora_lib.init_lora(
            nn.unbox(params["decoder"]), tcfg.lora_rank, layers=lora_layers, rng=r_lora))
        if tcfg.anomaly_prompts:
            if start:
                params["rae"], params["special"] = start["rae"], start["special"]
            else:
                maps = jnp.zeros((1,) + tuple(maps_shape), jnp.float32)
                params["rae"] = RAE(tcfg.rae).init(r_rae, maps)["params"]
                params["special"] = special_init
        return params

    def loss_fn(trainable, frozen_, batch, rng):
        maps = batch["maps"] if tcfg.anomaly_prompts else None
        adapters = lora_lib.from_tree(trainable["lora"])
        lora = lora_lib.decoder_lora(adapters, depth, tcfg.lora_alpha, tcfg.lora_rank,
                                     rate=tcfg.lora_dropout, rng=rng, layers=lora_layers)
        logits = text_logits(tcfg, bcfg, frozen_["decoder"], trainable.get("rae"),
                             trainable.get("special"), batch["visual"], maps, batch["ids"],
                             batch["lengths"], lora, prefix)
        return lm_loss(logits, batch["targets"], batch["weights"]), {}

    return StageSpec(train_cfg, init_fn, loss_fn)


class SwapVisual:
    """grain random map of phase B's training stream (`Stage2Config.visual_swap`): with
    probability `rate` an example's visual tokens become a random row of `visual` (the
    cache's "visual" column, one video a row; now and then its own) and its loss weights
    `judgment_weights[video]` (the judgment's answer only); its anomaly prompts and answer
    stay its own. An example not swapped keeps its weights, or takes `kept_weights[video]`
    where given (`Stage2Config.judgment_from_swap`: every answer but the judgment's). With
    `flip_maps` a swapped example's maps [T', h, w, 2] are mirrored along each of their first
    three axes with probability 1/2 (`Stage2Config.swap_flip_maps`)."""

    def __init__(self, visual: np.ndarray, rate: float, judgment_weights: np.ndarray,
                 kept_weights: np.ndarray | None = None, flip_maps: bool = False):
        self.visual, self.rate, self.judgment_weights = visual, rate, judgment_weights
        self.kept_weights, self.flip_maps = kept_weights, flip_maps

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        video = int(example["video_index"])
        if rng.random() >= self.rate:
            if self.kept_weights is None:
                return example
            return dict(example, weights=self.kept_weights[video])
        swapped = dict(example, visual=self.visual[int(rng.integers(len(self.visual)))],
                       weights=self.judgment_weights[video])
        if self.flip_maps:                                   # maps [T', h, w, 2]
            axes = tuple(a for a in range(3) if rng.random() < 0.5)
            swapped["maps"] = np.flip(example["maps"], axes).copy()
        return swapped


def train_phase(cfg: Config, name: str, tcfg: TVADConfig, backbone: FrozenBackbone,
                frozen: dict, start: dict, sources: tuple,
                texts: tuple[dict, dict], run_dir: Path, report: Report,
                augment: SwapVisual | None = None, val_abnormal: np.ndarray | None = None
                ) -> dict:
    """One SFT phase on the decoder's view of the train and val splits (feature caches, with
    the RAE's "maps" where the model has anomaly prompts; `augment` changes the training
    examples); returns the trainable params of its kept checkpoint (the best, or the last
    where `checkpoint.best_metric` is empty; host arrays).

    Validation: `val_loss` over the answer tokens of the val texts; with `val_abnormal` (the
    truth of each val video, both kinds present) also the teacher-forced judgment of every
    val video (`val_` + `eval.metrics.judgment_scores`' keys), which a checkpoint can be
    chosen by."""
    s2 = cfg.tvad.stage2
    train_cfg, layers = phase_config(s2, name, tcfg, backbone.cfg.decoder.depth)
    bcfg = stage2_decoder_cfg(backbone.cfg, s2.dtype)
    train_cache, val_cache = sources
    maps_shape = train_cache[0]["maps"].shape if tcfg.anomaly_prompts else ()
    prefix = chat_format(backbone.tokenizer).prefix
    spec = stage2_spec(tcfg, bcfg, train_cfg, lambda rng: frozen, maps_shape, layers, start,
                       prefix)
    keys = ("maps", "visual") if tcfg.anomaly_prompts else ("visual",)
    data = cache_stream(train_cache, s2.batch_size, keys + ("video_index",),
                        seed=train_cfg.loop.seed, texts=texts[0], augment=augment)
    no_dropout = dataclasses.replace(tcfg, lora_dropout=0.0)
    eval_spec = stage2_spec(no_dropout, bcfg, train_cfg, lambda rng: frozen, maps_shape,
                            layers, start, prefix)
    eval_loss = jax.jit(lambda t, f, b: eval_spec.loss_fn(t, f, b, jax.random.key(0))[0])
    judge = jax.jit(functools.partial(judgment_on_batch, tcfg, bcfg, layers,
                                      judgment_prompt(backbone.tokenizer), prefix))

    def eval_fn(trainable_, frozen_):
        losses, weights, gaps = [], [], []
        for batch in cache_stream(val_cache, s2.batch_size, keys + ("video_index",),
                                  shuffle=False, texts=texts[1]):
            n = len(batch["visual"])
            if val_abnormal is not None:   # every video, the last batch padded: one shape
                full = {k: _pad_rows(batch[k], s2.batch_size) for k in keys}
                # rows spread over several processes' devices: the global array on each
                gap = multihost_utils.process_allgather(judge(trainable_, frozen_, full),
                                                        tiled=True)
                gaps.append(np.asarray(gap)[:n])
            if n < s2.batch_size:
                continue  # whole batches only: one compiled shape
            losses.append(float(eval_loss(trainable_, frozen_, batch)))
            weights.append(float(batch["weights"].sum()))
        metrics = {"val_loss": float(np.average(losses, weights=weights))}
        if val_abnormal is not None:
            scores = judgment_scores(val_abnormal, np.concatenate(gaps))
            metrics.update({f"val_{k}": v for k, v in scores.items()})
        return metrics

    swapped = f", P_V swapped in {augment.rate:.0%} of its examples" if augment else ""
    if augment and augment.kept_weights is not None:
        swapped += ", the judgment trained on those alone"
    if augment and augment.flip_maps:
        swapped += ", their maps mirrored"
    report(f"[tvad] stage 2 phase {name} ({tcfg.variant}): {len(train_cache)} videos, "
           f"LoRA on {'all' if layers is None else f'the last {layers}'} decoder layers"
           f"{swapped}")
    train(spec, data=data, run_dir=run_dir, eval_fn=eval_fn)
    params, step = restore_params(spec, run_dir / "checkpoints")
    kept = "best" if train_cfg.checkpoint.best_metric else "last"
    report(f"[tvad] stage 2 phase {name}: {kept} checkpoint at step {step}")
    params = jax.device_get(params)
    return {k: params[k] for k in ("lora", "rae", "special") if k in params}


def judgment_on_batch(tcfg: TVADConfig, bcfg: BackboneConfig, lora_layers: int | None,
                      prompt: JudgmentPrompt, prefix: tuple[int, ...], trainable: dict,
                      frozen: dict, batch: dict) -> jax.Array:
    """`infer.judgment.judgment_gap` [B] of a stage-2 phase's batch with its LoRA unmerged,
    no dropout."""
    lora = lora_lib.decoder_lora(lora_lib.from_tree(trainable["lora"]), bcfg.decoder.depth,
                                 tcfg.lora_alpha, tcfg.lora_rank, layers=lora_layers)
    maps = batch["maps"] if tcfg.anomaly_prompts else None
    return judgment_gap(tcfg, bcfg, frozen["decoder"], trainable.get("rae"),
                        trainable.get("special"), batch["visual"], maps, prompt, lora, prefix)


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """`a` [m, ...] with its last row repeated up to n rows."""
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), axis=0)])


def val_judgment_truth(cfg: Config) -> np.ndarray | None:
    """Which val videos are abnormal [N] (bool), the truth phase B's judgment is scored
    against, or None where val holds one kind of video only; a ConfigError if phase B's
    checkpoint is then to be chosen by that judgment (checked before any output)."""
    job = cfg.tvad
    abnormal = np.asarray([row["abnormal"]
                           for row in read_annotations(cfg.prepared_dir, job.val_split)], bool)
    if abnormal.all() or not abnormal.any():
        metric = job.stage2.phase_b.checkpoint.best_metric
        if metric.startswith("val_yes"):
            kind = "abnormal" if abnormal.all() else "normal"
            raise ConfigError(f"tvad.stage2.phase_b.checkpoint.best_metric={metric}: the val "
                              f"split {job.val_split!r} holds only {kind} videos, so its "
                              f"judgment cannot be scored; choose by val_loss")
        return None
    return abnormal


def train_stage2(cfg: Config, backbone: FrozenBackbone, stage1: dict | None, run_dir: Path,
                 report: Report = print) -> TVADModel:
    """Phases A and B; returns the model with the merged decoder."""
    job = cfg.tvad
    s2 = job.stage2
    tcfg = job.model.for_backbone(backbone.cfg)
    if tcfg.anomaly_prompts and stage1 is None:
        raise ValueError(f"variant {tcfg.variant!r} needs the stage-1 AHD")
    sources = []
    for split in (job.train_split, job.val_split):
        source = feature_cache(cfg, backbone, split, s2.view, report)
        if tcfg.anomaly_prompts:
            source = with_decoder_view_maps(
                tcfg, stage1["ahd"], stage1["text"],
                feature_cache(cfg, backbone, split, job.stage1.view, report), source)
        sources.append(source)
    ids = special_token_ids(backbone.tokenizer)
    frozen = {"decoder": backbone.params["decoder"]}
    start: dict = {}
    annotations = [read_annotations(cfg.prepared_dir, split)
                   for split in (job.train_split, job.val_split)]
    val_abnormal = val_judgment_truth(cfg)
    for phase, part in (("A", "narratives"), ("B", "dialogue")):
        texts, left_out = zip(*(dialogue_texts(backbone.tokenizer, rows, part, s2.max_text_len,
                                               {"judgment": s2.judgment_weight})
                                for rows in annotations))
        augment = None
        if phase == "B" and s2.visual_swap and tcfg.anomaly_prompts:
            judgment_only, _ = dialogue_texts(backbone.tokenizer, annotations[0], part,
                                              s2.max_text_len, {"judgment": s2.judgment_weight},
                                              other_weight=0.0)
            wording_only = (texts[0]["weights"] * (judgment_only["weights"] == 0)
                            if s2.judgment_from_swap else None)
            augment = SwapVisual(sources[0].column("visual"), s2.visual_swap,
                                 judgment_only["weights"], wording_only, s2.swap_flip_maps)
        if any(left_out):
            counts = ", ".join(f"{n} of {sum(len(r[part]) for r in rows)} ({split})"
                               for n, rows, split in zip(left_out, annotations,
                                                         (job.train_split, job.val_split)))
            report(f"[tvad] stage 2 phase {phase}: {part} turns past "
                   f"tvad.stage2.max_text_len={s2.max_text_len} tokens are left out: {counts}")
        init = dict(frozen, special_init=jnp.asarray(frozen["decoder"]["embed"])[ids])
        trained = train_phase(cfg, phase, tcfg, backbone, init, start, tuple(sources), texts,
                              run_dir / f"stage2-{phase}", report, augment,
                              val_abnormal if phase == "B" else None)
        frozen["decoder"] = jax.device_get(merge_stage2(
            tcfg, frozen["decoder"], lora_lib.from_tree(trained["lora"]), trained.get("special"),
            ids))
        start = {k: trained[k] for k in ("rae", "special") if k in trained}
    params = dict(start)
    if tcfg.anomaly_prompts:
        params.update(ahd=stage1["ahd"], text=stage1["text"])
    trained_backbone = dataclasses.replace(
        backbone, params=dict(backbone.params, decoder=frozen["decoder"]))
    return TVADModel(tcfg, trained_backbone, params, job.stage1.view, job.stage2.view)
