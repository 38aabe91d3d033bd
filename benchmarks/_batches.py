"""Random batches in the shapes of a T-VAD stage's feature cache, for the train-step benchmarks.

Built with jax.random so that `jax.eval_shape` can trace them (the device suite's abstract
mode) and a real-scale batch never passes through host memory; values do not change timings.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def random_feature_batch(key: jax.Array, example: dict, batch: int, vocab: int) -> dict:
    """`batch` examples shaped as `example` (name -> ShapeDtypeStruct): normal features,
    10% of tubelet mask cells set, token ids in [3, vocab), and the loss on the second half of
    the text (the answer)."""
    out = {}
    for i, (name, sds) in enumerate(sorted(example.items())):
        shape, k = (batch,) + tuple(sds.shape), jax.random.fold_in(key, i)
        if name in ("hidden", "visual", "maps"):
            out[name] = jax.random.normal(k, shape, sds.dtype)
        elif name == "tubelet_masks":
            out[name] = (jax.random.uniform(k, shape) < 0.1).astype(sds.dtype)
        elif name in ("valid", "weights"):
            out[name] = jnp.ones(shape, sds.dtype)
        elif name in ("ids", "targets"):
            out[name] = jax.random.randint(k, shape, 3, vocab, sds.dtype)
        elif name == "lengths":
            out[name] = jnp.full(shape, example["ids"].shape[0], sds.dtype)
        else:
            raise KeyError(name)
    if "targets" in out:
        out["targets"] = out["targets"].at[:, : out["targets"].shape[1] // 2].set(-1)
    return out
