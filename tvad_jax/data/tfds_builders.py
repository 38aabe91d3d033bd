"""TFDS builder that turns any reader's videos into ArrayRecord shards (no TensorFlow).

One example per video, in reader order: frames resized to the prepared resolution, per-frame
labels, pixel anomaly masks and GT track rows; the dataset metadata lists each split's video
names and frame counts (so clip indices need no decoding). Frames and masks are stored as uint8
Tensor features of raw bytes (TFDS's Image and Video features need TensorFlow; its default
encoding would write every pixel as one int64 of a protobuf list, most of a prepare's time);
readers take the encoding from the shards' own features.json, so shards written before read
as they are. The config name carries a fingerprint of the sources and options, so changed
sources build new shards. TFDS writes into an `incomplete.*` folder and renames it when every
split is done, so an interrupted prepare leaves nothing a later run would read.

TFDS holds a split's serialized examples in memory up to 1 GB and spills the rest to temporary
files through TensorFlow's file API, which this project does not install; shuffling is off, so
the spill would buy nothing. `TvadVideos` raises that limit to half the machine's memory
(`memory_budget`) and names the split when even that is too small.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import shuffle as tfds_shuffle

from tvad_jax.data.readers import VideoRecord, iter_records, make_reader
from tvad_jax.data.video_io import resize_frames
from tvad_jax.errors import DataError

VERSION = "1.0.0"
# TFDS writes a version into `<config>/incomplete.*` and renames it when every split is done.
INCOMPLETE_PREFIX = tfds.core.constants.INCOMPLETE_PREFIX


def config_name(layout: str, height: int, width: int, fingerprint: str) -> str:
    """A builder-config name that changes whenever the sources, options or shapes change
    (`fingerprint` digests the sources and options)."""
    return f"{layout}_{height}x{width}_{fingerprint}"


class TvadVideos(tfds.core.GeneratorBasedBuilder):
    """Whole videos with frame labels, pixel masks and tracks, one example per video."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, layout: str, source: str, height: int, width: int,
                 splits: tuple[str, ...], fingerprint: str, resample: str = "bilinear",
                 skip_bad: bool = False, reader_options=None, report=print, **kwargs):
        self._layout, self._source = layout, source
        self._height, self._width, self._resample = height, width, resample
        self._splits, self._skip_bad = tuple(splits), skip_bad
        self._reader_options = reader_options or {}
        self._report = report
        config = tfds.core.BuilderConfig(
            name=config_name(layout, height, width, fingerprint),
            description=f"{layout} videos from {source} at {height}x{width}")
        super().__init__(config=config, file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        h, w = self._height, self._width
        return tfds.core.DatasetInfo(
            builder=self,
            description="Videos with per-frame anomaly labels, pixel masks and GT tracks.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "frames": tfds.features.Tensor(shape=(None, h, w, 3), dtype=np.uint8,
                                               encoding=tfds.features.Encoding.BYTES),
                "labels": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
                "masks": tfds.features.Tensor(shape=(None, h, w), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "has_masks": tfds.features.Tensor(shape=(), dtype=np.bool_),
                "tracks": tfds.features.Tensor(shape=(None, 6), dtype=np.int64),
                "source_size": tfds.features.Tensor(shape=(2,), dtype=np.int64),
            }),
            disable_shuffling=True,  # keep reader order so `metadata` lines up with indices
            metadata=tfds.core.MetadataDict(names={}, num_frames={}),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        with in_memory_splits(memory_budget()):
            try:
                return super()._download_and_prepare(dl_manager, download_config)
            except ModuleNotFoundError as e:       # TFDS tried to spill through TensorFlow
                if e.name != "tensorflow":
                    raise
                raise DataError(self._source, f"a split of {self._splits} holds more than "
                                f"{memory_budget() >> 20} MiB of prepared examples, more than "
                                "half this machine's memory; prepare fewer splits at a time "
                                "(prepare.splits) or at a smaller size") from None

    def _split_generators(self, dl_manager):
        reader = make_reader(self._layout, self._source, **self._reader_options)
        return {split: self._generate_examples(reader, split) for split in self._splits}

    def _generate_examples(self, reader, split):
        names = self.info.metadata["names"].setdefault(split, [])
        lengths = self.info.metadata["num_frames"].setdefault(split, [])
        for record in iter_records(reader, split, self._skip_bad, self._report):
            example = to_example(record, self._height, self._width, self._resample)
            names.append(record.name)
            lengths.append(record.num_frames)
            yield record.name, example


def memory_budget() -> int:
    """Bytes of serialized examples one split may hold in memory: half the physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


@contextlib.contextmanager
def in_memory_splits(limit: int):
    """TFDS's in-memory example buffer raised to `limit` bytes while the block runs."""
    saved = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(saved, limit)
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = saved


# How prepared frames may be resized (PIL, on uint8; `prepare.resample`): bilinear, what the
# shipped backbone was pretrained on, or bicubic, Qwen2.5-VL's and CLIP's processors'.
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def to_example(record: VideoRecord, height: int, width: int,
               resample: str = "bilinear") -> dict:
    """Resize a record to the prepared resolution with `RESAMPLE[resample]` (masks by
    nearest neighbour; tracks keep source pixel coordinates)."""
    if record.frames.ndim != 4 or record.frames.shape[-1] != 3:
        raise DataError(record.source, f"frames must be [T, H, W, 3], got {record.frames.shape}")
    if len(record.labels) != record.num_frames:
        raise DataError(record.source, f"frame-count mismatch: {len(record.labels)} labels, "
                                       f"{record.num_frames} frames")
    has_masks = record.masks is not None
    masks = record.masks if has_masks else np.zeros(record.frames.shape[:3], np.uint8)
    return {
        "name": record.name,
        "frames": resize_frames(record.frames, height, width, RESAMPLE[resample]),
        "labels": record.labels.astype(np.uint8),
        "masks": resize_frames(masks, height, width, Image.NEAREST),
        "has_masks": has_masks,
        "tracks": record.tracks.astype(np.int64).reshape(-1, 6),
        "source_size": np.asarray(record.frames.shape[1:3], np.int64),
    }
