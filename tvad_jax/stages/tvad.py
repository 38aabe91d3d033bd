"""T-VAD training (paper 000 §4.1): stage 1 (AHD) and stage 2 (RAE + LoRA, phases A and B).

    model_dir = train_tvad(cfg)              # `tvad train tvad`: both stages, one run folder
    model = load_model(model_dir)            # -> TVADModel for detection, dialogue, evaluation

Stage 1 trains only the AHD on cached features of the frozen vision tower (pixel
cross-entropy against the tubelet-merged masks at patch resolution), AdamW with warmup-cosine,
accumulation, selection by validation micro frame AUC. Stage 2 trains the RAE, the three
anomaly prompt-token embeddings and LoRA on the decoder's q/v projections: phase A on the
all-object narratives, phase B on the anomaly-focused dialogues with LoRA only on the last
`lora_layers_b` layers; the loss is on answer tokens only; after each phase the best checkpoint
by validation loss is merged into the decoder (LoRA into q/v, the special embeddings into the
embedding table), and phase B starts from that self-contained decoder.

Run folder: config.json, stage1/ and stage2-{A,B}/ (engine runs: checkpoints, metrics.jsonl,
TensorBoard events, summary.json) and model/ (the exported T-VAD model, `save_model`).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.errors import DataError
from tvad_jax.eval.metrics import frame_auc
from tvad_jax.models import backbone_io
from tvad_jax.models import lora as lora_lib
from tvad_jax.models.ahd import AHD, patch_targets, pixel_loss
from tvad_jax.models.configs import BackboneConfig
from tvad_jax.models.rae import RAE
from tvad_jax.models.tvad import (TVADConfig, abnormal_heatmap, class_text_features, heatmaps,
                                  merge_stage2, prompt_maps, special_token_ids, text_logits)
from tvad_jax.runs import new_run_dir
from tvad_jax.stages.features import ClipView, FeatureCache, build_cache, checkpoint_digest
from tvad_jax.stages.pretrain import lm_loss
from tvad_jax.stages.tvad_data import (cache_stream, dialogue_texts, read_annotations,
                                       scatter_clips)
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import TrainConfig, TrainLoopConfig, restore_params, train
from tvad_jax.train.optim import OptimConfig

Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Stage1Config:
    """Stage 1: the AHD on cached ViT features.

    Attributes:
      train: the engine (steps are micro-batches; `optim.accumulation_steps` of them per
        update; keep-best by `val_micro_auc`).
      view: how videos are cut into clips (non-overlapping 16-frame clips by default, so
        every frame is scored once at evaluation).
      batch_size: clips per micro-batch.
      target: patch targets from the masks: "area" (anomalous fraction) or "max".
    """

    train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=1200, log_every=10, sync_every=50),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.1, lr_floor=1e-5,
                          weight_decay=0.01, accumulation_steps=8),
        checkpoint=CheckpointConfig(every_steps=200, keep_last=1, keep_best=1,
                                    best_metric="val_micro_auc", best_mode="max"),
        trainable=("ahd/.*",))
    view: ClipView = ClipView(clip_len=16, clip_stride=16)
    batch_size: int = 4
    target: Literal["area", "max"] = "area"


# One SFT phase's engine settings (phases A and B start equal; override each by its path).
_PHASE = TrainConfig(
    loop=TrainLoopConfig(steps=160, log_every=10, sync_every=40),
    optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.0, weight_decay=0.0,
                      accumulation_steps=1),
    checkpoint=CheckpointConfig(every_steps=40, keep_last=1, keep_best=1,
                                best_metric="val_loss", best_mode="min"),
    trainable=("rae/.*", "special", "lora/.*"))


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Stage 2: RAE + special tokens + LoRA, phase A (narratives) then B (dialogues).

    Attributes:
      phase_a, phase_b: the engine per phase (keep-best by `val_loss`).
      view: the whole-video view the decoder sees (16 frames, every 4th).
      batch_size: videos per micro-batch.
      max_text_len: token budget of the dialogue text after the prompts.
      lora_layers_b: phase B adapts only the last k decoder layers (the paper: 4).
      The paper's LR is 2e-4 for one epoch on a 7B decoder; the small default decoder and a
      few hundred steps need 1e-3.
      dtype: decoder compute dtype in stage 2 ("bfloat16" on accelerators; float32 on CPU,
        where bf16 matmuls are emulated and slower).
    """

    phase_a: TrainConfig = _PHASE
    phase_b: TrainConfig = _PHASE
    view: ClipView = ClipView(clip_len=16, clip_stride=1 << 20, frame_step=4, pad_last=False)
    batch_size: int = 4
    max_text_len: int = 160
    lora_layers_b: int = 4
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class TVADJobConfig:
    """`tvad train tvad`, `tvad detect`, `tvad chat` and the T-VAD rows of `tvad demo`.

    Attributes:
      model: the heads and the variant.
      stage1, stage2: the two stages.
      backbone: backbone checkpoint folder (`save_backbone` layout); "" = the shipped default.
      cache_dir: root of the feature cache; "" = <prepared_dir>/features.
      train_split, val_split, eval_split: prepared splits.
      eval_batch: videos per batch at evaluation and detection.
      max_new_tokens: answer budget per dialogue turn.
    """

    model: TVADConfig = TVADConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    backbone: str = ""
    cache_dir: str = ""
    train_split: str = "train"
    val_split: str = "val"
    eval_split: str = "test"
    eval_batch: int = 8
    max_new_tokens: int = 48


