"""Our own backbone checkpoints in Hugging Face directory layout, and the shipped default.

A directory holds `config.json` (`model_type: "tvad_backbone"`, the backbone `family` when it
is not "llava" (`models.family`) and the family's config: `BackboneConfig` or
`QwenBackboneConfig`),
`model.safetensors` (our param paths joined with "/", stored as float16 to keep the shipped
default small; loaded back as float32) and the tokenizer files. `load_backbone` checks every
path and shape against the model built from the config. A folder may also hold `itam/`, an
ITAM (paper 003's Q-Former) pretrained on the backbone's object tokens (`save_itam`).

The shipped default lives in `tvad_jax/assets/backbone` and is what every default command
loads; `tvad pretrain --ship` re-creates it.
"""
from __future__ import annotations

import contextlib
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

from tvad_jax.models import qwen_backbone
from tvad_jax.models.configs import BackboneConfig, DecoderConfig, TextConfig, VisionConfig
from tvad_jax.models.convert import CheckpointError, check_shapes, read_config, read_weights
from tvad_jax.models.family import FAMILIES, family as family_of
from tvad_jax.models.itam import ITAMConfig, init_params
from tvad_jax.models.qwen_backbone import QwenBackboneConfig
from tvad_jax.models.tokenizer import load_tokenizer

MODEL_TYPE = "tvad_backbone"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "backbone"
TEXT_TOKENIZER = "text_tokenizer"
_TOWERS = {"vision": VisionConfig, "text": TextConfig, "decoder": DecoderConfig}


def config_to_dict(cfg: BackboneConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict, family: str = "llava") -> BackboneConfig | QwenBackboneConfig:
    """Inverse of `config_to_dict` (lists become tuples, towers become their dataclasses)."""
    if family == qwen_backbone.FAMILY:
        return qwen_backbone.config_from_dict(data)
    fields = {}
    for key, value in data.items():
        if key in _TOWERS and value is not None:
            value = _TOWERS[key](**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in value.items()})
        fields[key] = value
    return BackboneConfig(**fields)


def save_backbone(directory: str | Path, cfg: BackboneConfig | QwenBackboneConfig, params: Any,
                  tokenizer=None, extra: dict | None = None, text_tokenizer=None) -> Path:
    """Write config, weights (float16), tokenizer and, where the text tower has its own, the
    text tokenizer (`text_tokenizer/`); the directory appears complete or not at all (written
    beside it, then renamed)."""
    name = family_of(cfg).name
    config = {"model_type": MODEL_TYPE, **({"family": name} if name != "llava" else {}),
              "backbone": config_to_dict(cfg), **(extra or {})}
    with _published(Path(directory), config, params) as tmp:
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if text_tokenizer is not None:
            text_tokenizer.save_pretrained(str(tmp / TEXT_TOKENIZER))
    return Path(directory)


@contextlib.contextmanager
def _published(directory: Path, config: dict, params: Any):
    """A folder with config.json and float16 model.safetensors, filled further by the caller
    in the block, that appears at `directory` complete or not at all (written beside it,
    then renamed over it)."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_tree(tmp / "model.safetensors", params, np.float16)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    yield tmp
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def load_backbone(directory: str | Path = SHIPPED_DIR, with_tokenizer: bool = True):
    """(config, float32 params, tokenizer or None) of a `save_backbone` directory; a bad
    config or weights file is a CheckpointError naming it."""

    config = read_config(directory)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{directory}: model_type {config.get('model_type')!r} is not "
                              f"{MODEL_TYPE!r} (load Hugging Face models with vlm.load)")
    name = config.get("family", "llava")
    if name not in FAMILIES:
        raise CheckpointError(f"{directory}/config.json: family {name!r} is not one of "
                              f"{sorted(FAMILIES)}")
    try:
        cfg = config_from_dict(config["backbone"], name)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{directory}/config.json: not a {name} backbone config "
                              f"({err})") from None
    flat = {k: v.astype(np.float32) for k, v in read_weights(directory).items()}
    params = traverse_util.unflatten_dict(flat, sep="/")
    check_shapes(params, FAMILIES[name].abstract_params(cfg), source=str(directory))
    tokenizer = load_tokenizer(directory) if with_tokenizer else None
    return cfg, params, tokenizer


ITAM_DIR, ITAM_TYPE = "itam", "tvad_itam"


def save_itam(backbone_dir: str | Path, cfg: ITAMConfig, params: Any, tokens: str = "crop"
              ) -> Path:
    """Write a pretrained ITAM (paper 003's Q-Former) into `<backbone_dir>/itam`: config,
    float16 weights and which of the backbone's object tokens it was trained on (`tokens`, as
    `local.tokens`), complete or not at all (written beside it, then renamed). It reads the
    backbone's tokens and its tokenizer, so it lives in the backbone's folder (outside
    `checkpoint_digest`, which covers the folder's top-level files only)."""
    directory = Path(backbone_dir) / ITAM_DIR
    with _published(directory, {"model_type": ITAM_TYPE, "itam": dataclasses.asdict(cfg),
                                "tokens": tokens}, params):
        pass
    return directory


def itam_tokens(backbone_dir: str | Path) -> str:
    """The object tokens the backbone's ITAM was trained on (`save_itam`'s `tokens`); "crop"
    for one saved before the choice existed, which read crops."""
    return read_config(Path(backbone_dir) / ITAM_DIR).get("tokens", "crop")


def load_itam(backbone_dir: str | Path) -> tuple[ITAMConfig, dict]:
    """(config, float32 params) of the ITAM `save_itam` wrote into a backbone folder; a missing
    or bad file is a CheckpointError naming it."""
    directory = Path(backbone_dir) / ITAM_DIR
    config = read_config(directory)
    if config.get("model_type") != ITAM_TYPE:
        raise CheckpointError(f"{directory}/config.json: model_type "
                              f"{config.get('model_type')!r} is not {ITAM_TYPE!r}")
    try:
        cfg = ITAMConfig(**config["itam"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{directory}/config.json: not an ITAM config ({err})") from None
    params = read_tree(directory / "model.safetensors")
    check_shapes(params, jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))),
                 source=str(directory))
    return cfg, params


def load_text_tokenizer(directory: str | Path):
    """The text tower's own tokenizer of a backbone folder, or None (it shares the
    decoder's)."""
    path = Path(directory) / TEXT_TOKENIZER
    return load_tokenizer(path) if path.is_dir() else None


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
