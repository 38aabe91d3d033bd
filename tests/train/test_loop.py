"""In-process engine tests on one CPU device: schedule, accumulation, frozen params, NaN/inf."""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax import config as config_lib
from tvad_jax.train import toy
from tvad_jax.train.checkpoint import CheckpointConfig
from tvad_jax.train.loop import NonFiniteLossError, TrainLoopConfig, train
from tvad_jax.train.mesh import MeshConfig, make_mesh, mesh_shape
from tvad_jax.train.optim import OptimConfig, make_optimizer
from tvad_jax.train.state import TrainState, init_state, merge_params, split_params
from tvad_jax.train.step import make_train_step


def test_mesh_shape_fills_the_free_axis():
    assert mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    assert mesh_shape(MeshConfig(data=2, fsdp=1, tensor=-1), 8) == (2, 1, 4)
    assert mesh_shape(MeshConfig(data=1, fsdp=1, tensor=1), 1) == (1, 1, 1)
    with pytest.raises(ValueError, match="at most one"):
        mesh_shape(MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ValueError, match="cannot be split"):
        mesh_shape(MeshConfig(data=-1, tensor=3), 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        mesh_shape(MeshConfig(data=2, tensor=2), 8)


def test_schedule_is_warmup_then_cosine_to_floor():
    cfg = OptimConfig(learning_rate=2.0, warmup_ratio=0.25, lr_floor=0.1, accumulation_steps=2)
    _, lr_at = make_optimizer(cfg, train_steps=40)  # 20 updates, 5 of them warmup
    got = np.array([float(lr_at(jnp.int32(s))) for s in range(40)])
    u = np.arange(40) // 2
    cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (u - 5) / 15))
    want = 2.0 * np.where(u < 5, u / 5, cosine)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_split_and_merge_params():
    params = {"a": {"kernel": 1, "bias": 2}, "b": {"kernel": 3}}
    trainable, frozen = split_params(params, ("a/.*",))
    assert trainable == {"a": {"kernel": 1, "bias": 2}} and frozen == {"b": {"kernel": 3}}
    assert merge_params(trainable, frozen) == params
    with pytest.raises(ValueError, match="matches no parameter"):
        split_params(params, ("a/.*", "c/.*"))


def test_accumulation_equals_one_big_batch():
    """Two micro-batches of 4 with accumulation_steps=2 == one batch of 8 (mean loss), and the
    params do not move on the first micro-step."""
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(8, 3)).astype(np.float32),
                "y": rng.normal(size=(8,)).astype(np.float32)} for _ in range(2)]
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 1)), jnp.float32),
                        "bias": jnp.zeros((1,), jnp.float32)}}

    def loss_fn(trainable, frozen, batch, key):
        pred = batch["x"] @ trainable["dense"]["kernel"] + trainable["dense"]["bias"]
        return jnp.mean((pred[:, 0] - batch["y"]) ** 2), {}

    def run(accumulate, feed):
        cfg = OptimConfig(learning_rate=0.1, warmup_ratio=0.0, clip_norm=0.5,
                          accumulation_steps=accumulate)
        tx, lr_at = make_optimizer(cfg, train_steps=len(feed))
        step = jax.jit(make_train_step(loss_fn, tx, lr_at))
        state = init_state(params, tx)
        seen = []
        for batch in feed:
            state, _ = step(state, {}, batch, jax.random.key(0))
            seen.append(jax.device_get(state.params))
        return seen

    halves = [{k: v[s] for k, v in b.items()} for b in batches for s in (slice(0, 4),
                                                                       slice(4, 8))]
    micro = run(2, halves)
    full = run(1, batches)
    np.testing.assert_array_equal(micro[0]["dense"]["kernel"], params["dense"]["kernel"])
    for got, want in ((micro[1], full[0]), (micro[3], full[1])):
        for key in ("kernel", "bias"):
            np.testing.assert_allclose(got["dense"][key], want["dense"][key], atol=1e-6)
    assert not np.allclose(full[1]["dense"]["kernel"], params["dense"]["kernel"])


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