# ---------------------------------------------------------------------------------------------
# The frozen backbone and the exported model

@dataclasses.dataclass
class FrozenBackbone:
    """A loaded frozen backbone: config, params, tokenizer and a digest of its files."""

    cfg: BackboneConfig
    params: Any
    tokenizer: Any
    path: Path
    digest: str


def load_frozen_backbone(path: str | Path = "") -> FrozenBackbone:
    directory = Path(path) if path else backbone_io.SHIPPED_DIR
    cfg, params, tokenizer = backbone_io.load_backbone(directory)
    return FrozenBackbone(cfg, params, tokenizer, directory, checkpoint_digest(directory))


@dataclasses.dataclass
class TVADModel:
    """Everything inference needs. `params`: {"ahd"?, "rae"?, "special"?} plus "text" [2, D_t]
    where the variant has an AHD; `backbone.params["decoder"]` is the stage-2 decoder."""

    cfg: TVADConfig
    backbone: FrozenBackbone
    params: dict
    clip_view: ClipView = Stage1Config.view        # clips the AHD scores
    video_view: ClipView = Stage2Config.view       # the whole-video view the decoder sees
    path: Path | None = None


MODEL_FILE, WEIGHTS_FILE = "tvad.json", "tvad.safetensors"


def save_model(directory: str | Path, model: TVADModel, extra: dict | None = None) -> Path:
    """Write config + the T-VAD params (and the stage-2 decoder) beside a pointer to the
    backbone; the folder appears complete or not at all."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tree = dict(model.params)
    if model.cfg.variant in ("full", "no_ahd"):
        tree["decoder"] = model.backbone.params["decoder"]
    backbone_io.write_tree(tmp / WEIGHTS_FILE, tree)
    meta = {"tvad": config_lib.to_dict(model.cfg), "backbone": str(model.backbone.path),
            "clip_view": dataclasses.asdict(model.clip_view),
            "video_view": dataclasses.asdict(model.video_view),
            "backbone_digest": model.backbone.digest, **(extra or {})}
    (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_model(directory: str | Path) -> TVADModel:
    """A `save_model` folder -> TVADModel (its backbone loaded and checked by digest)."""
    directory = Path(directory)
    meta_path = directory / MODEL_FILE
    if not meta_path.is_file():
        raise DataError(directory, f"not a T-VAD model folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = config_lib.from_dict(TVADConfig, meta["tvad"])
        views = ClipView(**meta["clip_view"]), ClipView(**meta["video_view"])
        backbone = load_frozen_backbone(meta["backbone"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(meta_path, f"not a T-VAD model of this version ({err!r})") from None
    if backbone.digest != meta["backbone_digest"]:
        raise DataError(backbone.path, "this backbone differs from the one the model was "
                                       f"trained on ({directory})")
    tree = backbone_io.read_tree(directory / WEIGHTS_FILE)
    if "decoder" in tree:
        backbone.params = dict(backbone.params, decoder=tree.pop("decoder"))
    return TVADModel(cfg.for_backbone(backbone.cfg), backbone, tree, *views, directory)


def ablation_model(model: TVADModel, variant: str) -> TVADModel:
    """A trained full model with its RAE switched off at inference ("no_rae": the AHD's
    heatmaps only, no dialogue)."""
    if variant != "no_rae" or not model.cfg.has_ahd:
        raise ValueError(f"cannot derive {variant!r} from a {model.cfg.variant!r} model")
    params = {"ahd": model.params["ahd"], "text": model.params["text"]}
    return dataclasses.replace(model, cfg=dataclasses.replace(model.cfg, variant="no_rae"),
                               params=params)


def check_fits(backbone: FrozenBackbone, cfg) -> None:
    """The backbone must take the prepared frames as they are."""
    from tvad_jax.config import ConfigError

    size, frames = backbone.cfg.vision.image_size, (cfg.prepare.height, cfg.prepare.width)
    if frames != (size, size):
        raise ConfigError(f"the backbone {backbone.path} takes {size}x{size} frames, the "
                          f"prepared data is {frames[0]}x{frames[1]}: set tvad.backbone to "
                          "a matching checkpoint or prepare.height/width")


def plain_model(backbone: FrozenBackbone, job: TVADJobConfig = TVADJobConfig()) -> TVADModel:
    """The frozen backbone as a `TVADModel` (no AHD, no RAE): the baselines."""
    cfg = dataclasses.replace(job.model, variant="plain").for_backbone(backbone.cfg)
    return TVADModel(cfg, backbone, {}, job.stage1.view, job.stage2.view)


# ---------------------------------------------------------------------------------------------
# Feature caches

def feature_cache(cfg, backbone: FrozenBackbone, split: str, view: ClipView,
                  report: Report = print) -> FeatureCache:
    root = cfg.tvad.cache_dir or str(Path(cfg.prepared_dir) / "features")
    return build_cache(backbone.cfg, backbone.params, cfg.prepared_dir, split, view, root,
                       backbone.digest, report=report)


# ---------------------------------------------------------------------------------------------
# Stage 1

def clip_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache,
                  batch_size: int = 16) -> np.ndarray:
    """AHD heatmaps [C, T', h, w] of every clip of a cache."""
    out = []
    for batch in cache_stream(cache, batch_size, ("hidden",), shuffle=False):
        n = len(batch["hidden"])
        hidden = batch["hidden"]
        if n < batch_size:  # one compiled shape
            hidden = np.concatenate([hidden, np.zeros((batch_size - n,) + hidden.shape[1:],
                                                      hidden.dtype)])
        out.append(np.asarray(abnormal_heatmap(tcfg, ahd_params, hidden, text))[:n])
    return np.concatenate(out)


def video_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache
                   ) -> list[np.ndarray]:
    """Per-video patch heatmaps [n, h, w] of a cached split (clips averaged where they
    overlap)."""
    return scatter_clips(clip_heatmaps(tcfg, ahd_params, text, cache),
                         cache.column("video_index"), cache.column("start"),
                         cache.meta["lengths"], frame_step=cache.meta["view"]["frame_step"])


