"""The config tree of every job: its sections and the typed root `Config` that jobs annotate.

Light on purpose: it imports the section dataclasses of the lower layers (data, models, train)
and no job code, so the registry of named configs (`tvad_jax.configs`) and the jobs both build
on it without a cycle.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from tvad_jax import config as config_lib
from tvad_jax.data.object_text import ATTRIBUTE_PHRASES, QUESTIONS
from tvad_jax.data.pipeline import LoaderConfig
from tvad_jax.data.readers import parse_split_files
from tvad_jax.data.synthetic.spec import ANOMALY_TYPES, NORMAL_BEHAVIOURS, SynthConfig
from tvad_jax.data.tracker import DetectionNoise, TrackerConfig
from tvad_jax.eval.fusion import NORMALIZATIONS
from tvad_jax.models.attention import IMPLEMENTATIONS
from tvad_jax.models.configs import DTYPES, REMAT_POLICIES
from tvad_jax.models.layers import WEIGHT_GRADS
from tvad_jax.models.local_patterns import WEIGHTS, RMConfig
from tvad_jax.models.predictors import PREDICTORS
from tvad_jax.models.s3m import S3MConfig
from tvad_jax.models.smm import YES_NO_FORMS
from tvad_jax.models.tvad import ClipView, TVADConfig
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import TrainConfig, TrainLoopConfig
from tvad_jax.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Where videos come from and where `tvad data prepare` writes ArrayRecord shards."""

    layout: Literal["synthetic", "ubnormal", "shanghaitech"] = "synthetic"
    source: str = ""            # dataset root; empty = the synthetic benchmark's out_dir
    out_dir: str = ""           # empty = <source>/prepared
    height: int = 96
    width: int = 96
    resample: Literal["bilinear", "bicubic"] = "bilinear"  # the frames' resize (PIL, uint8):
    # bilinear, what the shipped backbone was pretrained on; bicubic, Qwen2.5-VL's processor's
    splits: tuple[str, ...] = ("train", "val", "test", "train_normal", "test_seen")
    split_files: str = ""       # UBnormal: split=file1+file2;split=... (official name lists)
    tracks_dir: str = ""        # ShanghaiTech: folder of community track files
    skip_bad: bool = False
    conceal_errors: bool = False  # accept videos FFmpeg decodes only by concealing errors
    annotate: bool = True       # write the text annotations (needs synthetic sidecars)

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "height", "width")
        if not self.splits:
            raise ValueError("splits: expected at least one split")
        parse_split_files(self.split_files)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """`tvad pretrain`: data, objectives and the engine settings.

    Attributes:
      split / eval_split: prepared splits to train on and to measure retrieval on. With
        split "pretrain" (the shipped recipe since backbone v4) the job reads a corpus of its
        own (`corpus_data`); "train" reads the benchmark's 80 training videos (v1-v3).
      corpus_videos: videos in the "pretrain" corpus: the benchmark's config with that many
        more videos of normal traffic and the training anomaly types (`synth.videos_pretrain`),
        rendered into `<synth.out_dir>-pretrain` (14 minutes here for 1440, backbone v5; v4
        read 480); only that split and `eval_split` are prepared there. The val and test
        anomaly types stay unseen.
      clip_len, clip_stride: frames per clip and between clip starts.
      frame_step: frames between the clip's frames. With 4 (7.5 fps of a 30 fps video) a
        2-frame tubelet spans 4 frames and motion shows inside one patch token (a walker
        moves ~1.6 px, a runner ~6 px); tried for 1000 steps, the tower still learned no
        speed (linear probe at the majority rate) and stage 1 did worse, so the shipped
        recipe (v2) keeps consecutive frames (1).
      batch_size: global batch (clips).
      vocab_size: BPE vocabulary of the tokenizer trained first.
      caption_len / qa_len: padded token lengths of captions (and object descriptions) and of
        question + answer.
      regions: objects per clip in the region-text objective (the most visible ones).
      crop_every: every n-th clip is a crop around its main object (0: none).
      lm_weight / region_weight / attribute_weight: weights of the language-modelling,
        region-text and attribute-text losses beside the clip-caption contrastive one (the
        attribute-text loss: each region's pooled feature against the phrases of each of its
        attributes, `object_text.ATTRIBUTE_PHRASES`).
      motion_weight: weight of the region-motion regression (a linear head on each region's
        patch features per tubelet predicts the object's velocity from its boxes; 0: off).
      dense_weight: weight of the dense attribute loss (a linear classifier per attribute on
        every last-layer patch token predicts the attributes of the regions covering it:
        class, action, speed band, direction, pose, zone; class-balanced; 0: off), so that
        each patch token, which the AHD decodes one by one, carries them itself. On in the
        shipped recipe since backbone v3 (with the "conv" stem).
      playback_weight: weight of the playback-speed task (SpeedNet's: a linear classifier on
        every last-layer patch token under a moving object tells the clip's first half at its
        own speed from every second frame of the whole clip; no label but the playback; 0:
        off, the shipped recipe), so that patch features carry how fast an object moves for
        its kind, which the speed band's labels did not teach (runners stay the closed set's
        hardest type). Costs a second tower pass on half-length clips per step.
      dense_attribute_weights: each attribute's weight inside the dense loss, in the order
        of `object_text.ATTRIBUTE_PHRASES` (class, action, speed, direction, pose, zone);
        (): all 1 (the shipped recipe). The loss is the mean of the weighted per-attribute
        losses, so "1,1,4,1,1,1" adds three more speed losses and leaves the others as they were.
      stem: the vision tower's patch embedding (`VisionConfig.stem`): "conv" (convolutions
        over each frame and its difference to the previous one; backbone v3) or "tubelet"
        (CLIP's and Qwen's linear map; backbones v1 and v2).
      motion_spans: the "conv" stem's frame differences (`VisionConfig.motion_spans`): (1,)
        each frame minus the previous one (backbones v3-v5).
      init: a backbone folder to continue pretraining from (its weights, architecture and
        tokenizer; `model` and `vocab_size` are then unused); "": a fresh initialization.
      insert_blocks: with `init`, vision layers (1-based) after each of which an identity
        block is inserted before training (`models.grow`: the deeper tower starts as the
        old one, its readers moved past the new blocks); (): the tower as it is.
      eval_clips: held-out clips for retrieval.
      model: "default" (the shipped architecture) or "tiny" (tests).
    """

    train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=1400, sync_every=25, log_every=5),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.05,
                          weight_decay=0.05, clip_norm=1.0),
        checkpoint=CheckpointConfig(every_steps=100, keep_last=1, keep_best=0))
    split: str = "pretrain"
    eval_split: str = "test"
    corpus_videos: int = 1440
    clip_len: int = 8
    clip_stride: int = 4
    frame_step: int = 1
    batch_size: int = 16
    vocab_size: int = 1024
    caption_len: int = 48
    qa_len: int = 48
    regions: int = 4
    crop_every: int = 4
    lm_weight: float = 1.0
    region_weight: float = 1.0
    attribute_weight: float = 0.0
    motion_weight: float = 0.0
    dense_weight: float = 1.0
    playback_weight: float = 0.0
    dense_attribute_weights: tuple[float, ...] = ()
    stem: Literal["tubelet", "conv"] = "conv"
    motion_spans: tuple[int, ...] = (1,)
    init: str = ""
    insert_blocks: tuple[int, ...] = ()
    eval_clips: int = 128
    model: Literal["default", "tiny"] = "default"

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "clip_len", "clip_stride", "frame_step", "batch_size",
                                  "vocab_size", "caption_len", "qa_len", "regions", "eval_clips")
        config_lib.check_at_least(self, 0, "crop_every", "lm_weight", "region_weight",
                                  "attribute_weight", "motion_weight", "dense_weight",
                                  "playback_weight")
        if self.dense_attribute_weights:
            if len(self.dense_attribute_weights) != len(ATTRIBUTE_PHRASES):
                raise ValueError(
                    f"dense_attribute_weights: expected {len(ATTRIBUTE_PHRASES)} weights, one "
                    f"per attribute ({', '.join(ATTRIBUTE_PHRASES)}), got "
                    f"{len(self.dense_attribute_weights)}")
            for weight in self.dense_attribute_weights:
                config_lib.at_least(weight, 0)
        if not self.motion_spans:
            raise ValueError("motion_spans: expected at least one span")
        for span in self.motion_spans:
            config_lib.at_least(span, 1)
        if self.split == "pretrain":
            config_lib.check_at_least(self, 1, "corpus_videos")
        if self.insert_blocks and not self.init:
            raise ValueError("insert_blocks deepens the backbone of init; without init there "
                             "is none (a fresh tower takes its depth from `model`)")


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
        loop=TrainLoopConfig(steps=1500, log_every=10, sync_every=100),
        optim=OptimConfig(learning_rate=3e-3, warmup_ratio=0.05, lr_floor=0.05),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=1, keep_best=0),
    ))
    batch_size: int = 256
    data_seed: int = 0
    train_split: str = "train_normal"
    eval_split: str = "test"
    sigma: float = 3.0
    score_batch: int = 4096

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "batch_size", "score_batch")
        config_lib.check_at_least(self, 0, "sigma")


