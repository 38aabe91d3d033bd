"""grain pipelines over prepared ArrayRecord shards: fixed-shape clips for jitted steps.

A clip is `clip_len` frames taken every `frame_step` frames from a start; starts are every
`clip_stride` frames (with `interleave`, each start also brings the frame_step - 1 starts after
it, so that sparse clips together still cover every frame). Clips running past a video's end are
padded (repeating the last frame) and flagged by `valid`. Masks and labels are also merged
pairwise in time (logical OR) to match the backbone's 2-frame tubelets. The sequence of clips is
shuffled per epoch with one seed shared by all processes; each process loads its contiguous
block of rows of every global batch, so hosts see disjoint data and together exactly what one
process would. The iterator is a grain `DatasetIterator`: `get_state`/`set_state` make it
checkpointable.

    batch["frames"]        [B, T, H, W, 3] float32, normalized
    batch["valid"]         [B, T] bool
    batch["labels"]        [B, T] uint8
    batch["masks"]         [B, T, H, W] uint8
    batch["tubelet_labels"] [B, T/2] uint8
    batch["tubelet_masks"] [B, T/2, H, W] uint8
    batch["video_index"], batch["start"]  [B] int32 (to map predictions back to frames)
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
from pathlib import Path
from typing import Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from tvad_jax import config as config_lib
from tvad_jax.data.tfds_builders import TvadVideos
from tvad_jax.errors import DataError

# CLIP's image normalization (RGB), the backbone family the models use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    clip_len: int = 16
    clip_stride: int = 8
    frame_step: int = 1
    interleave: bool = False
    batch_size: int = 4          # global batch; each process loads batch_size / process_count
    shuffle: bool = True
    seed: int = 0
    num_epochs: int = 0          # 0 = repeat forever
    pad_last: bool = True
    drop_remainder: bool = True
    worker_count: int = 0
    # Decoded videos each loader keeps (`RecentRecords`; 0: none). A record holds a whole
    # video, so without them an ordered pass decodes each video once per clip (the feature
    # caches: 4 times per 64-frame synthetic video at 16-frame clips).
    recent_videos: int = 4
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "clip_len", "clip_stride", "frame_step", "batch_size")
        config_lib.check_at_least(self, 0, "num_epochs", "worker_count", "recent_videos")


def view_loader(view, **settings) -> LoaderConfig:
    """The LoaderConfig that cuts videos as `view` does (its clip_len, clip_stride,
    frame_step, interleave and pad_last: a `models.tvad.ClipView`), with further settings."""
    fields = ("clip_len", "clip_stride", "frame_step", "interleave", "pad_last")
    return LoaderConfig(**{f: getattr(view, f) for f in fields}, **settings)


def clip_starts(num_frames: int, clip_len: int, stride: int, frame_step: int = 1,
                pad_last: bool = True, interleave: bool = False) -> list[int]:
    """Clip start frames covering a video; with `pad_last`, one padded clip covers the tail.

    `interleave`: every start s also brings s + 1 .. s + frame_step - 1, so the frame_step
    clips of a start together take every frame of a block of clip_len * frame_step frames
    (stride = that block tiles the video: each frame is in exactly one clip)."""
    phases = frame_step if interleave else 1
    span = (clip_len - 1) * frame_step + phases          # frames one start's clips reach
    starts = list(range(0, max(num_frames - span, 0) + 1, stride))
    if pad_last and starts[-1] + span < num_frames:
        starts.append(starts[-1] + stride)
    return [s + r for s in starts for r in range(phases)]


def clip_index(lengths: list[int], cfg: LoaderConfig) -> np.ndarray:
    """int64 [C, 2] rows (video_index, start) of every clip of every video."""
    rows = [(v, s) for v, n in enumerate(lengths)
            for s in clip_starts(n, cfg.clip_len, cfg.clip_stride, cfg.frame_step, cfg.pad_last,
                                 cfg.interleave)]
    return np.asarray(rows, np.int64).reshape(-1, 2)


def normalize_frames(frames: np.ndarray, mean: Sequence[float] = CLIP_MEAN,
                     std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """uint8 RGB frames [..., 3] -> float32 (x / 255 - mean) / std, computed as the loader
    feeds the towers (so that `tvad detect` sees what training and evaluation saw)."""
    return (np.asarray(frames).astype(np.float32) - np.asarray(mean, np.float32) * 255) * \
        (1.0 / (np.asarray(std, np.float32) * 255))


class RecentRecords:
    """`source[i]` that keeps the last `size` records read, for loaders whose consecutive
    clips come from one video. Thread-safe (grain's read threads ask for clips at once): a
    record asked for while another thread reads it waits for that read. Pickles without
    the records (grain worker processes start empty)."""

    def __init__(self, source, size: int):
        self.source, self.size = source, size
        self._lock = threading.Lock()
        self._records: collections.OrderedDict[int, concurrent.futures.Future] = \
            collections.OrderedDict()

    def __getstate__(self) -> dict:
        return {"source": self.source, "size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["size"])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        with self._lock:
            record = self._records.get(i)
            reader = record is None
            if reader:
                record = self._records[i] = concurrent.futures.Future()
                while len(self._records) > self.size:
                    self._records.popitem(last=False)
            else:
                self._records.move_to_end(i)
        if reader:
            try:
                record.set_result(self.source[i])
            except BaseException as err:
                with self._lock:
                    if self._records.get(i) is record:
                        del self._records[i]        # a later ask reads it again
                record.set_exception(err)
        return record.result()


class ClipLoader:
    """Index of a clip -> one fixed-shape example (picklable for grain worker processes)."""

    def __init__(self, source, index: np.ndarray, cfg: LoaderConfig):
        if cfg.clip_len % 2:
            raise ValueError("clip_len must be even (2-frame tubelets)")
        self.source, self.index, self.cfg = RecentRecords(source, cfg.recent_videos), index, cfg

    def __call__(self, clip: int) -> dict:
        video, start = (int(v) for v in self.index[clip])
        record = self.source[video]
        n = len(record["labels"])
        frame_ids = start + np.arange(self.cfg.clip_len) * self.cfg.frame_step
        valid = frame_ids < n
        frame_ids = np.minimum(frame_ids, n - 1)
        labels = record["labels"][frame_ids] * valid
        masks = record["masks"][frame_ids] * valid[:, None, None]
        t, h, w = masks.shape
        return {
            "frames": normalize_frames(record["frames"][frame_ids], self.cfg.mean, self.cfg.std),
            "valid": valid,
            "labels": labels.astype(np.uint8),
            "masks": masks.astype(np.uint8),
            "tubelet_labels": labels.reshape(t // 2, 2).max(1).astype(np.uint8),
            "tubelet_masks": masks.reshape(t // 2, 2, h, w).max(1).astype(np.uint8),
            "video_index": np.int32(video),
            "start": np.int32(start),
        }


def split_names(prepared_dir: str | Path, split: str) -> list[str]:
    """The video names of a prepared split, in source-index order."""
    builder = tfds.builder_from_directory(str(find_builder_dir(prepared_dir)))
    return list(builder.info.metadata["names"][split])


def open_split(prepared_dir: str | Path, split: str):
    """The prepared data source of `split` and each video's frame count."""
    builder_dir = find_builder_dir(prepared_dir)
    builder = tfds.builder_from_directory(str(builder_dir))
    if split not in builder.info.splits:
        raise DataError(builder_dir, f"split {split!r} was not prepared; have "
                                     f"{sorted(builder.info.splits)}")
    lengths = builder.info.metadata.get("num_frames", {}).get(split)
    source = builder.as_data_source(split=split)
    if lengths is None or len(lengths) != len(source):
        raise DataError(builder_dir, "prepared data has no per-video frame counts; "
                                     "re-run `tvad data prepare`")
    if len(source) == 0:
        raise DataError(builder_dir, f"split {split!r} is empty")
    return source, lengths


def find_builder_dir(prepared_dir: str | Path) -> Path:
    """The single finished TFDS version folder under `prepared_dir` (incomplete ones ignored)."""
    root = Path(prepared_dir) / TvadVideos.name
    found = [p.parent for p in root.glob("*/*/dataset_info.json")
             if "incomplete" not in p.parent.name]
    if not found:
        raise DataError(prepared_dir, "no prepared dataset here; run `tvad data prepare`")
    if len(found) > 1:
        raise DataError(prepared_dir, f"several prepared datasets: {sorted(map(str, found))}; "
                                      "pass the one you want")
    return found[0]


def make_dataset(source, lengths: list[int], cfg: LoaderConfig, process_index: int = 0,
                 process_count: int = 1, transform=None) -> grain.IterDataset:
    """The batched clip stream of one process: its contiguous block of every global batch,
    so that N processes together see exactly the batches (and row order) of one.

    `transform(example) -> example` (picklable) runs on each clip before batching, e.g. to
    attach text or to drop keys a stage does not need."""
    if cfg.batch_size % process_count:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {process_count} "
                         "processes")
    index = clip_index(lengths, cfg)
    order = grain.MapDataset.range(len(index))
    if cfg.shuffle:
        order = order.shuffle(seed=cfg.seed)
    order = order.repeat(cfg.num_epochs or None)
    local_batch = cfg.batch_size // process_count
    block = _ProcessBlock(order, process_index, local_batch, cfg.batch_size)
    ds = grain.MapDataset.range(len(order) // process_count).map(block)
    ds = ds.map(ClipLoader(source, index, cfg))
    if transform is not None:
        ds = ds.map(transform)
    ds = ds.batch(local_batch, drop_remainder=cfg.drop_remainder)
    iter_ds = ds.to_iter_dataset()
    if cfg.worker_count > 0:
        _allow_multiprocessing_with_jax()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
    return iter_ds


class _ProcessBlock:
    """Local element j -> the global clip this process loads: rows
    [p * local, (p + 1) * local) of global batch j // local."""

    def __init__(self, order, process_index: int, local_batch: int, global_batch: int):
        self.order, self.process_index = order, process_index
        self.local_batch, self.global_batch = local_batch, global_batch

    def __call__(self, j: int) -> int:
        batch, row = divmod(int(j), self.local_batch)
        return self.order[batch * self.global_batch + self.process_index * self.local_batch + row]


def _allow_multiprocessing_with_jax() -> None:
    """grain 0.2.18 reads absl flags in workers; with jax imported they must be parsed."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def scatter_clips(values: np.ndarray, video_index: np.ndarray, start: np.ndarray,
                  lengths: Sequence[int], tubelet: int = 2, frame_step: int = 1,
                  reduce: str = "mean") -> list[np.ndarray]:
    """Per-tubelet clip outputs [C, T', ...] -> one array [n_v, ...] per video.

    Tubelet j of a clip starting at s covers frames s + (tubelet*j + k) * frame_step,
    k < tubelet; frames past the video end are dropped; a frame covered by several clips gets
    the mean (or max) of their values. Raises if a frame of some video is never covered.
    """
    values = np.asarray(values, np.float32)
    C, T = values.shape[:2]
    offsets = np.arange(T * tubelet) * frame_step                       # frames of a clip
    per_frame = np.repeat(values, tubelet, axis=1)                      # C, T'*tubelet, ...
    out, counts = [], []
    for n in lengths:
        out.append(np.full((n,) + values.shape[2:], -np.inf if reduce == "max" else 0.0,
                           np.float32))
        counts.append(np.zeros(n, np.int32))
    for c in range(C):
        v = int(video_index[c])
        frames = int(start[c]) + offsets
        keep = frames < lengths[v]
        f = frames[keep]
        if reduce == "max":
            out[v][f] = np.maximum(out[v][f], per_frame[c][keep])
        else:
            out[v][f] += per_frame[c][keep]
        counts[v][f] += 1
    for v, (o, k) in enumerate(zip(out, counts)):
        if (k == 0).any():
            raise ValueError(f"video {v}: frames {np.flatnonzero(k == 0)[:5].tolist()} are in "
                             "no clip")
        if reduce == "mean":
            o /= k.reshape((-1,) + (1,) * (o.ndim - 1))
    return out
