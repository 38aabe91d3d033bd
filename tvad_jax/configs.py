"""The top-level config tree and the registry of named configs.

    tvad <command> --config NAME [key=value ...]     e.g.  synth.num_frames=32

Later stages (models, training) add their sections to `Config`.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from tvad_jax.config import register
from tvad_jax.data.pipeline import LoaderConfig
from tvad_jax.data.synthetic.spec import SynthConfig
from tvad_jax.models.s3m import S3MConfig
from tvad_jax.stages.pretrain import PretrainConfig
from tvad_jax.stages.s3m import S3MJobConfig
from tvad_jax.models.rae import RAEConfig
from tvad_jax.models.tvad import TVADConfig
from tvad_jax.stages.features import ClipView
from tvad_jax.stages.tvad import Stage1Config, Stage2Config, TVADJobConfig
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
    splits: tuple[str, ...] = ("train", "val", "test", "train_normal", "test_seen")
    split_files: str = ""       # UBnormal: split=file1+file2;split=... (official name lists)
    tracks_dir: str = ""        # ShanghaiTech: folder of community track files
    skip_bad: bool = False
    annotate: bool = True       # write the text annotations (needs synthetic sidecars)


@dataclasses.dataclass(frozen=True)
class Config:
    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    loader: LoaderConfig = LoaderConfig()
    s3m: S3MJobConfig = S3MJobConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tvad: TVADJobConfig = TVADJobConfig()
    runs_dir: str = "runs"

    @property
    def prepare_source(self) -> str:
        return self.prepare.source or self.synth.out_dir

    @property
    def prepared_dir(self) -> str:
        return self.prepare.out_dir or f"{self.prepare_source}/prepared"


@register("default")
def default() -> Config:
    """The embedded default: the synthetic benchmark at 96x96, 64 frames, 200 videos."""
    return Config()


@register("pretrain-quick")
def pretrain_quick() -> Config:
    """The default with a ten-minute backbone pretraining (`tvad pretrain --config
    pretrain-quick`): the shipped recipe for 100 steps instead of 800."""
    cfg = Config()
    train = cfg.pretrain.train
    return dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, train=(
        dataclasses.replace(train, loop=dataclasses.replace(train.loop, steps=100)))))


@register("tiny")
def tiny() -> Config:
    """A few short videos, for tests and smoke runs."""
    return Config(
        synth=SynthConfig(out_dir="data/synthetic-tiny", height=48, width=48, num_frames=32,
                          videos_train=4, videos_val=2, videos_test=4, videos_train_normal=2, videos_test_seen=2,
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
            model="tiny", batch_size=4, clip_stride=8, vocab_size=300, eval_clips=8,
            train=TrainConfig(
                loop=TrainLoopConfig(steps=6, log_every=1, sync_every=3, progress=False),
                optim=OptimConfig(learning_rate=3e-3, warmup_ratio=0.1),
                checkpoint=CheckpointConfig(every_steps=0, keep_last=1, keep_best=0))),
        tvad=TVADJobConfig(
            model=TVADConfig(rae=RAEConfig(hidden=8, num_base=2), lora_rank=4),
            stage1=Stage1Config(train=_tiny_train(6, "val_micro_auc", "max", accumulate=2),
                                view=ClipView(clip_len=8, clip_stride=8), batch_size=2),
            stage2=Stage2Config(phase_a=_tiny_train(4, "val_loss", "min"),
                                phase_b=_tiny_train(4, "val_loss", "min"),
                                view=ClipView(clip_len=8, clip_stride=1 << 20, frame_step=4,
                                              pad_last=False),
                                batch_size=2, max_text_len=96),
            eval_batch=4, max_new_tokens=12),
    )


def _tiny_train(steps: int, metric: str, mode: str, accumulate: int = 1) -> TrainConfig:
    """A few-step engine config with keep-best by `metric` (tests)."""
    return TrainConfig(
        loop=TrainLoopConfig(steps=steps, log_every=1, sync_every=2, progress=False),
        optim=OptimConfig(learning_rate=1e-2, warmup_ratio=0.1, accumulation_steps=accumulate),
        checkpoint=CheckpointConfig(every_steps=2, keep_last=1, keep_best=1, best_metric=metric,
                                    best_mode=mode, async_save=False),
        trainable=("rae/.*", "special", "lora/.*") if metric == "val_loss" else ("ahd/.*",))


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
