"""A tiny random backbone (with a tokenizer trained on the tiny benchmark's annotations) for
the T-VAD stage tests: the shipped default is sized for 96 px frames."""
from __future__ import annotations

from pathlib import Path

import jax

from tvad_jax.data.pipeline import find_builder_dir
from tvad_jax.models import backbone_io
from tvad_jax.models.tokenizer import annotation_texts, train_tokenizer
from tvad_jax.models.vlm import init_params
from tvad_jax.stages.pretrain import PretrainConfig, backbone_config


def tiny_backbone_dir(cfg, directory: Path) -> Path:
    """Write a random tiny backbone for `cfg`'s prepared data into `directory`."""
    annotations = sorted((find_builder_dir(cfg.prepared_dir) / "annotations").glob("*.jsonl"))
    tokenizer = train_tokenizer(list(annotation_texts(annotations)), vocab_size=400)
    bcfg = backbone_config(PretrainConfig(model="tiny"), len(tokenizer), cfg.prepare.height)
    params = init_params(bcfg, jax.random.key(0))
    return backbone_io.save_backbone(directory, bcfg, params, tokenizer)
