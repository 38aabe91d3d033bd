"""Hugging Face checkpoint directories -> our params, by explicit key tables.

A table is a list of `Rule`s: our param path <- their key, plus a hook that transforms the
array (transpose a PyTorch Linear, reshape heads, ...). A key containing `{layer}` is read for
every layer and stacked on a new leading axis, which is how `nn.scan`ned layers store params.
Every key of the checkpoint must be claimed by a rule (or explicitly ignored) and every rule
must find its key: anything else is a `CheckpointError` listing the keys.

    weights = read_weights(directory)                # {hf_key: np.ndarray}
    params = apply_rules(rules, weights, num_layers=12, ignore=(r"\\.position_ids$",))
    check_shapes(params, jax.eval_shape(model.init, ...)["params"])

Checkpoint files understood: `model.safetensors`, sharded `model-*.safetensors` with
`model.safetensors.index.json` (PyTorch layout: Linear weights are [out, in]), and
`flax_model.msgpack` (keys joined with "."). No torch needed.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import flax.linen as nn
import numpy as np
from flax import serialization, traverse_util
from safetensors.numpy import load_file, save_file

from tvad_jax.errors import InputError

Hook = Callable[[np.ndarray], np.ndarray]


class CheckpointError(InputError):
    """A checkpoint directory that cannot be loaded; the message names the file and keys."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """`ours` (a "/"-separated params path) <- `theirs` (a checkpoint key, maybe with
    `{layer}`), transformed by `hook`."""

    ours: str
    theirs: str
    hook: Hook | None = None


# ------------------------------------------------------------------ hooks
def transpose(x: np.ndarray) -> np.ndarray:
    """PyTorch Linear [out, in] -> Flax Dense kernel [in, out]."""
    return np.ascontiguousarray(x.T)


def conv_to_hwio(x: np.ndarray) -> np.ndarray:
    """PyTorch Conv2d [O, I, H, W] -> Flax Conv [H, W, I, O]."""
    return np.ascontiguousarray(np.transpose(x, (2, 3, 1, 0)))


def chain(*hooks: Hook) -> Hook:
    """Apply hooks left to right."""

    def run(x: np.ndarray) -> np.ndarray:
        for hook in hooks:
            x = hook(x)
        return x

    return run


def reshape(*shape: int) -> Hook:
    return lambda x: np.reshape(x, shape)


def inflate(taps: int) -> Hook:
    """[...] -> [taps, ...], each tap x / taps: a 2-D patch kernel becomes a temporal one whose
    response to `taps` identical frames equals the 2-D response."""
    return lambda x: np.repeat(np.asarray(x)[None] / taps, taps, axis=0)


def astype(dtype) -> Hook:
    """Cast (e.g. float16 / bfloat16 checkpoints to float32 params)."""
    return lambda x: np.asarray(x).astype(dtype)


# ------------------------------------------------------------------ reading
def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def read_weights(directory: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as numpy arrays keyed by their names."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return _read_safetensors([directory / f for f in files])
    if (directory / "model.safetensors").is_file():
        return _read_safetensors([directory / "model.safetensors"])
    if (directory / "flax_model.msgpack").is_file():
        return _read_msgpack(directory / "flax_model.msgpack")
    raise CheckpointError(f"{directory}: no model.safetensors, sharded safetensors index or "
                          "flax_model.msgpack")


def _read_safetensors(paths: Iterable[Path]) -> dict[str, np.ndarray]:

    weights = {}
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the index but missing")
        try:
            weights.update(load_file(str(path)))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from err
    return weights


def _read_msgpack(path: Path) -> dict[str, np.ndarray]:

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several types
        raise CheckpointError(f"{path}: unreadable msgpack file ({err})") from err
    return {".".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


# ------------------------------------------------------------------ mapping
def apply_rules(rules: Iterable[Rule], weights: dict[str, np.ndarray], num_layers: int = 0,
                ignore: Iterable[str] = (), source: str = "checkpoint") -> dict:
    """Build our nested params dict from `weights`; CheckpointError lists missing keys and
    keys no rule claims (patterns in `ignore` are regexes of keys to skip silently)."""
    flat, used, missing = {}, set(), []
    for rule in rules:
        keys = ([rule.theirs.format(layer=i) for i in range(num_layers)]
                if "{layer}" in rule.theirs else [rule.theirs])
        absent = [k for k in keys if k not in weights]
        used.update(k for k in keys if k in weights)
        if absent:
            missing += absent
            continue
        arrays = [rule.hook(weights[k]) if rule.hook else weights[k] for k in keys]
        shapes = {tuple(np.shape(a)) for a in arrays}
        if len(shapes) > 1:
            raise CheckpointError(f"{source}: layers of {rule.theirs} differ in shape: "
                                  + ", ".join(f"{k} {tuple(np.shape(weights[k]))}"
                                              for k in keys))
        flat[tuple(rule.ours.split("/"))] = np.stack(arrays) if "{layer}" in rule.theirs \
            else arrays[0]
    skip = [re.compile(p) for p in ignore]
    unknown = sorted(k for k in weights if k not in used and not any(p.search(k) for p in skip))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}"
                        + (" ..." if len(missing) > 20 else ""))
    if unknown:
        problems.append(f"unknown keys ({len(unknown)}): {', '.join(unknown[:20])}"
                        + (" ..." if len(unknown) > 20 else ""))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))

    return traverse_util.unflatten_dict(flat)


def check_shapes(params: Any, expected: Any, source: str = "checkpoint") -> None:
    """Compare a params tree with the expected one (e.g. from `jax.eval_shape`); the error
    lists every path whose shape differs or that exists on one side only."""

    got = traverse_util.flatten_dict(_unbox(params), sep="/")
    want = traverse_util.flatten_dict(_unbox(expected), sep="/")
    problems = [f"{k}: checkpoint {tuple(np.shape(got[k]))}, model {tuple(want[k].shape)}"
                for k in sorted(set(got) & set(want))
                if tuple(np.shape(got[k])) != tuple(want[k].shape)]
    problems += [f"{k}: not in the model" for k in sorted(set(got) - set(want))]
    problems += [f"{k}: not in the checkpoint" for k in sorted(set(want) - set(got))]
    if problems:
        raise CheckpointError(f"{source}: wrong shapes or paths: " + "; ".join(problems[:20])
                              + (" ..." if len(problems) > 20 else ""))


def _unbox(tree: Any) -> Any:
    """Strip flax `Partitioned` boxes (logical axis metadata) from a params tree."""

    return nn.meta.unbox(tree)


# ------------------------------------------------------------------ writing
def to_pytorch_layout(flax_params: Any) -> dict[str, np.ndarray]:
    """A Hugging Face *Flax* params tree -> the PyTorch-layout state dict HF's PyTorch models
    use: path parts joined by ".", Dense `kernel` [in, out] -> `weight` [out, in], Conv
    `kernel` [H, W, I, O] -> `weight` [O, I, H, W], LayerNorm `scale` and Embed `embedding` ->
    `weight`. (The inverse of HF's `convert_pytorch_state_dict_to_flax`; for exporting and for
    writing test checkpoints.) Also takes an already flat dict keyed by path tuples."""

    if flax_params and all(isinstance(k, tuple) for k in flax_params):
        flat = flax_params
    else:
        flat = traverse_util.flatten_dict(_unbox(flax_params))
    out = {}
    for path, value in flat.items():
        value = np.asarray(value)
        *parents, last = path
        if last == "kernel":
            value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
            last = "weight"
        elif last in ("scale", "embedding"):
            last = "weight"
        out[".".join([*parents, last])] = np.array(value, order="C")
    return out


_FLAX_LEAVES = (".kernel", ".scale", ".embedding")


def is_flax_layout(weights: dict[str, np.ndarray]) -> bool:
    """Whether checkpoint keys are Hugging Face *Flax* names (`...kernel`, `...scale`,
    `...embedding`, e.g. from `flax_model.msgpack`) rather than PyTorch ones."""
    return any(k.endswith(_FLAX_LEAVES) for k in weights)


def read_pytorch_layout(directory: str | Path) -> dict[str, np.ndarray]:
    """`read_weights`, with Flax-layout checkpoints (HF `flax_model.msgpack`, or safetensors
    saved by a Flax model) converted to PyTorch names and layouts, so that one key table
    serves both."""
    weights = read_weights(directory)
    if is_flax_layout(weights):
        weights = to_pytorch_layout({tuple(k.split(".")): v for k, v in weights.items()})
    return weights


def write_checkpoint(directory: str | Path, weights: dict[str, np.ndarray], config: dict
                     ) -> Path:
    """Write `config.json` and `model.safetensors` (metadata format "pt") into `directory`."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file({k: np.array(v, order="C") for k, v in weights.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
