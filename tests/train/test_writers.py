"""The asynchronous JSONL writer and its TensorBoard event files (read back with tensorboardX's
own Event proto)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tensorboardX.proto.event_pb2 import Event

from tvad_jax.train.writers import MetricsWriter


def _tfrecord_payloads(path: Path) -> list[bytes]:
    """TFRecord framing: u64 length, u32 length CRC, payload, u32 payload CRC (CRCs unchecked)."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + length])
        pos += 16 + length
    assert pos == len(data)
    return out


def test_metrics_reach_jsonl_and_tensorboard(tmp_path):
    writer = MetricsWriter(tmp_path)
    for step in range(1, 4):
        writer.put(step, {"loss": jnp.float32(1.0 / step), "skipped": jnp.int32(0)},
                   write=step != 2)
    writer.put(3, {"val_mse": 0.25}, prefix="eval/")
    writer.drain()
    assert writer.last == {"loss": np.float32(1 / 3).item(), "skipped": 0}
    writer.close()

    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(d["step"], d.get("train/loss"), d.get("eval/val_mse")) for d in lines] == [
        (1, 1.0, None), (3, np.float32(1 / 3).item(), None), (3, None, 0.25)]

    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    events = [Event.FromString(r) for r in _tfrecord_payloads(path)]
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars == [(1, "train/loss", 1.0), (1, "train/skipped", 0.0),
                       (3, "train/loss", np.float32(1 / 3).item()), (3, "train/skipped", 0.0),
                       (3, "eval/val_mse", 0.25)]
    assert all(e.wall_time > 1e9 for e in events)


def test_resumed_writer_drops_lines_after_the_checkpoint(tmp_path):
    writer = MetricsWriter(tmp_path)
    for step in range(1, 6):
        writer.put(step, {"loss": jnp.float32(step)})
    writer.close()
    writer = MetricsWriter(tmp_path, truncate_after=3)
    writer.put(4, {"loss": jnp.float32(40)})
    writer.close()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(d["step"], d["train/loss"]) for d in lines] == [(1, 1), (2, 2), (3, 3), (4, 40)]

    # one event file per writer; the resumed one tells TensorBoard to drop steps after 3
    first, resumed = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"),
                            key=lambda p: int(p.name.rsplit(".", 1)[1]))
    steps = [[(e.step, v.simple_value) for e in map(Event.FromString, _tfrecord_payloads(p))
              for v in e.summary.value] for p in (first, resumed)]
    assert steps == [[(s, float(s)) for s in range(1, 6)], [(4, 40.0)]]
    purge = [e for e in map(Event.FromString, _tfrecord_payloads(resumed))
             if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in purge] == [(4, 1)]  # SessionLog.START