def frame_labels(cache: FeatureCache, lengths) -> list[np.ndarray]:
    """Per-video frame labels from the cached clip labels."""
    labels = cache.column("labels").astype(np.float32)                 # C, T
    view = cache.meta["view"]
    return scatter_clips(labels, cache.column("video_index"), cache.column("start"), lengths,
                         tubelet=1, frame_step=view["frame_step"], reduce="max")


def heatmap_auc(maps: list[np.ndarray], cache: FeatureCache) -> tuple[dict, list[np.ndarray]]:
    """({micro_auc, macro_auc}, per-video frame scores) of per-video heatmaps, a frame's
    score being its max heat over the patch grid."""
    scores = [m.reshape(len(m), -1).max(axis=1) for m in maps]
    labels = frame_labels(cache, cache.meta["lengths"])
    keys = [str(i) for i in range(len(maps))]
    result = frame_auc(dict(zip(keys, scores)), dict(zip(keys, labels)), sigma=0.0)
    return {"micro_auc": result.micro_auc, "macro_auc": result.macro_auc}, scores


def stage1_fns(tcfg: TVADConfig, text_fn: Callable[[], Any], hidden_shape: tuple[int, ...],
               target: str):
    """(init_fn, loss_fn) of stage 1: params {"ahd": trainable, "text": frozen [2, D_t]}.

    text_fn() gives the class features (a constant, or an abstract init for planning);
    hidden_shape is one clip's cached ViT layers [I, T', 1+N, D_v]."""

    def init_fn(rng):
        text = text_fn()
        hidden = jnp.zeros((1,) + tuple(hidden_shape), jnp.float32)
        layers = [hidden[:, i] for i in range(hidden.shape[1])]
        return {"ahd": AHD(tcfg.ahd).init(rng, layers, text)["params"], "text": text}

    def loss_fn(trainable, frozen, batch, rng):
        out = heatmaps(tcfg, trainable["ahd"], batch["hidden"], frozen["text"])
        targets = patch_targets(batch["tubelet_masks"], out.heatmap.shape[-2:], target)
        B, T = batch["valid"].shape
        valid = batch["valid"].reshape(B, T // 2, 2).any(-1)[:, :, None, None]
        loss = pixel_loss(out.logits, targets, valid)
        return loss, {"mean_heat": out.heatmap.mean(), "target_share": targets.mean()}

    return init_fn, loss_fn


def train_stage1(cfg, backbone: FrozenBackbone, run_dir: Path, report: Report = print) -> dict:
    """Train the AHD; returns {"ahd": best params, "text": class features} (host arrays)."""
    job = cfg.tvad
    s1 = job.stage1
    tcfg = job.model.for_backbone(backbone.cfg)
    train_cache = feature_cache(cfg, backbone, job.train_split, s1.view, report)
    val_cache = feature_cache(cfg, backbone, job.val_split, s1.view, report)
    text = class_text_features(backbone.cfg, backbone.params, backbone.tokenizer)
    init_fn, loss_fn = stage1_fns(tcfg, lambda: text, train_cache[0]["hidden"].shape,
                                  s1.target)
    data = cache_stream(train_cache, s1.batch_size, ("hidden", "tubelet_masks", "valid"),
                        seed=s1.train.loop.seed)

    def eval_fn(trainable, frozen):
        maps = video_heatmaps(tcfg, trainable["ahd"], frozen["text"], val_cache)
        auc, _ = heatmap_auc(maps, val_cache)
        return {"val_micro_auc": auc["micro_auc"], "val_macro_auc": auc["macro_auc"]}

    report(f"[tvad] stage 1 (AHD): {len(train_cache)} training clips, "
           f"{len(val_cache)} validation clips")
    train(s1.train, init_fn=init_fn, loss_fn=loss_fn, data=data, run_dir=run_dir,
          eval_fn=eval_fn)
    params, step = restore_params(s1.train, init_fn=init_fn, loss_fn=loss_fn,
                                  checkpoint_dir=run_dir / "checkpoints")
    report(f"[tvad] stage 1: best checkpoint at step {step}")
    return jax.device_get(params)


# ---------------------------------------------------------------------------------------------
# Stage 2

def stage2_decoder_cfg(bcfg: BackboneConfig, dtype: str) -> BackboneConfig:
    return dataclasses.replace(bcfg, decoder=dataclasses.replace(bcfg.decoder, dtype=dtype))


def stage2_fns(tcfg: TVADConfig, bcfg: BackboneConfig, frozen_fn: Callable[[jax.Array], dict],
               hidden_shape: tuple[int, ...], lora_layers: int | None, start: dict | None = None):
    """(init_fn, loss_fn) of one stage-2 phase.

    frozen_fn(rng) gives the frozen params: {"decoder", "special_init" [3, D], and with
    anomaly prompts "ahd", "text"} (constants when training; an abstract init for planning).
    start: trainable values to start from ({"rae", "special"} of the previous phase), or
    None to initialize them. Trainable: "lora" (fresh, b = 0), and with anomaly prompts "rae"
    and "special". hidden_shape: one clip's cached ViT layers [I, T', 1+N, D_v].
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
                hidden = jnp.zeros((1,) + tuple(hidden_shape), jnp.float32)
                out = heatmaps(tcfg, nn.unbox(params["ahd"]), hidden, nn.unbox(params["text"]))
                params["rae"] = RAE(tcfg.rae).init(r_rae, prompt_maps(tcfg, out))["params"]
                params["special"] = special_init
        return params

    def loss_fn(trainable, frozen_, batch, rng):
        maps = None
        if tcfg.anomaly_prompts:
            out = heatmaps(tcfg, frozen_["ahd"], batch["hidden"], frozen_["text"])
            maps = prompt_maps(tcfg, out)
        adapters = lora_lib.from_tree(trainable["lora"])
        lora = lora_lib.decoder_lora(adapters, depth, tcfg.lora_alpha, tcfg.lora_rank,
                                     rate=tcfg.lora_dropout, rng=rng, layers=lora_layers)
        logits = text_logits(tcfg, bcfg, frozen_["decoder"], trainable.get("rae"),
                             trainable.get("special"), batch["visual"], maps, batch["ids"],
                             batch["lengths"], lora)
        return lm_loss(logits, batch["targets"]), {}

    return init_fn, loss_fn


def train_phase(cfg, name: str, tcfg: TVADConfig, backbone: FrozenBackbone, frozen: dict,
                start: dict, caches: tuple[FeatureCache, FeatureCache],
                texts: tuple[dict, dict], run_dir: Path, report: Report) -> dict:
    """One SFT phase; returns the trainable params of its best checkpoint (host arrays)."""
    s2 = cfg.tvad.stage2
    train_cfg = s2.phase_a if name == "A" else s2.phase_b
    layers = None if name == "A" else min(s2.lora_layers_b, backbone.cfg.decoder.depth)
    bcfg = stage2_decoder_cfg(backbone.cfg, s2.dtype)
    trainable = train_cfg.trainable if tcfg.anomaly_prompts else ("lora/.*",)
    train_cfg = dataclasses.replace(train_cfg, trainable=trainable)
    train_cache, val_cache = caches
    hidden_shape = train_cache[0]["hidden"].shape
    init_fn, loss_fn = stage2_fns(tcfg, bcfg, lambda rng: frozen, hidden_shape, layers, start)
    keys = ("hidden", "visual") if tcfg.anomaly_prompts else ("visual",)
    data = cache_stream(train_cache, s2.batch_size, keys + ("video_index",),
                        seed=train_cfg.loop.seed, texts=texts[0])
    no_dropout = dataclasses.replace(tcfg, lora_dropout=0.0)
    _, eval_loss_fn = stage2_fns(no_dropout, bcfg, lambda rng: frozen, hidden_shape, layers,
                                 start)
    eval_loss = jax.jit(lambda t, f, b: eval_loss_fn(t, f, b, jax.random.key(0))[0])

    def eval_fn(trainable_, frozen_):
        losses, weights = [], []
        for batch in cache_stream(val_cache, s2.batch_size, keys + ("video_index",),
                                  shuffle=False, texts=texts[1]):
            n = len(batch["visual"])
            if n < s2.batch_size:
                continue  # whole batches only: one compiled shape
            losses.append(float(eval_loss(trainable_, frozen_, batch)))
            weights.append(float((batch["targets"] >= 0).sum()))
        return {"val_loss": float(np.average(losses, weights=weights))}

    report(f"[tvad] stage 2 phase {name} ({tcfg.variant}): {len(train_cache)} videos, "
           f"LoRA on {'all' if layers is None else f'the last {layers}'} decoder layers")
    train(train_cfg, init_fn=init_fn, loss_fn=loss_fn, data=data, run_dir=run_dir,
          eval_fn=eval_fn)
    params, step = restore_params(train_cfg, init_fn=init_fn, loss_fn=loss_fn,
                                  checkpoint_dir=run_dir / "checkpoints")
    report(f"[tvad] stage 2 phase {name}: best checkpoint at step {step}")
    params = jax.device_get(params)
    return {k: params[k] for k in ("lora", "rae", "special") if k in params}


def train_stage2(cfg, backbone: FrozenBackbone, stage1: dict | None, run_dir: Path,
                 report: Report = print) -> TVADModel:
    """Phases A and B; returns the model with the merged decoder."""
    job = cfg.tvad
    s2 = job.stage2
    tcfg = job.model.for_backbone(backbone.cfg)
    caches = tuple(feature_cache(cfg, backbone, split, s2.view, report)
                   for split in (job.train_split, job.val_split))
    ids = special_token_ids(backbone.tokenizer)
    decoder = backbone.params["decoder"]
    frozen = {"decoder": decoder}
    if tcfg.anomaly_prompts:
        if stage1 is None:
            raise ValueError(f"variant {tcfg.variant!r} needs the stage-1 AHD")
        frozen.update(ahd=stage1["ahd"], text=stage1["text"])
    start: dict = {}
    for phase, part in (("A", "narratives"), ("B", "dialogue")):
        texts = tuple(dialogue_texts(backbone.tokenizer,
                                     read_annotations(cfg.prepared_dir, split), part,
                                     s2.max_text_len)
                      for split in (job.train_split, job.val_split))
        init = dict(frozen, special_init=jnp.asarray(frozen["decoder"]["embed"])[ids])
        trained = train_phase(cfg, phase, tcfg, backbone, init, start, caches, texts,
                              run_dir / f"stage2-{phase}", report)
        frozen["decoder"] = jax.device_get(merge_stage2(
            tcfg, frozen["decoder"], lora_lib.from_tree(trained["lora"]), trained.get("special"),
            ids))
        start = {k: trained[k] for k in ("rae", "special") if k in trained}
    params = dict(start)
    if tcfg.anomaly_prompts:
        params.update(ahd=stage1["ahd"], text=stage1["text"])
    trained_backbone = dataclasses.replace(
        backbone, params=dict(backbone.params, decoder=frozen["decoder"]))
    return TVADModel(tcfg, trained_backbone, params)


# ---------------------------------------------------------------------------------------------
# The whole job

def train_tvad(cfg, run_dir: str | Path | None = None, stage1_from: str | Path | None = None,
               report: Report = print) -> Path:
    """`tvad train tvad`: stage 1 (unless the variant has no AHD, or `stage1_from` names a
    T-VAD model folder whose AHD to reuse), then stage 2 (unless the variant is "no_rae");
    the model is exported to <run>/model. Returns the model folder."""
    from tvad_jax.stages.s3m import ensure_benchmark
    from tvad_jax.data.prepare import prepare

    job = cfg.tvad
    if job.model.variant == "plain":
        raise ValueError("the plain backbone is not trained; evaluate it with `tvad eval "
                         "tvad --variant plain`")
    ensure_benchmark(cfg, report)
    prepare(cfg, report)
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"tvad-{job.model.variant}", cfg,
                                                        cfg.runs_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, run_dir / "config.json")
    backbone = load_frozen_backbone(job.backbone)
    check_fits(backbone, cfg)
    stage1 = None
    if job.model.has_ahd or job.model.anomaly_prompts:
        if stage1_from:
            stage1 = load_model(stage1_from).params
            report(f"[tvad] stage 1: reusing the AHD of {stage1_from}")
        else:
            stage1 = train_stage1(cfg, backbone, run_dir / "stage1", report)
    tcfg = job.model.for_backbone(backbone.cfg)
    if tcfg.variant == "no_rae":
        model = TVADModel(tcfg, backbone, {"ahd": stage1["ahd"], "text": stage1["text"]})
    else:
        model = train_stage2(cfg, backbone, stage1, run_dir, report)
    model = dataclasses.replace(model, clip_view=job.stage1.view, video_view=job.stage2.view)
    out = save_model(run_dir / "model", model)
    report(f"[tvad] T-VAD model ({tcfg.variant}) in {out}")
    return out
