"""On-disk cache of the frozen backbone's clip features (T-VAD stages 1 and 2).

The vision tower is frozen in both stages, so its outputs are computed once per (backbone
checkpoint, prepared data, split, clip view, layer choice) and read back by every epoch,
every ablation run and the evaluation:

    cache = build_cache(bcfg, params, prepared_dir, "train", view, root, checkpoint_id)
    cache[i]  # {"hidden": [I, T', 1+N, D_v] f16, "visual": [S_v, D] f16,
              #  "tubelet_masks": [T', H, W] u8, "valid": [T] bool, "labels": [T] u8,
              #  "video_index": i32, "start": i32}

Layout: `<root>/<key>/` with `meta.json` and shards `shard-<n>/<array>.npy` of up to
`shard_clips` clips each (memory-mapped on read). `key` hashes everything the features
depend on, so a change of any of them lands in a new folder (invalidation by construction); a
folder appears only complete (built under `incomplete-<key>-*`, renamed at the end), so an
interrupted build is never read. In a multi-process run each process encodes the shards
`n % process_count == process_index` into the shared folder and process 0 publishes it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.files import waiting_lock
from tvad_jax.data.pipeline import (clip_index, find_builder_dir, make_dataset, open_split,
                                    view_loader)
from tvad_jax.errors import DataError
from tvad_jax.models.family import LLAVA, family
from tvad_jax.models.tvad import ClipView, FrozenBackbone
from tvad_jax.runs import progress
from tvad_jax.train.distributed import barrier

ARRAYS = ("hidden", "visual", "tubelet_masks", "valid", "labels", "video_index", "start")
VERSION = 1
# Clips per tower call. On this project's 2-core CPU the shipped tower reads 16-frame clips
# about 12% faster 4 at a time than 8 (their activations stay in cache), to the same bits.
ENCODE_BATCH = 4


def cache_key(bcfg, checkpoint_id: str, builder_dir: Path, split: str, view: ClipView) -> str:
    """A digest of everything the cached features depend on."""
    info = (builder_dir / "dataset_info.json").read_bytes()
    fam = family(bcfg)
    layers = ([list(bcfg.vision.layer_indices), bcfg.vision_feature_layer,
               bcfg.vision_feature_select, bcfg.token_pool] if fam is LLAVA
              else [fam.name, list(bcfg.vision.layer_indices)])
    payload = {
        "version": VERSION, "checkpoint": checkpoint_id, "split": split,
        "data": [str(builder_dir.resolve()), hashlib.sha256(info).hexdigest()],
        "view": dataclasses.asdict(view),
        "layers": layers,
        "vision": dataclasses.asdict(bcfg.vision),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def encode_fn(bcfg) -> Callable:
    """The cache-building pass with the params as an argument: (params {"vision",
    "projector" | "decoder", ...}, frames [B, T, H, W, 3]) -> (hidden [B, I, T', 1+N, D_v],
    visual [B, S_v, D]) float16, one vision-tower pass for both (`family.encode`; not
    jitted: `tvad plan` lowers it too)."""
    fam = family(bcfg)

    def encode(params, frames):
        hidden, tokens = fam.encode(bcfg, params, frames)
        return hidden.astype(jnp.float16), tokens.astype(jnp.float16)

    return encode


def make_encoder(bcfg, params) -> Callable[[np.ndarray], tuple]:
    """frames -> (hidden, visual) of `encode_fn` with these params, jitted."""
    encode = jax.jit(encode_fn(bcfg))
    return lambda frames: encode(params, frames)


class FeatureCache:
    """Read side: clip i -> dict of arrays (memory-mapped shards); a grain data source."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise DataError(self.directory, "not a feature cache (no meta.json)")
        self.meta = json.loads(meta_path.read_text())
        self.shard_clips = self.meta["shard_clips"]
        self._shards = [{name: np.load(d / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
                        for d in sorted(self.directory.glob("shard-*"))]
        total = sum(len(s["start"]) for s in self._shards)
        if total != self.meta["clips"]:
            raise DataError(self.directory, f"holds {total} clips, meta.json says "
                                            f"{self.meta['clips']}")

    def __len__(self) -> int:
        return self.meta["clips"]

    def __getitem__(self, i: int) -> dict:
        shard, row = divmod(int(i), self.shard_clips)
        return {name: np.asarray(a[row]) for name, a in self._shards[shard].items()}

    def column(self, name: str) -> np.ndarray:
        """One array over all clips (e.g. "video_index"), read whole."""
        return np.concatenate([np.asarray(s[name]) for s in self._shards])


def build_cache(bcfg, params, prepared_dir: str | Path, split: str,
                view: ClipView, root: str | Path, checkpoint_id: str,
                batch_size: int = ENCODE_BATCH,
                shard_clips: int = 256, encoder: Callable | None = None,
                report: Callable[[str], None] = print) -> FeatureCache:
    """The cache of `split` under `root`: opened if it exists (the backbone does not run),
    else computed with `encoder` (default `make_encoder(bcfg, params)`) and published.
    Independent processes sharing the root (`tvad sweep --parallel-runs`) build a split one
    at a time, the others opening what it published; the processes of one job each encode
    every count-th shard."""
    builder_dir = find_builder_dir(prepared_dir)
    key = cache_key(bcfg, checkpoint_id, builder_dir, split, view)
    final = Path(root) / f"{split}-{key}"
    one_job = jax.process_count() > 1       # its processes build together, below
    with contextlib.nullcontext() if one_job else waiting_lock(
            final.with_name(f".{final.name}.lock")):
        if (final / "meta.json").is_file():   # published before, or while this one waited
            report(f"[tvad] feature cache hit: {final}")
            return FeatureCache(final)
        source, lengths = open_split(prepared_dir, split)
        loader = view_loader(view, batch_size=shard_clips, shuffle=False, num_epochs=1,
                             drop_remainder=False)
        pid, count = jax.process_index(), jax.process_count()
        work = Path(root) / f"incomplete-{split}-{key}"
        if pid == 0:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        barrier("feature-cache-start")
        encode = encoder or make_encoder(bcfg, params)
        clips = len(clip_index(lengths, loader))
        dataset = make_dataset(source, lengths, loader)
        for n, shard in enumerate(progress(dataset, f"features {split}", unit="shard",
                                           total=-(-clips // shard_clips))):
            if n % count != pid:
                continue
            out = _encode_shard(encode, shard, batch_size)
            tmp = work / f"shard-{n:05d}"
            tmp.mkdir()
            for name in ARRAYS:
                np.save(tmp / f"{name}.npy", out[name])
        barrier("feature-cache-shards")
        if pid == 0:
            meta = {"clips": clips, "shard_clips": shard_clips, "split": split, "key": key,
                    "view": dataclasses.asdict(view), "checkpoint": checkpoint_id,
                    "prepared": str(builder_dir), "lengths": [int(n) for n in lengths]}
            (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            work.rename(final)
            report(f"[tvad] feature cache written: {final} ({clips} clips)")
        barrier("feature-cache-done")
        return FeatureCache(final)


class MemoryFeatures:
    """The features of a split computed now and held in memory: a `FeatureCache` without
    files, for an encoder whose params are still training (`encode_split`)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        self.arrays, self.meta = arrays, meta

    def __len__(self) -> int:
        return len(self.arrays["start"])

    def __getitem__(self, i: int) -> dict:
        return {name: a[int(i)] for name, a in self.arrays.items()}

    def column(self, name: str) -> np.ndarray:
        return self.arrays[name]


def encode_split(encode: Callable, prepared_dir: str | Path, split: str, view: ClipView,
                 batch_size: int = ENCODE_BATCH) -> MemoryFeatures:
    """Every clip of a prepared split through `encode` (as `make_encoder` returns), in memory."""
    source, lengths = open_split(prepared_dir, split)
    loader = view_loader(view, batch_size=64, shuffle=False, num_epochs=1,
                         drop_remainder=False)
    parts = [_encode_shard(encode, shard, batch_size)
             for shard in make_dataset(source, lengths, loader)]
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in ARRAYS}
    return MemoryFeatures(arrays, {"lengths": [int(n) for n in lengths],
                                   "view": dataclasses.asdict(view)})


def feature_cache(cfg, backbone: FrozenBackbone, split: str, view: ClipView,
                  report: Callable[[str], None] = print) -> FeatureCache:
    """The cache of a prepared split for a backbone (built if missing). cfg: the root config
    (`cfg.prepared_dir`; the cache root is `cfg.tvad.cache_dir` or <prepared>/features)."""
    root = cfg.tvad.cache_dir or str(Path(cfg.prepared_dir) / "features")
    return build_cache(backbone.cfg, backbone.params, cfg.prepared_dir, split, view, root,
                       backbone.digest, report=report)


def _encode_shard(encode: Callable, shard: dict, batch_size: int) -> dict:
    """Run the encoder over a shard in fixed-size batches (the last one zero-padded)."""
    frames = shard["frames"]
    n = len(frames)
    hidden, visual = [], []
    for i in range(0, n, batch_size):
        chunk = frames[i:i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        h, v = encode(chunk)
        hidden.append(np.asarray(h)[:batch_size - pad])
        visual.append(np.asarray(v)[:batch_size - pad])
    out = {name: shard[name] for name in ARRAYS[2:]}
    out["hidden"], out["visual"] = np.concatenate(hidden), np.concatenate(visual)
    return out


class _Select:
    """grain transform: keep some keys of a cache row, add per-video text arrays."""

    def __init__(self, keys: Sequence[str], texts: dict[str, np.ndarray] | None = None):
        self.keys, self.texts = tuple(keys), texts

    def __call__(self, row: dict) -> dict:
        out = {k: row[k] for k in self.keys}
        if self.texts is not None:
            v = int(row["video_index"])
            out.update({k: a[v] for k, a in self.texts.items()})
        return out


class _ProcessPart:
    """grain transform: this process's consecutive rows of a global batch (the engine's
    data contract in a multi-process run)."""

    def __init__(self, index: int, count: int):
        self.index, self.count = index, count

    def __call__(self, batch: dict) -> dict:
        return {k: np.split(np.asarray(v), self.count)[self.index] for k, v in batch.items()}


class _Rows:
    """A random-access source of some rows of a cache, in a given order (repeats allowed)."""

    def __init__(self, cache: FeatureCache, rows: np.ndarray):
        self.cache, self.rows = cache, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.cache[int(self.rows[i])]


def cache_stream(cache: FeatureCache, batch_size: int, keys: Sequence[str], seed: int = 0,
                 shuffle: bool = True, texts: dict[str, np.ndarray] | None = None,
                 rows: np.ndarray | None = None,
                 augment: Callable[[dict, np.random.Generator], dict] | None = None
                 ) -> grain.DatasetIterator:
    """Batches of cache rows: endless and shuffled per epoch for training, or one ordered
    pass (last batch partial) for evaluation. `texts` maps a name to an array indexed by video
    (`[num_videos, ...]`) attached to each row; `rows` are the cache rows of one epoch (all by
    default; repeating some oversamples them); `augment(example, rng)` changes each example
    (its generator seeded by `seed` and the example's place in the stream). A checkpointable
    grain iterator. In a multi-process run a training stream yields this process's part of
    each global batch of `batch_size` (every process shuffles alike); an evaluation pass
    yields whole batches."""
    ds = grain.MapDataset.source(cache if rows is None else _Rows(cache, rows))
    if shuffle:
        ds = ds.shuffle(seed=seed).repeat()
    ds = ds.map(_Select(keys, texts))
    if augment is not None:
        ds = ds.random_map(augment, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=shuffle)
    if shuffle and jax.process_count() > 1:
        if batch_size % jax.process_count():
            raise ValueError(f"batch_size {batch_size} is not divisible by the "
                             f"{jax.process_count()} processes")
        ds = ds.map(_ProcessPart(jax.process_index(), jax.process_count()))
    return iter(ds.to_iter_dataset())
