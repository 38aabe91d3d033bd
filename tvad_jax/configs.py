"""The named configs: every registered starting point of a run.

    tvad <command> --config NAME [key=value ...]     e.g.  synth.num_frames=32

The tree itself (`Config` and its sections) is `tvad_jax.jobs.config`; this module only
registers named instances of it (`tvad configs` lists them).
"""
from __future__ import annotations

import dataclasses

from tvad_jax.config import register
from tvad_jax.data.pipeline import LoaderConfig
from tvad_jax.data.synthetic.spec import SynthConfig
from tvad_jax.jobs.config import (Config, LocalPatternsJobConfig, PlanConfig, PrepareConfig,
                                  PretrainConfig, S3MJobConfig, Stage1Config, Stage2Config,
                                  TVADJobConfig, VLAVADJobConfig)
from tvad_jax.models.local_patterns import RMConfig
from tvad_jax.models.s3m import S3MConfig
from tvad_jax.models.tvad import ClipView
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import TrainConfig, TrainLoopConfig
from tvad_jax.train.optim import OptimConfig


@register("default")
def default() -> Config:
    """The embedded default: the synthetic benchmark at 96x96, 64 frames, 200 videos."""
    return Config()


@register("pretrain-quick")
def pretrain_quick() -> Config:
    """The default with a ten-minute backbone pretraining (`tvad pretrain --config
    pretrain-quick`): the shipped recipe for 100 steps instead of 1400, on the benchmark's
    `train` split instead of the 1440-video corpus (whose rendering and preparation alone take
    14 minutes)."""
    cfg = Config()
    train = cfg.pretrain.train
    pretrain = dataclasses.replace(
        cfg.pretrain, split="train",
        train=dataclasses.replace(train, loop=dataclasses.replace(train.loop, steps=100)))
    return dataclasses.replace(cfg, pretrain=pretrain)


@register("tiny")
def tiny() -> Config:
    """A few short videos, for tests and smoke runs."""
    return Config(
        synth=SynthConfig(out_dir="data/synthetic-tiny", height=48, width=48, num_frames=32,
                          videos_train=4, videos_val=2, videos_test=4, videos_train_normal=2,
                          videos_test_seen=2,
                          min_anomaly_frames=6, workers=1),
        prepare=PrepareConfig(height=48, width=48),
        loader=LoaderConfig(clip_len=8, clip_stride=8, batch_size=2),
        s3m=S3MJobConfig(
            model=S3MConfig(width=16, state_size=8, num_layers=2, past=4, future=2),
            train=TrainConfig(
                loop=TrainLoopConfig(steps=40, log_every=1, sync_every=10, progress=False),
                optim=OptimConfig(learning_rate=1e-2, warmup_ratio=0.1),
                checkpoint=CheckpointConfig(every_steps=0, keep_last=1, keep_best=0)),
            batch_size=32, sigma=1.0, score_batch=256),
        pretrain=PretrainConfig(
            model="tiny", split="train", batch_size=4, clip_stride=8, vocab_size=300, eval_clips=8,
            train=TrainConfig(
                loop=TrainLoopConfig(steps=6, log_every=1, sync_every=3, progress=False),
                optim=OptimConfig(learning_rate=3e-3, warmup_ratio=0.1),
                checkpoint=CheckpointConfig(every_steps=0, keep_last=1, keep_best=0))),
        tvad=TVADJobConfig(
            model=dataclasses.replace(
                TVADJobConfig().model, lora_rank=4,
                rae=dataclasses.replace(TVADJobConfig().model.rae, hidden=8, num_base=2)),
            stage1=Stage1Config(train=_tiny_train(6, "val_score", "max", accumulate=2),
                                view=ClipView(clip_len=8, clip_stride=8), batch_size=2),
            stage2=Stage2Config(phase_a=_tiny_train(4, "val_loss", "min"),
                                phase_b=_tiny_train(4, "val_loss", "min"),
                                view=ClipView(clip_len=8, clip_stride=1 << 20, frame_step=4,
                                              pad_last=False),
                                batch_size=2, max_text_len=96),
            eval_batch=4, max_new_tokens=12),
        local=LocalPatternsJobConfig(      # a random tiny backbone has no pretrained ITAM
            itam="train", itam_width=16, itam_depth=2, itam_heads=2, num_queries=4, text_len=24,
            itam_train=_tiny_train(4, "", ""), itam_batch=8, smm_channels=8, smm_batch=4,
            smm_train=_tiny_train(4, "", ""), rm=RMConfig(hidden=16),
            rm_train=_tiny_train(6, "", ""), rm_batch=8, encode_batch=16),
        vlavad=VLAVADJobConfig(
            answer_stride=8, clip_len=4, top_k=2, max_new_tokens=4, vqa_batch=32,
            model=S3MConfig(width=16, state_size=8, num_layers=2, past=2, future=1),
            train=_tiny_train(6, "", ""), batch_size=8, sigma=1.0),
    )