@dataclasses.dataclass(frozen=True)
class Stage1Config:
    """Stage 1: the AHD on cached ViT features.

    Attributes:
      train: the engine (steps are micro-batches; `optim.accumulation_steps` of them per
        update; keep-best by `val_score`).
      view: how videos are cut into clips (non-overlapping 16-frame clips by default, so
        every frame is scored once at evaluation; with frame_step > 1, `interleave` keeps
        every frame scored once).
      batch_size: clips per micro-batch.
      target: patch targets from the masks: "area" (anomalous fraction) or "max" (1 where any
        pixel of the patch is anomalous).
      abnormal_weight, focal_gamma: the pixel loss (`models.ahd.pixel_loss`); 1 and 0 are the
        paper's cross-entropy. The defaults (max targets, weight 10, focal 2) came out of
        `experiments/tvad_stage1.py`: with the paper's loss the AHD does not even fit the
        training clips (train micro AUC 0.43) and no heat ever reaches 0.5 (no region).
      abnormal_repeat: clips with abnormal cells appear this many times per epoch
        (oversampling; 1 = none).
      frame_weight: weight of `models.ahd.frame_loss` (each tubelet's warmest cell against
        whether it holds an anomaly) beside the pixel loss; 0 (default): the pixel loss alone.
      rbdc_weight: checkpoint selection by val_score = val_micro_auc + rbdc_weight x val_rbdc
        (validation RBDC of the heatmaps binarized at 0.5).
      train_vision: an upper bound for diagnosis, never the paper's method: the vision tower
        trains with the AHD (on clip frames, no feature cache); the tuned backbone is saved in
        the run folder and the exported model uses it.
    """

    train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=1200, log_every=10, sync_every=50),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.1, lr_floor=1e-5,
                          weight_decay=0.01, accumulation_steps=8),
        checkpoint=CheckpointConfig(every_steps=400, keep_last=1, keep_best=1,
                                    best_metric="val_score", best_mode="max"),
        trainable=("ahd/.*",))
    view: ClipView = ClipView(clip_len=16, clip_stride=16)
    batch_size: int = 4
    target: Literal["area", "max"] = "max"
    abnormal_weight: float = 10.0
    focal_gamma: float = 2.0
    abnormal_repeat: int = 1
    frame_weight: float = 0.0
    rbdc_weight: float = 1.0
    train_vision: bool = False

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "batch_size", "abnormal_repeat")
        config_lib.check_at_least(self, 0, "abnormal_weight", "focal_gamma", "frame_weight",
                                  "rbdc_weight")


