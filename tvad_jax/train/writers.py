"""Metric writers: JSONL lines and TensorBoard scalars (via tensorboardX), fed by a thread.

The train loop hands each step's metrics (device arrays) to `MetricsWriter.put` and goes on;
a thread fetches them with `jax.device_get` once they are computed, writes them, and records the
first non-finite loss. The queue is bounded, so the host never runs more than a few steps ahead
of the device.

`drain` puts every JSONL line on disk. tensorboardX writes event files from its own thread, so
they may trail by up to `_TB_FLUSH_SECS` seconds; `close` writes everything.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter

_TB_FLUSH_SECS = 10
_writer_ids = itertools.count()  # tensorboardX names files by the second: keep them distinct


class MetricsWriter:
    """Writes per-step metrics from a background thread; notes the first non-finite step.

    A step is non-finite when its loss is NaN/inf or the train step reports `skipped`
    (a non-finite gradient).

    Only the writing process (`write=True`, usually process 0) touches files, but every process
    runs the thread so that all of them see the same non-finite step.
    """

    def __init__(self, run_dir: str | Path | None, write: bool = True, max_pending: int = 4,
                 truncate_after: int | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.write = write and self.run_dir is not None
        self.last: dict[str, float] = {}
        self.last_step: int | None = None
        self.first_nonfinite: tuple[int, float] | None = None
        self.skipped_steps = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._jsonl = self._events = None
        if self.write:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "metrics.jsonl"
            if truncate_after is not None and path.exists():
                _truncate_jsonl(path, truncate_after)
            self._jsonl = open(path, "a")
            self._events = SummaryWriter(
                str(self.run_dir / "tensorboard"), flush_secs=_TB_FLUSH_SECS,
                filename_suffix=f".{os.getpid()}.{next(_writer_ids)}",
                # TensorBoard hides older events from this step on (the resumed run rewrites them)
                purge_step=None if truncate_after is None else truncate_after + 1)
        self._thread = threading.Thread(target=self._run, name="metrics-writer", daemon=True)
        self._thread.start()

    def put(self, step: int, metrics: Any, prefix: str = "train/", write: bool = True) -> None:
        """Queue the metrics of `step` (arrays may still be computing). Blocks if far behind.

        Train metrics of every step should be put (that is how skipped steps are noticed);
        `write=False` checks them without writing a line.
        """
        self._raise_if_failed()
        self._queue.put((step, metrics, prefix, write))

    def drain(self) -> None:
        """Wait until everything queued so far is written (TensorBoard: handed to tensorboardX)."""
        self._queue.join()
        self._raise_if_failed()
        if self._jsonl is not None:
            self._jsonl.flush()
            self._events.flush()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._jsonl is not None:
            self._jsonl.close()
            self._events.close()
        self._raise_if_failed()

    def _raise_if_failed(self):
        if self._error is not None:
            raise RuntimeError("metrics writer thread failed") from self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._write(*item)
            except BaseException as e:  # surfaced in the main thread by put/drain/close
                self._error = e
            finally:
                self._queue.task_done()

    def _write(self, step: int, metrics: Any, prefix: str, write: bool) -> None:
        host = {k: _to_python(v) for k, v in jax.device_get(metrics).items()}
        if prefix == "train/":
            self.last, self.last_step = host, step
            loss = host.get("loss")
            bad = host.get("skipped", 0) or (loss is not None and not math.isfinite(loss))
            if bad:
                self.skipped_steps += 1
                if self.first_nonfinite is None:
                    self.first_nonfinite = (step, loss)
        if self.write and write:
            now = time.time()
            record = {"step": step, "time": round(now, 3),
                      **{prefix + k: v for k, v in host.items()}}
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
            for k, v in host.items():
                if isinstance(v, (int, float)):
                    self._events.add_scalar(prefix + k, v, global_step=step, walltime=now)


def _to_python(v):
    a = np.asarray(v)
    if a.ndim == 0:
        return a.item() if a.dtype.kind in "iub" else float(a)
    return a.tolist()


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop lines after `last_step` (a resumed run rewrites them)."""
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep))
