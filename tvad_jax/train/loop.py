"""The train loop: sharded init, resume, the jitted step over a data iterator, checkpoints, logs.

A stage is described once, as a `StageSpec`, and that one description is what `train` runs,
what `restore_params` reads a checkpoint of, and what `abstract_engine` (planning, `tvad plan`)
lowers without allocating anything:

  config                          the engine settings (steps, optimizer, trainable patterns,
                                  checkpoints, mesh);
  init_fn(rng) -> params          the full parameter tree, boxed with logical axis names
                                  (`nn.with_logical_partitioning`) where it should be sharded;
                                  frozen parts are constants (or abstract inits for planning);
  loss_fn(trainable, frozen, batch, rng) -> (loss, metrics)
  example                         one example's ShapeDtypeStructs (planning only).

`train(spec, data=..., run_dir=...)` also takes
  data                            an iterator of host-local batches (dicts of numpy arrays,
                                  this process's consecutive part of the global batch) with
                                  `get_state()` / `set_state()`, e.g. a grain DatasetIterator;
  eval_fn(trainable, frozen) -> dict[str, float]   optional, run at every checkpoint.

`build` materializes exactly the abstract engine: the same shardings, optimizer and jitted step,
with the parameters initialized once, directly into their shardings.

In a multi-process run, call `distributed.initialize` before building the data iterator (which
needs `jax.process_index()`) and before `train`.

Run folder contents: metrics.jsonl (one line per logged step), tensorboard/ (event files),
checkpoints/<step>/ (orbax), summary.json.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from tvad_jax import config as config_lib, runs
from tvad_jax.train import mesh as mesh_lib
from tvad_jax.train.checkpoint import CheckpointConfig, Checkpointer
from tvad_jax.train.distributed import DistributedConfig
from tvad_jax.train.flops import step_flops
from tvad_jax.train.optim import OptimConfig, make_optimizer
from tvad_jax.train.state import (TrainState, abstract_with_shardings, init_state, merge_params,
                                  split_params, state_shardings)
from tvad_jax.train.step import LossFn, jit_train_step, make_train_step
from tvad_jax.train.writers import MetricsWriter


@dataclasses.dataclass(frozen=True)
class TrainLoopConfig:
    """How long to train and how to watch it.

    Attributes:
      steps: train steps (batches) in the run.
      seed: seeds parameter init and the per-step RNG (`fold_in(key, step)`).
      log_every: write every n-th step's metrics (every step is still checked for NaN).
      sync_every: every n steps (and at each checkpoint) wait for the metrics in flight and
        act on a non-finite step; 0 = only at checkpoints and the end.
      eval_every: also evaluate every n steps (evaluation always runs at checkpoints).
      nonfinite: on a NaN/inf loss or gradient, "stop" the run with an error naming the step
        and the last good checkpoint, or "skip" that update and go on. The update of a
        non-finite step is never applied in either case.
      progress: show a progress bar (process 0 only).
    """

    steps: int = 1000
    seed: int = 0
    log_every: int = 1
    sync_every: int = 50
    eval_every: int = 0
    nonfinite: Literal["stop", "skip"] = "stop"
    progress: bool = True

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "steps", "log_every")
        config_lib.check_at_least(self, 0, "sync_every", "eval_every")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The engine's section of a stage config.

    `trainable` holds regular expressions over '/'-joined parameter paths (full match); every
    other parameter is frozen.
    """

    loop: TrainLoopConfig = dataclasses.field(default_factory=TrainLoopConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: mesh_lib.MeshConfig = dataclasses.field(default_factory=mesh_lib.MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    trainable: tuple[str, ...] = (".*",)


class NonFiniteLossError(RuntimeError):
    """A NaN/inf loss or gradient in a run with `nonfinite="stop"`."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    frozen: Any
    mesh: Mesh
    summary: dict


EvalFn = Callable[[Any, Any], dict[str, float]]
OnStep = Callable[[int, TrainState, Checkpointer], None]


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One trainable stage (see the module docstring)."""

    config: TrainConfig
    init_fn: Callable[[jax.Array], Any]
    loss_fn: LossFn
    example: dict | None = None


@dataclasses.dataclass
class AbstractEngine:
    """Everything a run needs before its first step, without values: the jitted step, the
    optimizer, abstract (ShapeDtypeStruct) state and frozen trees and their shardings.

    Attributes:
      param_sharding: the layout of every parameter (from the logical axis names);
      state_sharding, frozen_sharding, batch_sharding: the layouts the step is jitted with;
      init_rng, rng: the keys of the parameter init and of the step (`fold_in(rng, step)`).
    """

    mesh: Mesh
    step: Callable
    tx: Any
    lr_at: Callable[[jax.Array], jax.Array]
    state: TrainState
    frozen: Any
    param_sharding: Any
    state_sharding: TrainState
    frozen_sharding: Any
    batch_sharding: Any
    init_rng: jax.Array
    rng: jax.Array


def abstract_engine(spec: StageSpec, mesh: Mesh | None = None,
                    rules=mesh_lib.LOGICAL_AXIS_RULES) -> AbstractEngine:
    """The engine of a stage on `jax.eval_shape` values (nothing allocated)."""
    config = spec.config
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
    init_rng, step_rng = jax.random.split(jax.random.key(config.loop.seed))
    boxed = jax.eval_shape(spec.init_fn, init_rng)
    shardings = mesh_lib.logical_to_sharding(boxed, mesh, rules)
    trainable, frozen = split_params(strip_boxes(boxed), config.trainable)
    train_sh, frozen_sh = split_params(shardings, config.trainable)
    tx, lr_at = make_optimizer(config.optim, config.loop.steps)
    state_sh = state_shardings(train_sh, tx, trainable, mesh)
    state = jax.eval_shape(lambda p: init_state(p, tx), trainable)
    batch_sh = mesh_lib.batch_sharding(mesh, rules)
    step = jit_train_step(make_train_step(spec.loss_fn, tx, lr_at), mesh, state_sh, frozen_sh,
                          batch_sh)
    return AbstractEngine(mesh, step, tx, lr_at, state, frozen, shardings, state_sh, frozen_sh,
                          batch_sh, init_rng, step_rng)


def strip_boxes(tree: Any) -> Any:
    """The values of a tree of logical-axis boxes (no sharding constraint applied, unlike
    `nn.unbox` inside a mesh context)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


@dataclasses.dataclass
class Engine:
    """An `AbstractEngine` with values: the sharded initial state and frozen params."""

    abstract: AbstractEngine
    state: TrainState
    frozen: Any


def build(spec: StageSpec, mesh: Mesh | None = None,
          rules=mesh_lib.LOGICAL_AXIS_RULES) -> Engine:
    """Initialize the params once, directly into the abstract engine's shardings, split
    trainable/frozen and build the optimizer state. Call inside
    `mesh_lib.mesh_context(mesh, rules)` when the loss uses logical constraints."""
    abstract = abstract_engine(spec, mesh, rules)
    params = jax.jit(lambda r: nn.unbox(spec.init_fn(r)),
                     out_shardings=abstract.param_sharding)(abstract.init_rng)
    trainable, frozen = split_params(params, spec.config.trainable)
    del params
    tx = abstract.tx
    state = jax.jit(lambda p: init_state(p, tx), out_shardings=abstract.state_sharding,
                    donate_argnums=0)(trainable)
    return Engine(abstract, state, frozen)


def train(spec: StageSpec, *, data: Any, run_dir: str | Path, eval_fn: EvalFn | None = None,
          mesh: Mesh | None = None, rules=mesh_lib.LOGICAL_AXIS_RULES,
          on_step: OnStep | None = None) -> TrainResult:
    """Train (or resume training) and return the final state and the run summary."""
    config = spec.config
    run_dir = Path(run_dir)
    primary = jax.process_index() == 0
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
    with mesh_lib.mesh_context(mesh, rules):
        engine = build(spec, mesh=mesh, rules=rules)
        state, frozen, state_sh = engine.state, engine.frozen, engine.abstract.state_sharding

        ckpt = Checkpointer(run_dir / "checkpoints", config.checkpoint)
        start = 0
        latest = ckpt.latest_step() if config.checkpoint.resume else None
        if latest is not None:
            target = abstract_with_shardings(engine.abstract.state, state_sh)
            state = ckpt.restore(latest, target, data)
            restored = int(jax.device_get(state.step))
            if restored != latest:
                raise RuntimeError(f"checkpoint {latest} holds step {restored}")
            start = latest
            if primary:
                print(f"[tvad] resumed from {ckpt.step_dir(latest)}", file=sys.stderr)

        writer = MetricsWriter(run_dir if primary else None, truncate_after=start)
        runner = _Runner(config, ckpt, writer, data, eval_fn, primary)
        try:
            state = runner.run(state, frozen, engine.abstract.step, engine.abstract.rng, start,
                               mesh, rules, on_step)
            ckpt.wait()
            summary = runner.summary(state, frozen, start, mesh)
        except NonFiniteLossError as e:
            runner.close()
            if primary:
                _write_summary(run_dir, {"status": "nonfinite_loss", "error": str(e),
                                         "resumed_from_step": start,
                                         "first_nonfinite_step": writer.first_nonfinite[0],
                                         "final_metrics": writer.last})
            raise
        finally:
            runner.close()
    if primary:
        _write_summary(run_dir, summary)
    return TrainResult(state=state, frozen=frozen, mesh=mesh, summary=summary)


def restore_params(spec: StageSpec, checkpoint_dir: str | Path,
                   which: Literal["best", "latest"] = "best", mesh: Mesh | None = None,
                   rules=mesh_lib.LOGICAL_AXIS_RULES) -> tuple[dict, int]:
    """(full params: trainable merged with frozen, step) of a run's checkpoint: the best by
    `config.checkpoint.best_metric` (the latest where the run kept no best), or the latest.

    The checkpoint is read into the abstract engine's state (no optimizer state is
    initialized, no step compiled); only the frozen params are computed, by `init_fn`.
    Raises FileNotFoundError naming the folder when it holds no checkpoint."""
    config = spec.config
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
    with mesh_lib.mesh_context(mesh, rules):
        abstract = abstract_engine(spec, mesh, rules)
        frozen = jax.jit(lambda r: split_params(nn.unbox(spec.init_fn(r)), config.trainable)[1],
                         out_shardings=abstract.frozen_sharding)(abstract.init_rng)
        target = abstract_with_shardings(abstract.state, abstract.state_sharding)
        ckpt = Checkpointer(checkpoint_dir, dataclasses.replace(config.checkpoint,
                                                                async_save=False))
        try:
            step = (ckpt.best_step() if which == "best" else None) or ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(f"{checkpoint_dir}: no complete checkpoint")
            state = ckpt.restore(step, target)
        finally:
            ckpt.close()
    return merge_params(state.params, frozen), step


def _write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("[tvad] train summary: " + json.dumps(summary), file=sys.stderr)


class _Runner:
    """The loop body and its bookkeeping (kept apart from the set-up in `train`)."""

    def __init__(self, config: TrainConfig, ckpt: Checkpointer, writer: MetricsWriter,
                 data: Any, eval_fn: EvalFn | None, primary: bool):
        self.config, self.ckpt, self.writer = config, ckpt, writer
        self.data, self.eval_fn, self.primary = data, eval_fn, primary
        self.examples_per_step = 0
        self.compile_s = 0.0
        self.flops_per_step = None
        self.wall_s = 0.0
        self.timed_steps = 0
        self.last_eval: dict[str, float] | None = None
        self.closed = False

    def run(self, state, frozen, step_fn, rng, start, mesh, rules, on_step):
        loop = self.config.loop
        every = self.config.checkpoint.every_steps
        compiled = None
        steps = range(start, loop.steps)
        bar = None
        if self.primary and loop.progress:
            bar = runs.progress(steps, desc="train", total=len(steps), unit="step")
            steps = bar
        t_start = None
        for i in steps:
            try:
                local = next(self.data)
            except StopIteration:
                raise RuntimeError(f"the data iterator ran out before step {i + 1}") from None
            batch = mesh_lib.shard_batch(local, mesh, rules)
            if compiled is None:
                self.examples_per_step = int(jax.tree.leaves(batch)[0].shape[0])
                t0 = time.perf_counter()
                compiled = step_fn.lower(state, frozen, batch, rng).compile()
                self.compile_s = time.perf_counter() - t0
                self.flops_per_step = _flops(compiled)
            state, metrics = compiled(state, frozen, batch, rng)
            if t_start is None:  # steps after the first are timed (one sync, here only)
                jax.block_until_ready(metrics)
                t_start = time.perf_counter()
            step = i + 1
            self.writer.put(step, metrics, write=step % loop.log_every == 0 or step == loop.steps)
            if on_step is not None:
                on_step(step, state, self.ckpt)
            save = (every > 0 and step % every == 0) or step == loop.steps
            evaluate = self.eval_fn is not None and (
                save or (loop.eval_every > 0 and step % loop.eval_every == 0))
            if save or evaluate or (loop.sync_every > 0 and step % loop.sync_every == 0):
                self.writer.drain()
                self._check_finite()
                if bar is not None and "loss" in self.writer.last:
                    bar.set_postfix(loss=f"{self.writer.last['loss']:.4g}", refresh=False)
            eval_metrics = None
            if evaluate:
                eval_metrics = {k: float(v) for k, v in
                                self.eval_fn(state.params, frozen).items()}
                self.last_eval = dict(eval_metrics, step=step)
                self.writer.put(step, eval_metrics, prefix="eval/")
            if save:
                self.writer.drain()  # every line up to this step is on disk before the save
                self.ckpt.save(step, state, self.data, metrics=eval_metrics)
        self.writer.drain()
        self._check_finite()
        if t_start is not None:
            self.wall_s = time.perf_counter() - t_start
            self.timed_steps = len(range(start, loop.steps)) - 1
        if bar is not None:
            bar.close()
        return state

    def _check_finite(self):
        bad = self.writer.first_nonfinite
        if bad is None or self.config.loop.nonfinite == "skip":
            return
        step, loss = bad
        self.ckpt.wait()
        good = [s for s in self.ckpt.all_steps() if s < step]
        where = (f"{self.ckpt.step_dir(good[-1])} (step {good[-1]})" if good
                 else "none (no checkpoint was saved before it)")
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {step} (loss={loss}); its update was not "
            f"applied and the run stopped. Last good checkpoint: {where}. Set "
            f"loop.nonfinite=skip to skip such updates instead.")

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.writer.close()
            finally:
                self.ckpt.close()

    def summary(self, state, frozen, start, mesh) -> dict:
        loop = self.config.loop
        steps_per_s = self.timed_steps / self.wall_s if self.wall_s > 0 else None
        best = self.ckpt.best_step()
        kept = self.ckpt.all_steps()
        return {
            "status": "completed",
            "steps": loop.steps,
            "resumed_from_step": start,
            "final_step": int(jax.device_get(state.step)),
            "examples_per_step": self.examples_per_step,
            "compile_s": round(self.compile_s, 3),
            "train_wall_s": round(self.wall_s, 3),
            "steps_per_s": steps_per_s,
            "examples_per_s": steps_per_s * self.examples_per_step if steps_per_s else None,
            "flops_per_step_per_device": self.flops_per_step,
            "final_metrics": self.writer.last,
            "last_eval": self.last_eval,
            "skipped_steps": self.writer.skipped_steps,
            "first_nonfinite_step": (self.writer.first_nonfinite or (None,))[0],
            "checkpoints": kept,
            "last_checkpoint": str(self.ckpt.step_dir(kept[-1])) if kept else None,
            "best_checkpoint": (None if best is None else
                                {"step": best, "metrics": self.ckpt.metrics(best)}),
            "trainable_params": _count(state.params),
            "frozen_params": _count(frozen),
            "mesh": {k: int(v) for k, v in mesh.shape.items()},
            "processes": jax.process_count(),
            "devices": jax.device_count(),
        }


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _flops(compiled) -> float | None:
    """FLOPs of one step (loop bodies counted per iteration; None where the backend gives
    no cost analysis)."""
    return step_flops(compiled)[0]