# Phase A's engine settings (override each phase's by its path).
_PHASE_A = TrainConfig(
    loop=TrainLoopConfig(steps=160, log_every=10, sync_every=40),
    optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.0, weight_decay=0.0,
                      accumulation_steps=1),
    checkpoint=CheckpointConfig(every_steps=80, keep_last=1, keep_best=1,
                                best_metric="val_loss", best_mode="min"),
    trainable=("rae/.*", "special", "lora/.*"))
# Phase B: three times as long, its last step kept (with half the dialogues swapped the answer
# tokens' val loss says nothing of the judgment the phase learns; docs/studies/tvad_judgment.md)
_PHASE_B = dataclasses.replace(
    _PHASE_A, loop=dataclasses.replace(_PHASE_A.loop, steps=480),
    checkpoint=dataclasses.replace(_PHASE_A.checkpoint, best_metric=""))


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Stage 2: RAE + special tokens + LoRA, phase A (narratives) then B (dialogues).

    Attributes:
      phase_a, phase_b: the engine per phase (A: 160 steps, keep-best by `val_loss`; B: 480
        steps, the last kept; phase B's evaluation also scores the teacher-forced judgment of
        every val video, `val_yes_no_logit_balanced_accuracy` and `val_yes_no_logit_auc`,
        which its `checkpoint.best_metric` may name, with `best_mode=max`).
      view: the whole-video view the decoder sees (16 frames, every 4th).
      batch_size: videos per micro-batch.
      max_text_len: token budget of the dialogue text after the prompts.
      lora_layers_b: phase B adapts only the last k decoder layers (the paper: 4).
      judgment_weight: loss weight of each token of the judgment's answer ("Yes." / "No.")
        against 1 for every other answer token (the paper's: 1; at 1 the small decoder
        answers "No." to every training video: the deciding word is one of ~54 answer tokens
        of an abnormal video's dialogue).
      visual_swap: the fraction of phase B's training dialogues whose visual tokens P_V are
        another training video's, with the loss on the judgment's answer only (the anomaly
        prompts and the answer stay the video's own), so that the answer cannot come from how
        the video looks, only from the heat (the others train every answer). Models without
        anomaly prompts never swap. Not in the paper (the paper's: 0, off); default half.
      judgment_from_swap: with `visual_swap`, the dialogues not swapped train every answer but
        the judgment's, so that the judgment is learned from the heat alone while the wording
        still learns from the video (without swapped dialogues, `visual_swap=0`, nothing to
        do: every dialogue trains every answer). With both (before the mirrors below) T-VAD
        judged unseen videos of the training types at 66% balanced over three seeds, against
        49% without (Table 4 in the README; docs/studies/tvad_judgment.md).
      swap_flip_maps: a swapped dialogue's anomaly maps are also mirrored along each of time,
        height and width with probability 1/2, so that the judgment, trained on those alone,
        learns that heat says "anomaly" wherever and whenever it lies, not where the training
        types happen to occur. Not in the paper; on by default since Table 4 over three
        seeds (open set 61% -> 64% balanced, ahead of w/o AHD in every seed; closed set
        66% -> 64%; docs/studies/tvad_judgment.md).
      The paper's LR is 2e-4 for one epoch on a 7B decoder; the small default decoder and a
      few hundred steps need 1e-3.
      dtype: decoder compute dtype in stage 2 ("bfloat16" on accelerators; float32 on CPU,
        where bf16 matmuls are emulated and slower).
    """

    phase_a: TrainConfig = _PHASE_A
    phase_b: TrainConfig = _PHASE_B
    view: ClipView = ClipView(clip_len=16, clip_stride=1 << 20, frame_step=4, pad_last=False)
    batch_size: int = 4
    max_text_len: int = 160
    lora_layers_b: int = 4
    judgment_weight: float = 4.0
    visual_swap: float = 0.5
    judgment_from_swap: bool = True
    swap_flip_maps: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "batch_size", "max_text_len", "lora_layers_b")
        config_lib.check_at_least(self, 0, "judgment_weight", "visual_swap")
        if self.visual_swap > 1:
            raise ValueError(f"visual_swap: expected a fraction <= 1, got {self.visual_swap!r}")
        config_lib.check_choice(self, "dtype", tuple(DTYPES))


@dataclasses.dataclass(frozen=True)
class TVADJobConfig:
    """`tvad train tvad`, `tvad detect`, `tvad chat` and the T-VAD rows of `tvad demo`.

    Attributes:
      model: the heads and the variant; its prompt vocabulary defaults to the benchmark's
        (its anomaly types and normal behaviours).
      stage1, stage2: the two stages.
      backbone: backbone checkpoint folder (`save_backbone` layout); "" = the shipped default.
      cache_dir: root of the feature cache; "" = <prepared_dir>/features.
      train_split, val_split, eval_split: prepared splits.
      eval_batch: videos per batch at evaluation and detection.
      max_new_tokens: answer budget per dialogue turn.
    """

    model: TVADConfig = TVADConfig(anomalies=ANOMALY_TYPES, normals=NORMAL_BEHAVIOURS)
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    backbone: str = ""
    cache_dir: str = ""
    train_split: str = "train"
    val_split: str = "val"
    eval_split: str = "test"
    eval_batch: int = 8
    max_new_tokens: int = 48

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "eval_batch", "max_new_tokens")


PATTERNS = ("cmam", "itam", "text", "backbone", "none")
TOKEN_SOURCES = ("crop", "region")


@dataclasses.dataclass(frozen=True)
class LocalPatternsJobConfig:
    """The `local` section: paper 003's detector (`tvad train local-patterns`).

    Attributes:
      backbone: the frozen vision tower's folder (empty = T-VAD's, `tvad.backbone`).
      crop_stride, expand: crops every `crop_stride`-th frame (each a 2-frame tubelet; its
        score speaks for the `crop_stride` frames up to it), boxes grown by `expand` x their
        size on each side (paper 0.5).
      token_pool: the crop's patch tokens are average-pooled token_pool x token_pool before
        ITAM reads them (the CLS token kept): 2 turns the shipped tower's 12 x 12 grid into
        6 x 6, which makes ITAM's cross-attention and the stored tokens ~4x smaller on CPU
        (BLIP-2 reads all 257; 1 = all here too).
      tokens: where an object's tower tokens come from. "crop": its grown box cut from
        frames (t-1, t), resized to the tower's input and read alone (the paper's way with
        BLIP-2's ViT); "region": the tower reads the whole video in clips of `region_clip`
        frames and the object's tokens are its last layer's patch grid sampled bilinearly over
        the grown box at the crop path's pooled grid size, the first token sampled at the
        box's centre (in place of a crop's CLS). The shipped tower was pretrained on whole
        frames, aligning patch features pooled under object boxes with their descriptions;
        a crop of an 8-pixel person blown up to 96 pixels is an input it rarely saw.
      region_clip: frames per clip of the whole-video pass (`tokens=region`; pretraining's 8).
      itam: where the frozen ITAM comes from. "backbone": the one pretrained with the
        backbone on its corpus's object crops and their plain descriptions (`<backbone>/itam`,
        made by `tvad pretrain --itam`), as paper 003's default "D. 1" takes BLIP-2's Q-Former
        pretrained on BLIP-2's data; "train": trained in the run on `itam_split` (its "D. 2").
      itam_width / itam_depth / itam_heads / num_queries / text_len: ITAM's H_d, layers,
        heads, N_q and S_l (paper 768 / 6 / 12 / 32 / 32); a pretrained ITAM must have them.
      itam_split: the split whose object crops and plain descriptions train the SMM and,
        with `itam=train`, ITAM (the benchmark's normal training videos, as "D. 2").
      itam_train: the engine section of ITAM's training (BLIP-2's three losses).
      itam_batch: crops per ITAM batch.
      smm: TSGM with the SMM (False: the captioner's caption of every frame, Table 3's "w/o
        SMM"); smm_channels / smm_machines: its O and N_SMM (paper 64 / 3); smm_batch: B_s,
        crops per batch (B_s^2 (crop, question) pairs, eq. 6); smm_yes_no: p("yes") from the
        SMM's output, "softmax" (a two-way softmax over the scaled cosines with Emb("yes") and
        Emb("no"); default: ITAM's embeddings of the two words have cosine 0.9, and eq. 6's
        printed ratio then cannot pass ~0.51, so that SMM learned to answer "no" to
        everything) or "ratio" (eq. 6 as printed, cosines mapped to [0, 1]); smm_train: its
        engine section (learning rate 1e-3, not the paper's 5e-5: a few hundred steps here).
      rm: RM sizes; rm_batch: objects per RM batch; rm_train: its engine section (Adam at a
        constant 1e-3 as the paper; 1200 steps are about its 10 epochs over the default
        build's normal training objects: the run's summary says how many epochs it made).
      pattern: what RM reconstructs beside the motion: "cmam" (G, eq. 1: the full method),
        "itam" (the mean of ITAM's tokens: stage 1 alone), "text" (the caption's sentence
        feature F^T[0] alone), "backbone" (the vision tower's pooled crop feature: no ITAM),
        "none" (motion only).
      motion: append the TME histogram (8 orientation bins of mean motion-vector magnitude).
      cmam_weights: "cosine" (the text), "dot" (eq. 1 as printed) or "softmax".
      train_split / eval_split: RM's normal-only training split; the split eval scores.
      sigma: Gaussian smoothing of frame scores in frames (0 = off; every method of the
        evaluation, frame difference included). 3, as VLAVAD's: chosen on `val` (the default
        run on backbone v5, micro AUC at sigma 0 / 1 / 3 / 6 / 12: 0.584 / 0.595 / 0.608 /
        0.602 / 0.564).
      encode_batch: crops per frozen-tower call (fixed shape; the last batch padded).
      cache_dir: root of the object cache (every split's crops read by the frozen tower, their
        motion histograms and descriptions, one .npz per split, reused by every run and
        evaluation with the same backbone, source files and crop settings); "" =
        <prepared_dir>/objects.
      data_seed: shuffling of the ITAM and RM batches.
    """

    backbone: str = ""
    crop_stride: int = 2
    expand: float = 0.5
    token_pool: int = 2
    tokens: str = "crop"
    region_clip: int = 8
    itam: Literal["backbone", "train"] = "backbone"
    itam_width: int = 128
    itam_depth: int = 2
    itam_heads: int = 4
    num_queries: int = 8
    text_len: int = 32
    itam_split: str = "train_normal"
    itam_train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=600, log_every=10, sync_every=100),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.05,
                          weight_decay=0.05),
        checkpoint=CheckpointConfig(every_steps=300, keep_last=1, keep_best=0))
    itam_batch: int = 64
    smm: bool = True
    smm_channels: int = 64
    smm_machines: int = 3
    smm_batch: int = 32
    smm_yes_no: str = "softmax"
    smm_train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=300, log_every=10, sync_every=100),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.05, lr_floor=0.05),
        checkpoint=CheckpointConfig(every_steps=300, keep_last=1, keep_best=0))
    rm: RMConfig = RMConfig()
    rm_batch: int = 64
    rm_train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=1200, log_every=20, sync_every=200),
        optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.0, lr_floor=1.0,
                          weight_decay=0.0),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=1, keep_best=0))
    pattern: str = "cmam"
    motion: bool = True
    cmam_weights: str = "cosine"
    train_split: str = "train_normal"
    eval_split: str = "test"
    sigma: float = 3.0
    encode_batch: int = 64
    cache_dir: str = ""
    data_seed: int = 0

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "crop_stride", "token_pool", "itam_width",
                                  "itam_depth", "itam_heads", "num_queries", "text_len",
                                  "itam_batch", "smm_channels", "smm_machines", "smm_batch",
                                  "rm_batch", "encode_batch", "region_clip")
        config_lib.check_at_least(self, 0, "expand", "sigma")
        config_lib.check_choice(self, "pattern", PATTERNS)
        config_lib.check_choice(self, "tokens", TOKEN_SOURCES)
        config_lib.check_choice(self, "cmam_weights", WEIGHTS)
        config_lib.check_choice(self, "smm_yes_no", YES_NO_FORMS)
        if self.pattern == "none" and not self.motion:
            raise ValueError("pattern 'none' without motion leaves RM nothing to reconstruct")


@dataclasses.dataclass(frozen=True)
class VLAVADJobConfig:
    """The `vlavad` section: paper 004's detector (`tvad train vlavad`).

    Attributes:
      backbone: the frozen backbone whose decoder answers (empty = T-VAD's, `tvad.backbone`).
      tracks: "sidecar" (the simulator's exact tracks) or "tracker" (`data.tracker`: the
        ByteTrack-style tracker over the simulator's boxes made noisy by `detections`, so the
        pipeline runs as on detector output); tracker: its settings.
      answer_stride: an object is asked about every answer_stride-th frame it is seen; each
        answer speaks for the answer_stride frames up to it and is one step of its S3M
        sequence.
      clip_len: frames of each crop clip (t - clip_len + 1 .. t; pretraining's 8).
      prompts: VLAVAD's pool (`data.object_text.QUESTIONS`) that SPA chooses from; top_k: SPA's
        concentration statistic (the paper does not give k); num_prompts: how many SPA keeps
        (the scores of several add up); skip_saturated: rank prompts whose normal answers
        take at most top_k values (concentration 1 by construction) after the others (not
        in the paper: `models.spa`).
      max_new_tokens: answer budget; vqa_batch: crops per encoder and decoder call.
      predictor: "s3m" (the paper), "transformer" or "rnn" (Table 2's alternatives, same
        width and depth, `models.predictors`); model: its sizes (width D, to which the
        answers' embeddings are mapped linearly; L_p -> L_f steps of answer_stride frames:
        6 -> 2 covers 32 frames of the 64-frame synthetic videos; the paper's 10 -> 2 at
        Ped2's frame rate).
      train: the predictor's engine section; batch_size: windows per batch.
      weight: lambda of A = A_s + lambda A_t (paper 0.1); normalize: min-max per "video"
        (the paper) or over the "split" (`eval.fusion`).
      sigma: Gaussian smoothing of every frame score at evaluation (paper 6 / 6 / 12).
      train_split / eval_split: the normal-only split SPA and S3M learn from; the split eval
        scores.
      data_seed: shuffling of the training windows and the detection noise.
      cache_dir: root of the answer cache (every split's clips answered by the frozen
        backbone, shared by the runs that would ask alike); "" = <prepared_dir>/answers.
    """

    backbone: str = ""
    tracks: Literal["sidecar", "tracker"] = "sidecar"
    detections: DetectionNoise = DetectionNoise()
    tracker: TrackerConfig = TrackerConfig()
    answer_stride: int = 4
    clip_len: int = 8
    prompts: tuple[str, ...] = ("pose", "behaviour", "appearance")
    top_k: int = 5
    num_prompts: int = 1
    skip_saturated: bool = True
    max_new_tokens: int = 16
    vqa_batch: int = 64
    predictor: str = "s3m"
    model: S3MConfig = S3MConfig(width=64, state_size=32, num_layers=3, past=6, future=2)
    train: TrainConfig = TrainConfig(
        loop=TrainLoopConfig(steps=600, log_every=20, sync_every=100),
        optim=OptimConfig(learning_rate=3e-3, warmup_ratio=0.05, lr_floor=0.05),
        checkpoint=CheckpointConfig(every_steps=600, keep_last=1, keep_best=0))
    batch_size: int = 128
    weight: float = 0.1
    normalize: str = "video"
    sigma: float = 3.0
    train_split: str = "train_normal"
    eval_split: str = "test"
    data_seed: int = 0
    cache_dir: str = ""

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "answer_stride", "clip_len", "top_k",
                                  "num_prompts", "max_new_tokens", "vqa_batch", "batch_size")
        config_lib.check_at_least(self, 0, "weight", "sigma")
        config_lib.check_choice(self, "predictor", PREDICTORS)
        config_lib.check_choice(self, "normalize", NORMALIZATIONS)
        unknown = sorted(set(self.prompts) - set(QUESTIONS))
        if unknown or not self.prompts:
            raise ValueError(f"prompts must be a non-empty subset of {sorted(QUESTIONS)}, "
                             f"got {list(self.prompts)}")
        if self.num_prompts > len(self.prompts):
            raise ValueError(f"num_prompts {self.num_prompts} > {len(self.prompts)} prompts")


# The detectors `tvad demo` can run beside its own (`Config.demo_detectors`): paper 003's and
# paper 004's.
DEMO_DETECTORS = ("local-patterns", "vlavad")


@dataclasses.dataclass(frozen=True)
class Config:
    """The root of every config: one section per job and the data it runs on, the runs'
    folder, the attention implementation every model uses (`models.attention`: "auto"
    picks the platform's fastest), how linear layers differentiate their kernels
    (`models.layers.WEIGHT_GRADS`: "autodiff" reproduces runs made before "direct") and the
    detectors `tvad demo` runs beside frame difference, S3M and T-VAD (`DEMO_DETECTORS`:
    paper 003's local patterns by default, about 5 minutes of the demo here; paper 004's
    VLAVAD on request, about 25 more, most of it the frozen tower on crop clips)."""

    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    loader: LoaderConfig = LoaderConfig()
    s3m: S3MJobConfig = S3MJobConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tvad: TVADJobConfig = TVADJobConfig()
    local: LocalPatternsJobConfig = LocalPatternsJobConfig()
    vlavad: VLAVADJobConfig = VLAVADJobConfig()
    runs_dir: str = "runs"
    attention: str = "auto"
    weight_grad: str = "direct"
    demo_detectors: tuple[str, ...] = ("local-patterns",)

    def __post_init__(self):
        config_lib.check_choice(self, "attention", IMPLEMENTATIONS)
        config_lib.check_choice(self, "weight_grad", WEIGHT_GRADS)
        unknown = sorted(set(self.demo_detectors) - set(DEMO_DETECTORS))
        if unknown:
            raise ValueError(f"demo_detectors: expected some of {list(DEMO_DETECTORS)}, "
                             f"got {unknown}")

    @property
    def prepare_source(self) -> str:
        return self.prepare.source or self.synth.out_dir

    @property
    def prepared_dir(self) -> str:
        return self.prepare.out_dir or f"{self.prepare_source}/prepared"


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What to plan: the backbone's shapes, the clip, the sequence and the engine configs.

    Attributes:
      backbone: "llava15_7b" (LLaVA-1.5-7B: CLIP ViT-L/14-336 + Vicuna-7B, CLIP-L text width
        768 for the class features), "qwen25vl_7b" (Qwen2.5-VL-7B at 336 px,
        `models.qwen_backbone`; E_t = decoder layer 14), "shipped" (the shipped default
        backbone's config, read from its config.json; no weights loaded) or "tiny"
        (`models.configs.tiny_backbone`).
      frames: frames per clip; T' = frames / tubelet tubelets.
      frame_size: Qwen2.5-VL's frames, (side,) or (height, width) in pixels, multiples of
        28 (`tvad backbone import --image-size`); () = 336 x 336. The LLaVA family's ViT
        has its own size.
      prefix_len: ids of the chat format before the visual block, part of max_seq_len
        (Qwen2.5-VL-Instruct's ChatML: 14, the default system prompt and the user turn's
        opening; 0 for plain turns).
      token_pool: visual tokens per tubelet = N / token_pool^2 (LLaVA: 1; 2 keeps 144 of 576).
      max_seq_len: decoder sequence budget (visual + anomaly prompts + text) in stage 2.
      text_len: text tokens in stage 2; 0 = whatever fills max_seq_len.
      batch_per_device: micro-batch per data-parallel device (examples per step per
        data x fsdp slot; the tensor axis splits the model, not the batch).
      global_batch: examples per train step; 0 = batch_per_device x data x fsdp.
      encoder_batch_per_device: clips per data-parallel device in the encoder pass.
      vision_dtype: compute dtype of the vision tower in the encoder pass.
      remat: rematerialize each decoder layer in stage 2's backward pass.
      remat_policy: what a rematerialized layer keeps ("full": nothing, "dots": its matmul
        outputs; `models.configs.DecoderConfig.remat_policy`).
      phase: the stage-2 phase: "A" (LoRA on every layer) or "B" (the last
        `job.stage2.lora_layers_b`).
      job: the T-VAD job config: heads (`job.model`), the engine configs (optimizer,
        accumulation, trainable patterns) of `job.stage1.train` and `job.stage2.phase_a|b`,
        and the stage-2 decoder compute dtype `job.stage2.dtype`.
      runs_dir: where `tvad plan` writes its run folder.
    """

    backbone: str = "llava15_7b"
    frames: int = 16
    frame_size: tuple[int, ...] = ()
    prefix_len: int = 0
    token_pool: int = 2
    max_seq_len: int = 2048
    text_len: int = 0
    batch_per_device: int = 1
    global_batch: int = 0
    encoder_batch_per_device: int = 1
    vision_dtype: str = "bfloat16"
    remat: bool = True
    remat_policy: str = "full"
    phase: Literal["A", "B"] = "A"
    job: TVADJobConfig = TVADJobConfig()
    runs_dir: str = "runs"

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "frames", "batch_per_device",
                                  "encoder_batch_per_device")
        config_lib.check_at_least(self, 0, "token_pool", "max_seq_len", "text_len",
                                  "global_batch", "prefix_len")
        if len(self.frame_size) > 2 or any(s < 1 for s in self.frame_size):
            raise ValueError(f"frame_size: expected (side,) or (height, width), got "
                             f"{self.frame_size}")
        config_lib.check_choice(self, "vision_dtype", tuple(DTYPES))
        config_lib.check_choice(self, "remat_policy", tuple(REMAT_POLICIES))
