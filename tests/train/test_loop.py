"""In-process engine tests on one CPU device: non-finite losses, frozen params, overrides."""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from tvad_jax import config as config_lib
from tvad_jax.train import toy
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import NonFiniteLossError, TrainLoopConfig, train
from tvad_jax.train.mesh import MeshConfig, make_mesh
from tvad_jax.train.state import TrainState


class _PoisonedIterator:
    """Toy batches with NaN inputs in batch number `at` (1-based); keeps get/set_state."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def __next__(self):
        batch = next(self.inner)
        if self.inner.get_state()["next_index"] == self.at:
            batch = dict(batch, x=np.full_like(batch["x"], np.nan))
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def _toy_config(nonfinite: str) -> toy.ToyConfig:
    base = toy.ToyConfig()
    return dataclasses.replace(base, train=dataclasses.replace(
        base.train,
        loop=TrainLoopConfig(steps=12, sync_every=5, nonfinite=nonfinite, progress=False),
        checkpoint=CheckpointConfig(every_steps=5, keep_last=3, best_metric="val_mse"),
        mesh=MeshConfig(data=1)))


def _train_poisoned(cfg, run_dir, on_step=None):
    spec, eval_fn = toy.make_spec(cfg)
    data = _PoisonedIterator(iter(toy.make_dataset(cfg, 0, 1)), at=7)
    return train(spec, data=data, run_dir=run_dir, eval_fn=eval_fn,
                 mesh=make_mesh(cfg.train.mesh, jax.devices()[:1]), on_step=on_step)


def test_nonfinite_loss_stops_naming_step_and_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        _train_poisoned(_toy_config("stop"), tmp_path)
    message = str(err.value)
    assert "at step 7" in message
    assert f"{tmp_path / 'checkpoints' / '5'} (step 5)" in message
    # Detected at the step-10 sync, before the step-10 checkpoint could be written.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["5"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "nonfinite_loss" and summary["first_nonfinite_step"] == 7


def test_nonfinite_loss_skip_keeps_params_and_frozen_stays_out_of_optimizer(tmp_path):
    cfg = _toy_config("skip")
    seen = {}

    def on_step(step, state, ckpt):
        if step in (6, 7, 8):
            seen[step] = jax.device_get(state.params)

    result = _train_poisoned(cfg, tmp_path, on_step)
    summary = result.summary
    assert summary["status"] == "completed" and summary["final_step"] == 12
    assert summary["skipped_steps"] == 1 and summary["first_nonfinite_step"] == 7
    jax.tree.map(np.testing.assert_array_equal, seen[7], seen[6])  # step 7 changed nothing
    assert not np.array_equal(seen[8]["hidden"]["kernel"], seen[7]["hidden"]["kernel"])
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step7 = next(d for d in lines if d["step"] == 7 and "train/loss" in d)
    assert step7["train/skipped"] == 1 and math.isnan(step7["train/loss"])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(result.state)))

    # Frozen params: not in the state, not in the optimizer, still their initial values.
    assert set(result.state.params) == {"hidden", "head"}
    assert set(result.frozen) == {"project"}
    opt_paths = [jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_flatten_with_path(result.state.opt_state)[0]]
    assert opt_paths and not any("project" in p for p in opt_paths)
    init_rng = jax.random.split(jax.random.key(cfg.train.loop.seed))[0]
    initial = jax.tree.map(lambda b: b.unbox() if hasattr(b, "unbox") else b,
                           toy.make_spec(cfg)[0].init_fn(init_rng),
                           is_leaf=lambda b: hasattr(b, "unbox"))
    np.testing.assert_array_equal(result.frozen["project"]["kernel"],
                                  initial["project"]["kernel"])
    assert isinstance(result.state, TrainState)
    assert int(result.state.step) == 12


def test_engine_configs_take_overrides():
    cfg = config_lib.apply_overrides(toy.ToyConfig(), [
        "train.loop.nonfinite=skip", "train.trainable=(head/.*)", "train.mesh.fsdp=2",
        "train.checkpoint.best_mode=max", "train.optim.accumulation_steps=4"])
    assert cfg.train.loop.nonfinite == "skip" and cfg.train.trainable == ("head/.*",)
    assert cfg.train.mesh.fsdp == 2 and cfg.train.checkpoint.best_mode == "max"
    assert cfg.train.optim.accumulation_steps == 4
    with pytest.raises(config_lib.ConfigError):
        config_lib.apply_overrides(cfg, ["train.loop.nonfinite=ignore"])
    with pytest.raises(config_lib.ConfigError):
        config_lib.apply_overrides(cfg, ["train.loop.stepz=3"])