def _tiny_train(steps: int, metric: str, mode: str, accumulate: int = 1) -> TrainConfig:
    """A few-step engine config with keep-best by `metric` (tests; "" = every param trains,
    no best kept)."""
    trainable = {"val_loss": ("rae/.*", "special", "lora/.*"), "val_score": ("ahd/.*",)}
    return TrainConfig(
        loop=TrainLoopConfig(steps=steps, log_every=1, sync_every=2, progress=False),
        optim=OptimConfig(learning_rate=1e-2, warmup_ratio=0.1, accumulation_steps=accumulate),
        checkpoint=CheckpointConfig(every_steps=2, keep_last=1, keep_best=1 if metric else 0,
                                    best_metric=metric, best_mode=mode or "min",
                                    async_save=False),
        trainable=trainable.get(metric, (".*",)))


@register("ubnormal")
def ubnormal() -> Config:
    """UBnormal from a local copy: set prepare.source and prepare.split_files."""
    return Config(prepare=PrepareConfig(layout="ubnormal", height=224, width=224,
                                        splits=("train", "val", "test"), annotate=False))


@register("shanghaitech")
def shanghaitech() -> Config:
    """ShanghaiTech Campus from a local copy: set prepare.source (and prepare.tracks_dir)."""
    return Config(prepare=PrepareConfig(layout="shanghaitech", height=224, width=224,
                                        splits=("train", "test"), annotate=False))


# ---------------------------------------------------------------------------------------------
# `tvad plan` configs (kind "plan")

def _with_optim(train: TrainConfig, **optim) -> TrainConfig:
    return dataclasses.replace(train, optim=dataclasses.replace(train.optim, **optim))


def _paper_job() -> TVADJobConfig:
    """The paper's stage-2 engine: bf16, LR 2e-4, 8 accumulation steps."""
    job = TVADJobConfig()
    s2 = job.stage2
    return dataclasses.replace(job, stage2=dataclasses.replace(
        s2, dtype="bfloat16",
        phase_a=_with_optim(s2.phase_a, learning_rate=2e-4, accumulation_steps=8),
        phase_b=_with_optim(s2.phase_b, learning_rate=2e-4, accumulation_steps=8)))


@register("llava7b", kind="plan")
def llava7b_plan() -> PlanConfig:
    """The paper's real scale: LLaVA-1.5-7B, 16-frame clips (T' = 8), 4 AHD layers, 2 x 2
    token pooling (144 visual tokens per tubelet, 1152 per clip), sequences of 2048, micro-batch
    1 per device with 8 accumulation steps, stage-2 LR 2e-4, bf16 compute, remat."""
    return PlanConfig(job=_paper_job())


@register("qwen25vl7b", kind="plan")
def qwen25vl7b_plan() -> PlanConfig:
    """The paper's backbone: Qwen2.5-VL-7B (vision 32 blocks x 1280, decoder 28 x 3584, 4 KV
    heads, vocabulary 152,064), 336 px frames (24 x 24 patches for the AHD's blocks
    {1, 8, 16, 32}; 144 merged tokens per tubelet, 1152 per 16-frame clip; `frame_size=252,448`
    for 16:9 video at the same count), E_t from decoder layer 14, the Instruct model's ChatML
    prefix (14 ids: `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
    <|im_start|>user\n`); otherwise `llava7b`'s engine (sequences of 2048, micro-batch 1 + 8
    accumulation steps, bf16 stage 2 with remat)."""
    return PlanConfig(backbone="qwen25vl_7b", prefix_len=14, job=_paper_job())


@register("shipped", kind="plan")
def shipped_plan() -> PlanConfig:
    """The shipped default backbone's shapes (hidden [4, 8, 65, 128] for 16 frames at 96 px),
    float32, no remat, stage 2 text of the shipped `max_text_len`."""
    job = TVADJobConfig()
    return PlanConfig(backbone="shipped", token_pool=0, max_seq_len=0,
                      text_len=job.stage2.max_text_len, vision_dtype="float32", remat=False,
                      job=job)


@register("tiny", kind="plan")
def tiny_plan() -> PlanConfig:
    """A seconds-to-compile plan for tests: `models.configs.tiny_backbone` (32 px frames of 8 px
    patches, decoder 32 x 2), 8-frame clips, 8 text tokens."""
    return PlanConfig(backbone="tiny", frames=8, token_pool=2, max_seq_len=0, text_len=8,
                      vision_dtype="float32", remat=False)
