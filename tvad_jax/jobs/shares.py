"""A split's per-video tables read on several processes: each process reads its share of the
videos (every process_count-th from its index), process 0 joins the shares in the split's order.

    read_in_shares(work_dir, ".npz", read, save, load, publish)   # every process calls it
    table = join_shares(shares, order, ("frame", "object", "texts"))

A table is a dataclass with `videos` (names), `labels` ({name: frame labels}), `video` (each
row's index into `videos`) and row fields: arrays, lists, or {key: list} dicts. The shares
meet in a folder every process can read (a shared file system on a pod, as T-VAD's feature
caches).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import jax
import numpy as np

from tvad_jax.train import distributed

T = TypeVar("T")


def read_in_shares(work: Path, suffix: str, read: Callable[[tuple[int, int]], T],
                   save: Callable[[T, Path], None], load: Callable[[Path], T],
                   publish: Callable[[list[T]], None]) -> None:
    """Each process saves `read((index, count))` into `work`, then process 0 `publish`es the
    loaded shares (in process order) and removes `work`; every process returns once that is
    done."""
    pid, count = jax.process_index(), jax.process_count()
    if pid == 0:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    distributed.barrier("shares-start")
    save(read((pid, count)), work / f"share-{pid}{suffix}")
    distributed.barrier("shares-read")
    if pid == 0:
        publish([load(work / f"share-{i}{suffix}") for i in range(count)])
        shutil.rmtree(work)
    distributed.barrier("shares-joined")


def join_shares(shares: Sequence[T], order: Sequence[str], rows: Sequence[str]) -> T:
    """The shares of one split as one table: videos in `order` (the split's), each video's
    rows in the order its share holds them; `rows` names the row fields."""
    rank = {name: n for n, name in enumerate(order)}
    videos = sorted((v for share in shares for v in share.videos), key=rank.__getitem__)
    index = {name: n for n, name in enumerate(videos)}
    video = np.concatenate([np.asarray([index[share.videos[v]] for v in share.video], np.int64)
                            for share in shares])
    keep = np.argsort(video, kind="stable")
    joined = {name: _take([getattr(share, name) for share in shares], keep) for name in rows}
    labels = {name: label for share in shares for name, label in share.labels.items()}
    return dataclasses.replace(shares[0], videos=videos, labels=labels, video=video[keep],
                               **joined)


def _take(parts: list, keep: np.ndarray):
    """Rows `keep` of the parts of one field, joined: arrays, lists or {key: list}."""
    if isinstance(parts[0], dict):
        return {key: _take([part[key] for part in parts], keep) for key in parts[0]}
    if isinstance(parts[0], np.ndarray):
        return np.concatenate([p for p in parts if len(p)] or parts[:1])[keep]
    joined = [x for part in parts for x in part]
    return [joined[i] for i in keep]
