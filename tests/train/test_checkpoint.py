"""Checkpointer: keep-last + keep-best retention, train state and grain state restored together."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.train import toy
from tvad_jax.train.checkpoint import CheckpointConfig, Checkpointer
from tvad_jax.train.state import abstract_with_shardings

METRICS = [3.0, 1.0, 9.0, 5.0, 6.0]  # val metric of steps 1..5


def _state(step: int) -> dict:
    return {"step": jnp.int32(step), "params": {"w": jnp.full((4, 2), float(step))}}


@pytest.mark.parametrize("mode,kept,best", [("min", [2, 4, 5], 2), ("max", [3, 4, 5], 3)])
def test_keep_last_two_plus_best_and_restore_with_data_state(tmp_path, mode, kept, best):
    cfg = toy.ToyConfig(batch_size=4, examples=64)
    data = iter(toy.make_dataset(cfg, 0, 1))
    batches = []
    ckpt = Checkpointer(tmp_path, CheckpointConfig(keep_last=2, keep_best=1, best_metric="val",
                                                   best_mode=mode, async_save=True))
    for step, metric in enumerate(METRICS, start=1):
        batches.append(next(data))
        ckpt.save(step, _state(step), data, metrics={"val": metric})
    ckpt.wait()
    assert ckpt.all_steps() == kept
    assert ckpt.best_step() == best
    assert ckpt.metrics(best) == {"val": METRICS[best - 1]}
    ckpt.close()

    # A new process would start like this: a fresh manager, a fresh iterator, targets.
    leftover = tmp_path / "6.orbax-checkpoint-tmp-1234567"  # what a kill mid-save leaves
    (leftover / "state").mkdir(parents=True)
    ckpt = Checkpointer(tmp_path, CheckpointConfig(best_metric="val", best_mode=mode))
    assert ckpt.latest_step() == 5
    template = _state(0)
    target = abstract_with_shardings(template, jax.tree.map(lambda x: x.sharding, template))
    fresh = iter(toy.make_dataset(cfg, 0, 1))
    restored = ckpt.restore(best, target, fresh)
    np.testing.assert_array_equal(restored["params"]["w"], np.full((4, 2), float(best)))
    assert int(restored["step"]) == best
    assert restored["params"]["w"].sharding == template["params"]["w"].sharding
    # The iterator continues exactly where it was when checkpoint `best` was saved.
    replay = iter(toy.make_dataset(cfg, 0, 1))
    for _ in range(best):
        next(replay)
    expected = next(replay)
    got = next(fresh)
    np.testing.assert_array_equal(got["x"], expected["x"])
    assert not np.array_equal(got["x"], batches[best - 1]["x"])
    ckpt.close()
    assert not leftover.exists()


def test_best_metric_must_be_among_eval_metrics(tmp_path):
    ckpt = Checkpointer(tmp_path, CheckpointConfig(best_metric="val"))
    with pytest.raises(KeyError, match="best_metric 'val'"):
        ckpt.save(1, _state(1), iter(toy.make_dataset(toy.ToyConfig(), 0, 1)),
                  metrics={"loss": 1.0})
    ckpt.close()
