"""Our own backbone checkpoints in Hugging Face directory layout, and the shipped default.

A directory holds `config.json` (`model_type: "tvad_backbone"` and the `BackboneConfig`),
`model.safetensors` (our param paths joined with "/", stored as float16 to keep the shipped
default small; loaded back as float32) and the tokenizer files. `load_backbone` checks every
path and shape against the model built from the config.

The shipped default lives in `tvad_jax/assets/backbone` and is what every default command
loads; `tvad pretrain --ship` re-creates it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from tvad_jax.models.configs import BackboneConfig, DecoderConfig, TextConfig, VisionConfig
from tvad_jax.models.convert import CheckpointError, check_shapes, read_config, read_weights
from tvad_jax.models.tokenizer import load_tokenizer
from tvad_jax.models.vlm import abstract_params

MODEL_TYPE = "tvad_backbone"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "backbone"
_TOWERS = {"vision": VisionConfig, "text": TextConfig, "decoder": DecoderConfig}


def config_to_dict(cfg: BackboneConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict) -> BackboneConfig:
    """Inverse of `config_to_dict` (lists become tuples, towers become their dataclasses)."""
    fields = {}
    for key, value in data.items():
        if key in _TOWERS and value is not None:
            value = _TOWERS[key](**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in value.items()})
        fields[key] = value
    return BackboneConfig(**fields)


def save_backbone(directory: str | Path, cfg: BackboneConfig, params: Any, tokenizer=None,
                  extra: dict | None = None) -> Path:
    """Write config, weights (float16) and tokenizer; the directory appears complete or not
    at all (written beside it, then renamed)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_tree(tmp / "model.safetensors", params, np.float16)
    config = {"model_type": MODEL_TYPE, "backbone": config_to_dict(cfg), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_backbone(directory: str | Path = SHIPPED_DIR, with_tokenizer: bool = True):
    """(config, float32 params, tokenizer or None) of a `save_backbone` directory."""

    config = read_config(directory)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{directory}: model_type {config.get('model_type')!r} is not "
                              f"{MODEL_TYPE!r} (load Hugging Face models with vlm.load)")
    cfg = config_from_dict(config["backbone"])
    flat = {k: v.astype(np.float32) for k, v in read_weights(directory).items()}
    params = traverse_util.unflatten_dict(flat, sep="/")
    check_shapes(params, abstract_params(cfg), source=str(directory))
    tokenizer = load_tokenizer(directory) if with_tokenizer else None
    return cfg, params, tokenizer


def write_tree(path: str | Path, tree: Any, dtype=np.float32) -> Path:
    """A nested dict of arrays -> one safetensors file, keys the "/"-joined paths."""

    flat = traverse_util.flatten_dict(_to_numpy(tree), sep="/")
    save_file({k: np.array(v, dtype, order="C") for k, v in flat.items()}, str(path))
    return Path(path)


def read_tree(path: str | Path) -> dict:
    """Inverse of `write_tree` (float32 arrays)."""

    try:
        flat = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as err:   # missing, truncated, damaged
        raise CheckpointError(f"{path}: cannot read safetensors ({err})") from None
    return traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in flat.items()},
                                        sep="/")


def _to_numpy(tree: Any) -> Any:

    return jax.tree.map(np.asarray, nn.meta.unbox(tree))


def checkpoint_digest(directory: str | Path) -> str:
    """Identity of a backbone checkpoint folder: the digest of its config and weights."""
    h = hashlib.sha256()
    for path in sorted(Path(directory).glob("*")):
        if path.suffix in (".json", ".safetensors", ".msgpack"):
            h.update(path.name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:20]
