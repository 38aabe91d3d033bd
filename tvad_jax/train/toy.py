"""A toy regression task that exercises the whole engine (tests, benchmarks, smoke runs).

Model: x [B, D] -> frozen random projection [B, D] -> trainable hidden layer [B, H] (GELU,
dropout) -> trainable head [B]. Data: x ~ N(0, 1), y = sin(x @ w) + noise, served by a grain
pipeline (shuffle, repeat, batch, per-process slice) whose iterator state is real grain state.

Command line (the multi-process and kill -9 tests run it as a subprocess):

  tvad train toy --run-dir runs/toy [train.loop.steps=50 ...]
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from tvad_jax import config as config_lib
from tvad_jax.train import distributed
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import StageSpec, TrainConfig, TrainLoopConfig, TrainResult, train
from tvad_jax.train.mesh import make_mesh
from tvad_jax.train.optim import OptimConfig
from tvad_jax.train.state import merge_params


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """The toy run: engine settings plus model and data sizes.

    Attributes:
      features: D, the input and projection width.
      hidden: H, the hidden width (sharded over `tensor`).
      dropout: dropout rate after the hidden layer (exercises the per-step RNG).
      examples: size of the training set (the pipeline repeats it, reshuffling each epoch).
      batch_size: the global batch; each process loads batch_size / process_count.
      data_seed: seeds the data and its shuffling.
    """

    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        loop=TrainLoopConfig(steps=20, sync_every=5, progress=False),
        optim=OptimConfig(learning_rate=1e-2, warmup_ratio=0.1, lr_floor=0.1),
        checkpoint=CheckpointConfig(every_steps=5, keep_last=2, keep_best=1,
                                    best_metric="val_mse", best_mode="min"),
        trainable=("hidden/.*", "head/.*"),
    ))
    features: int = 16
    hidden: int = 32
    dropout: float = 0.1
    examples: int = 512
    batch_size: int = 32
    data_seed: int = 0


def _part(init, names):
    return nn.with_logical_partitioning(init, names)


class ToyMLP(nn.Module):
    """See the module docstring; `project` is meant to be frozen."""

    features: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x, *, train: bool):  # x: [B, D] -> [B]
        x = nn.Dense(self.features, use_bias=False, name="project",
                     kernel_init=_part(nn.initializers.orthogonal(), ("embed", None)))(x)
        h = nn.Dense(self.hidden, name="hidden",
                     kernel_init=_part(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=_part(nn.initializers.zeros_init(), ("mlp",)))(x)
        h = nn.with_logical_constraint(h, ("batch", "mlp"))
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(h))
        y = nn.Dense(1, name="head",
                     kernel_init=_part(nn.initializers.lecun_normal(), ("mlp", None)),
                     bias_init=_part(nn.initializers.zeros_init(), (None,)))(h)
        return y[:, 0]


def make_arrays(cfg: ToyConfig, count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` examples (x [N, D] float32, y [N] float32); `offset` picks a disjoint stream."""
    w = np.random.default_rng(cfg.data_seed).normal(size=cfg.features) / np.sqrt(cfg.features)
    rng = np.random.default_rng([cfg.data_seed, 1 + offset])
    x = rng.normal(size=(count, cfg.features)).astype(np.float32)
    y = (np.sin(2.0 * x @ w) + 0.1 * rng.normal(size=count)).astype(np.float32)
    return x, y


def make_dataset(cfg: ToyConfig, process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
    """This process's batches: dicts {"x": [b, D], "y": [b]} with b = batch_size / processes."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if cfg.batch_size % pc:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {pc} processes")
    x, y = make_arrays(cfg, cfg.examples)
    local = cfg.batch_size // pc
    # Batch the shuffled indices globally, then keep this process's consecutive chunk: the
    # global batch (processes concatenated in order) is then row for row the single-process
    # batch, so per-example randomness such as dropout lines up across process counts.
    ds = (grain.MapDataset.range(cfg.examples).shuffle(seed=cfg.data_seed).repeat()
          .batch(cfg.batch_size, drop_remainder=True)
          .map(lambda idx: idx[pi * local:(pi + 1) * local])
          .map(lambda idx: {"x": x[idx], "y": y[idx]}))
    return ds.to_iter_dataset()


def make_model(cfg: ToyConfig) -> ToyMLP:
    return ToyMLP(features=cfg.features, hidden=cfg.hidden, dropout=cfg.dropout)


def make_spec(cfg: ToyConfig) -> tuple[StageSpec, Callable]:
    """(the toy stage, its eval_fn) for `train`."""
    model = make_model(cfg)
    x_val, y_val = make_arrays(cfg, 128, offset=1)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, cfg.features), jnp.float32), train=False)["params"]

    def loss_fn(trainable, frozen, batch, rng):
        params = merge_params(trainable, frozen)
        pred = model.apply({"params": params}, batch["x"], train=True, rngs={"dropout": rng})
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"pred_std": jnp.std(pred)}

    @jax.jit
    def val_mse(trainable, frozen):
        pred = model.apply({"params": merge_params(trainable, frozen)}, x_val, train=False)
        return jnp.mean((pred - y_val) ** 2)

    def eval_fn(trainable, frozen):
        return {"val_mse": float(val_mse(trainable, frozen))}

    return StageSpec(cfg.train, init_fn, loss_fn), eval_fn


def run(cfg: ToyConfig, run_dir: str | Path, *, num_devices: int | None = None,
        on_step=None) -> TrainResult:
    """Train the toy model into `run_dir` (resuming from its checkpoints if any)."""
    spec, eval_fn = make_spec(cfg)
    devices = jax.devices()[:num_devices] if num_devices else None
    mesh = make_mesh(cfg.train.mesh, devices)
    data = iter(make_dataset(cfg))
    return train(spec, data=data, run_dir=run_dir, eval_fn=eval_fn, mesh=mesh, on_step=on_step)


def run_process(cfg: ToyConfig, run_dir: Path, num_devices: int | None = None,
                params_out: Path | None = None, pause_at_step: int = 0) -> TrainResult:
    """One process of a (possibly multi-process) toy run, as `tvad train toy` starts it:
    distributed init, config.json, the run, the final trainable params gathered to
    `params_out` (.npz); with `pause_at_step`, after that step (and its pending checkpoint
    saves) it writes <run_dir>/paused-<process> and sleeps until killed (the kill -9 tests)."""
    distributed.initialize(cfg.train.distributed)
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, run_dir / "config.json")

    def pause(step, state, ckpt):
        if step == pause_at_step:
            ckpt.wait()
            jax.block_until_ready(state)
            (run_dir / f"paused-{jax.process_index()}").write_text(str(step))
            while True:
                time.sleep(60)

    result = run(cfg, run_dir, num_devices=num_devices, on_step=pause if pause_at_step else None)
    if params_out:
        params = multihost_utils.process_allgather(result.state.params, tiled=True)
        if jax.process_index() == 0:
            np.savez(params_out, **traverse_util.flatten_dict(params, sep="/"))
    return result
