"""LoRA as a pure transform of a params pytree (paper 000 §4.1: rank 16, alpha 32, dropout 0.05
on q_proj / v_proj, the last four decoder layers, merged into the weights after each phase).

    lora = init_lora(decoder_params, rank=16, layers=4, rng=rng)   # {path: {"a", "b"}}
    merged = merge(decoder_params, lora, alpha=32, rank=16)        # W + (alpha / r) A B

Adapters are a flat dict keyed by the "/"-joined path of the kernel they adapt (a valid
pytree: give it to the optimizer as the trainable params). For a kernel W [*lead, *in, *out]
(`in_dims` contracted axes, usually 1):  a [*lead, *in, r], b [*lead, r, *out].
`q_proj` / `v_proj` are the Hugging Face names; ours are attn/query/kernel [D, H, Dh] and
attn/value/kernel [D, K, Dh] (`TARGET_ALIASES`), so b keeps the head axes: b [r, H, Dh].

Scanned stacks: a kernel whose path has a `layers` component (`stack_pattern`) carries a
leading depth axis. `layers` picks the adapted layers: None all, an int k the last k, a
slice, or a tuple of indices (hashable, so usable as a `jax.jit` static arg; a slice is
not). Adapters exist only for the chosen layers (leading axis k, so the optimizer holds
nothing for the others); `merge` adds the delta at those indices and leaves the rest of the
stack bit-identical. `merge` with layers=None on a k-long adapter of a depth-long stack means
the last k layers (the paper's case); pass the same `layers` as `init_lora` for any other
selection. The default targets match every attn/query|value kernel, so in a whole
`Backbone` tree they would also catch the text and vision towers: pass the decoder's
subtree, or scoped regexes such as r"^decoder/layers/attn/query/kernel$".

Init (PEFT's): a ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform with a=sqrt(5)),
b = 0, so merge(params, init_lora(params)) == params exactly.

How to use it:
- Training without LoRA dropout: call `merge` inside the loss. The unmerged frozen params
  are a separate, non-differentiated argument; the adapters are the differentiable input;
  gradients reach a and b through the merge (one small [in, r] x [r, out] product per
  adapted kernel and step).
- Training with LoRA dropout (the paper's 0.05): dropout acts on the LoRA branch's input,
  y = x W + (alpha/r) dropout(x) A B, which has no merged form. `Decoder` takes it unmerged:
  `decoder_lora(adapters, depth, alpha, rank, rate, rng)` pads the q/v adapters to the full
  stack (zero layers), pre-scales b and adds a dropout key and rate per layer; pass it as
  the decoder's `lora` argument, and each layer adds `lora_branch` (the branch alone) to
  its q and v before RoPE. Differentiate through `decoder_lora` so the gradients land on the
  k-layer adapters. `lora_dense` is the same branch on a single projection.
- Inference / end of a phase: `merge` once and drop the adapters (the next phase starts from
  the merged weights, as in the paper).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

TARGET_ALIASES = {"q_proj": r"attn/query/kernel$", "v_proj": r"attn/value/kernel$",
                  "k_proj": r"attn/key/kernel$", "o_proj": r"attn/out/kernel$"}
STACK_PATTERN = r"(^|/)layers/"

LayerSelection = Any  # None | int (last k) | slice | tuple of layer indices (sorted)


def _flat(params) -> dict[str, Any]:
    return traverse_util.flatten_dict(params, sep="/")


def _targets(targets: Sequence[str]) -> list[re.Pattern]:
    return [re.compile(TARGET_ALIASES.get(t, t)) for t in targets]


def _indices(depth: int, layers: LayerSelection) -> Sequence[int]:
    if layers is None:
        return range(depth)
    if isinstance(layers, int):
        if not 0 < layers <= depth:
            raise ValueError(f"layers={layers}: need 1 <= k <= depth {depth}")
        return range(depth - layers, depth)
    if isinstance(layers, slice):
        r = range(depth)[layers]
        if not len(r):
            raise ValueError(f"layers={layers} selects no layer of {depth}")
        return r
    if isinstance(layers, (tuple, list)) and all(isinstance(i, int) for i in layers):
        r = sorted({range(depth)[i] for i in layers})
        if len(r) != len(layers) or not r:
            raise ValueError(f"layers={layers}: need distinct valid indices of {depth}")
        return r
    raise TypeError(f"layers must be None, an int, a slice or a tuple of ints, "
                    f"got {type(layers).__name__}")


def _stack_indices(depth: int, k: int, layers: LayerSelection, path: str) -> Sequence[int]:
    """The layers of a depth-long stack that a k-long adapter covers: `layers`, or the last
    k when `layers` is None."""
    idx = range(depth - k, depth) if layers is None else _indices(depth, layers)
    if len(idx) != k:
        raise ValueError(f"{path}: adapter has {k} layers, selection gives {len(idx)}")
    return idx


def _lead(path: str, stack_pattern: str | None) -> int:
    return 1 if stack_pattern and re.search(stack_pattern, path) else 0


def init_lora(params, rank: int, targets: Sequence[str] = ("q_proj", "v_proj"),
              layers: LayerSelection = None, rng: jax.Array | None = None, in_dims: int = 1,
              stack_pattern: str | None = STACK_PATTERN) -> dict[str, dict[str, jax.Array]]:
    """Adapters {path: {"a": [*lead, *in, r], "b": [*lead, r, *out]}} (float32, b zero) for
    every kernel whose "/"-joined path matches one of `targets` (aliases or regexes, searched).
    `layers` selects layers of scanned stacks (leading axis of k selected layers); kernels
    outside a stack are adapted whole. Raises if nothing matches."""
    if rank < 1:
        raise ValueError("rank must be >= 1")
    rng = jax.random.key(0) if rng is None else rng
    patterns = _targets(targets)
    out = {}
    for i, (path, w) in enumerate(sorted(_flat(params).items())):
        if not any(p.search(path) for p in patterns):
            continue
        lead = _lead(path, stack_pattern)
        shape = tuple(w.shape)
        if lead:
            shape = (len(_indices(shape[0], layers)),) + shape[1:]
        lead_shape, in_shape = shape[:lead], shape[lead:lead + in_dims]
        out_shape = shape[lead + in_dims:]
        if not out_shape:
            raise ValueError(f"{path} {w.shape}: no output axes after {lead} lead + "
                             f"{in_dims} input axes")
        bound = 1.0 / math.sqrt(math.prod(in_shape))
        a = jax.random.uniform(jax.random.fold_in(rng, i), lead_shape + in_shape + (rank,),
                               jnp.float32, -bound, bound)
        b = jnp.zeros(lead_shape + (rank,) + out_shape, jnp.float32)
        out[path] = {"a": a, "b": b}
    if not out:
        raise ValueError(f"no kernel matches targets {list(targets)}")
    return out


def to_tree(adapters: dict[str, dict[str, jax.Array]]) -> dict:
    """Adapters as a nested params tree ({"layers": {"attn": {"query": {"kernel": {"a",
    "b"}}}}}): the form that survives "/"-path flattening, e.g. inside a train state."""
    return traverse_util.unflatten_dict(
        {f"{path}/{name}": x for path, ab in adapters.items() for name, x in ab.items()},
        sep="/")


def from_tree(tree: dict) -> dict[str, dict[str, jax.Array]]:
    """Inverse of `to_tree`."""
    out: dict[str, dict[str, jax.Array]] = {}
    for key, x in _flat(tree).items():
        path, name = key.rsplit("/", 1)
        out.setdefault(path, {})[name] = x
    return out


def delta(a: jax.Array, b: jax.Array, alpha: float, rank: int, lead: int = 0,
          in_dims: int = 1) -> jax.Array:
    """(alpha / rank) A B in float32:
    a [*lead, *in, r], b [*lead, r, *out] -> [*lead, *in, *out]."""
    lead_shape = a.shape[:lead]
    in_shape, out_shape = a.shape[lead:lead + in_dims], b.shape[lead + 1:]
    a2 = a.astype(jnp.float32).reshape(lead_shape + (math.prod(in_shape), rank))
    b2 = b.astype(jnp.float32).reshape(lead_shape + (rank, math.prod(out_shape)))
    return ((alpha / rank) * (a2 @ b2)).reshape(lead_shape + in_shape + out_shape)


def merge(params, lora: dict[str, dict[str, jax.Array]], alpha: float, rank: int,
          layers: LayerSelection = None, in_dims: int = 1,
          stack_pattern: str | None = STACK_PATTERN):
    """params with W + (alpha / rank) A B at every adapted kernel (same dtype as W), as a
    nested dict. Unadapted leaves (and unselected layers of a stack) are returned untouched.
    Differentiable in `lora` (and in params). Works under jit (`layers` is static)."""
    flat = dict(_flat(params))
    for path, ab in lora.items():
        if path not in flat:
            raise KeyError(f"adapter {path!r} has no kernel in params")
        w = flat[path]
        lead = _lead(path, stack_pattern)
        d = delta(ab["a"], ab["b"], alpha, rank, lead, in_dims)
        if lead:
            depth, k = w.shape[0], d.shape[0]
            idx = _stack_indices(depth, k, layers, path)
            if k == depth:
                w = (w.astype(jnp.float32) + d).astype(w.dtype)
            else:
                sel = jnp.asarray(list(idx))
                w = w.at[sel].set((w[sel].astype(jnp.float32) + d).astype(w.dtype))
        else:
            if d.shape != w.shape:
                raise ValueError(f"{path}: delta {d.shape} != kernel {w.shape}")
            w = (w.astype(jnp.float32) + d).astype(w.dtype)
        flat[path] = w
    return traverse_util.unflatten_dict(flat, sep="/")


def lora_branch(x: jax.Array, a: jax.Array, b: jax.Array, rng: jax.Array | None = None,
                rate: float | jax.Array = 0.0) -> jax.Array:
    """The LoRA branch dropout(x) A B, b already scaled by alpha / rank, in x's dtype.

    x [..., D_in], a [D_in, r], b [r, *out] -> [..., *out]. Inverted dropout at `rate` (may
    be traced; rate 0 keeps every element exactly) on the branch's input only (PEFT's
    lora_dropout); no rng: no dropout. Shared by `lora_dense` and the `Decoder` hook.
    """
    if rng is not None:
        keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
    return jnp.tensordot(x @ a.astype(x.dtype), b.astype(x.dtype), axes=1)


def lora_dense(x: jax.Array, w: jax.Array, a: jax.Array, b: jax.Array, alpha: float,
               rank: int, dropout_rng: jax.Array | None = None, rate: float = 0.0
               ) -> jax.Array:
    """Unmerged LoRA projection: x W + (alpha / rank) dropout(x) A B.

    x [..., D_in], w [D_in, *out], a [D_in, r], b [r, *out] -> [..., *out]. Inverted dropout
    with `rate` on the LoRA branch's input only (PEFT's lora_dropout); rate 0 (or no rng)
    gives exactly x @ merge(W). Computed in x's dtype.
    """
    if dropout_rng is None and rate > 0.0:
        raise ValueError("rate > 0 needs dropout_rng")
    y = jnp.tensordot(x, w.astype(x.dtype), axes=1)
    return y + lora_branch(x, a, (alpha / rank) * b, dropout_rng, rate)


DECODER_TARGETS = {"query": r"(^|/)layers/attn/query/kernel$",
                   "value": r"(^|/)layers/attn/value/kernel$"}


def decoder_lora(adapters: dict[str, dict[str, jax.Array]], depth: int, alpha: float,
                 rank: int, rate: float | jax.Array = 0.0, rng: jax.Array | None = None,
                 layers: LayerSelection = None) -> dict:
    """The `lora` argument of `Decoder` (unmerged LoRA with dropout) from its q/v adapters.

    adapters: `init_lora` of the decoder's params, one query and one value adapter of the
    scanned layers: a [k, D, r], b [k, r, H|K, Dh]. Returns, every leaf with a leading depth
    axis (scanned with the layers): {"query"|"value": {"a": [depth, D, r],
    "b": [depth, r, H|K, Dh]}, "rng": [depth] keys, "rate": [depth] float32}. Layers outside
    the selection (`merge`'s rules: `layers`, or the last k) get zero a and b, so gradients
    reach only the k adapter slices; b is scaled by alpha / rank. No rng: no dropout (rate 0,
    as for evaluation). Pure and differentiable in `adapters`; `layers` is static.
    """
    out = {}
    for path, ab in adapters.items():
        names = [n for n, p in DECODER_TARGETS.items() if re.search(p, path)]
        if not names or names[0] in out:
            raise ValueError(f"adapter {path!r}: the decoder takes one query and one value "
                             f"adapter of its scanned layers")
        a, b = ab["a"], (alpha / rank) * ab["b"]
        k = a.shape[0]
        idx = _stack_indices(depth, k, layers, path)
        if k != depth:
            sel = jnp.asarray(list(idx))
            a = jnp.zeros((depth,) + a.shape[1:], a.dtype).at[sel].set(a)
            b = jnp.zeros((depth,) + b.shape[1:], b.dtype).at[sel].set(b)
        out[names[0]] = {"a": a, "b": b}
    if sorted(out) != sorted(DECODER_TARGETS):
        raise ValueError(f"decoder LoRA needs query and value adapters, got {sorted(adapters)}")
    if rng is None:
        rng, rate = jax.random.key(0), 0.0
    out["rng"] = jax.random.split(rng, depth)
    out["rate"] = jnp.full((depth,), rate, jnp.float32)
    return out
