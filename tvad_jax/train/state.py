"""The train state, the trainable/frozen split of parameters, and their shardings.

Parameters are nested dicts (flax `params` collections). `split_params` cuts them by regular
expressions over '/'-joined paths into a trainable tree and a frozen tree; only the trainable
tree lives in `TrainState` and in the optimizer, the frozen tree is passed to the step as a
separate argument and never differentiated.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class TrainState:
    """What a train step changes: the step counter, trainable params and optimizer state.

    Attributes:
      step: int32 scalar, train steps taken (one per batch, also with accumulation).
      params: the trainable parameters only.
      opt_state: the optax state of `params`.
    """

    step: jax.Array
    params: Any
    opt_state: Any


def split_params(params: Any, trainable: Sequence[str]) -> tuple[dict, dict]:
    """(trainable, frozen): leaves whose path fully matches one of the regexes, and the rest.

    Each pattern must match at least one leaf (a typo fails here, not silently later) and at
    least one leaf must be trainable. Works on any tree with the params' dict structure (e.g.
    shardings or shapes).
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    compiled = [re.compile(p) for p in trainable]
    for pattern in compiled:
        if not any(pattern.fullmatch(path) for path in flat):
            raise ValueError(f"trainable pattern {pattern.pattern!r} matches no parameter; "
                             f"parameters: {sorted(flat)}")
    train = {k: v for k, v in flat.items() if any(p.fullmatch(k) for p in compiled)}
    frozen = {k: v for k, v in flat.items() if k not in train}
    if not train:
        raise ValueError("no trainable parameters")
    return (traverse_util.unflatten_dict(train, sep="/"),
            traverse_util.unflatten_dict(frozen, sep="/"))


def merge_params(trainable: Any, frozen: Any) -> dict:
    """The full parameter tree from its two parts (what the model's `apply` takes)."""
    flat = traverse_util.flatten_dict(frozen, sep="/")
    flat.update(traverse_util.flatten_dict(trainable, sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(param_shardings: Any, tx: optax.GradientTransformation, abstract_params: Any,
                    mesh: Mesh) -> TrainState:
    """Shardings of a TrainState: optimizer leaves that mirror a parameter take its sharding.

    An optimizer-state leaf mirrors a parameter when its tree path ends with the parameter's
    path and the shapes agree (Adam moments, accumulated gradients); anything else (counters,
    scalars) is replicated. This works through `optax.chain`, masks and `MultiSteps`.
    """
    replicated = NamedSharding(mesh, P())
    by_path = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        by_path[_keys(path)] = leaf.shape
    shard_of = {_keys(path): s for path, s in
                jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
    abstract_opt = jax.eval_shape(tx.init, abstract_params)

    def pick(path, leaf):
        keys = _keys(path)
        for n in range(len(keys), 0, -1):
            suffix = keys[-n:]
            if suffix in by_path and by_path[suffix] == getattr(leaf, "shape", None):
                return shard_of[suffix]
        return replicated

    opt = jax.tree_util.tree_map_with_path(pick, abstract_opt)
    return TrainState(step=replicated, params=param_shardings, opt_state=opt)


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying shardings: the restore target of a checkpoint."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _keys(path) -> tuple:
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            out.append(("d", k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out.append(("a", k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(("s", k.idx))
        else:
            out.append(("o", str(k)))
    return tuple(out)
