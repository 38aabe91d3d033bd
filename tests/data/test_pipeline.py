import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tvad_jax.data.pipeline import (LoaderConfig, RecentRecords, clip_index, clip_starts,
                                    find_builder_dir, make_dataset, open_split, scatter_clips)
from tvad_jax.data.prepare import prepare
from tvad_jax.data.readers import make_reader, parse_split_files
from tvad_jax.errors import DataError


def test_clip_starts():
    assert clip_starts(32, 8, 8) == [0, 8, 16, 24]
    assert clip_starts(30, 8, 8) == [0, 8, 16, 24]            # last clip padded (24..31)
    assert clip_starts(30, 8, 8, pad_last=False) == [0, 8, 16]
    assert clip_starts(5, 8, 4) == [0]                         # shorter than one clip
    assert clip_starts(20, 4, 4, frame_step=2, pad_last=False) == [0, 4, 8, 12]  # span 7
    index = clip_index([16, 9], LoaderConfig(clip_len=8, clip_stride=8))
    assert index.tolist() == [[0, 0], [0, 8], [1, 0], [1, 8]]


def test_interleaved_clips_cover_every_frame_once():
    # 4 frames taken every 4th: a start and its 3 phases cover a block of 16 frames.
    assert clip_starts(16, 4, 16, frame_step=4, interleave=True) == [0, 1, 2, 3]
    assert clip_starts(16, 4, 16, frame_step=4, pad_last=False) == [0]     # 13 of 16 frames
    # 21 frames: a second, padded block starts at 16 (its clips run past the end).
    assert clip_starts(21, 4, 16, frame_step=4, interleave=True) == [0, 1, 2, 3,
                                                                     16, 17, 18, 19]
    for n in (16, 21, 37, 64):
        starts = clip_starts(n, 4, 16, frame_step=4, interleave=True)
        frames = [s + 4 * k for s in starts for k in range(4) if s + 4 * k < n]
        assert sorted(frames) == list(range(n)), n
    index = clip_index([16], LoaderConfig(clip_len=4, clip_stride=16, frame_step=4,
                                          interleave=True))
    assert index[:, 1].tolist() == [0, 1, 2, 3]


def _expected_clip(record, start, cfg):
    ids = start + np.arange(cfg.clip_len) * cfg.frame_step
    valid = ids < len(record.labels)
    ids = np.minimum(ids, len(record.labels) - 1)
    return ids, valid


def test_batches_match_the_reader(tiny_prepared):
    cfg, prepared_dir = tiny_prepared
    source, lengths = open_split(prepared_dir, "test")
    reader = make_reader("synthetic", cfg.synth.out_dir)
    names = reader.video_names("test")
    assert lengths == [cfg.synth.num_frames] * len(names)
    loader = dataclasses.replace(cfg.loader, shuffle=False, num_epochs=1, clip_stride=10)
    batches = list(make_dataset(source, lengths, loader))
    assert len(batches) == len(clip_index(lengths, loader)) // loader.batch_size
    b, t, h = loader.batch_size, loader.clip_len, cfg.prepare.height
    batch = batches[-1]
    assert batch["frames"].shape == (b, t, h, h, 3) and batch["frames"].dtype == np.float32
    assert batch["tubelet_masks"].shape == (b, t // 2, h, h)
    records = {}
    for batch in batches:
        for i in range(b):
            video, start = int(batch["video_index"][i]), int(batch["start"][i])
            record = records.setdefault(video, reader.read(names[video]))
            ids, valid = _expected_clip(record, start, loader)
            np.testing.assert_array_equal(batch["valid"][i], valid)
            np.testing.assert_array_equal(batch["labels"][i], record.labels[ids] * valid)
            masks = record.masks[ids] * valid[:, None, None]
            np.testing.assert_array_equal(batch["masks"][i], masks)
            merged = np.maximum(masks[0::2], masks[1::2])      # pairwise OR in time
            np.testing.assert_array_equal(batch["tubelet_masks"][i], merged)
            pixels = batch["frames"][i] * np.asarray(loader.std) + np.asarray(loader.mean)
            decoded = record.frames[ids].astype(np.float32) / 255
            np.testing.assert_allclose(pixels, decoded, atol=1e-4)
    assert any(not batch["valid"].all() for batch in batches)   # a padded tail clip


def test_iterator_restore_gives_identical_next_batches(tiny_prepared):
    _, prepared_dir = tiny_prepared
    source, lengths = open_split(prepared_dir, "train")
    loader = LoaderConfig(clip_len=8, clip_stride=4, batch_size=2, seed=3)
    iterator = iter(make_dataset(source, lengths, loader))
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    fresh = iter(make_dataset(source, lengths, loader))
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


class _CountingSource:
    """A data source that counts its reads per index (and can be slow, or fail once)."""

    def __init__(self, records, delay: float = 0.0, fail_once: int | None = None):
        self.records, self.delay, self.fail_once = records, delay, fail_once
        self.reads: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        with self._lock:
            self.reads[i] = self.reads.get(i, 0) + 1
            fail = i == self.fail_once
            if fail:
                self.fail_once = None
        time.sleep(self.delay)
        if fail:
            raise OSError(f"record {i}: read failed")
        return self.records[i]


def test_an_ordered_loader_reads_each_video_once(tiny_prepared):
    _, prepared_dir = tiny_prepared
    source, lengths = open_split(prepared_dir, "train")
    counting = _CountingSource(source)
    loader = LoaderConfig(clip_len=4, clip_stride=4, shuffle=False, num_epochs=1)
    loader = dataclasses.replace(loader, batch_size=len(clip_index(lengths, loader)))  # all
    batches = list(make_dataset(counting, lengths, loader))
    clips_per_video = np.bincount(batches[0]["video_index"])
    assert (clips_per_video > 1).all()        # several clips of each video, one read each
    assert counting.reads == {v: 1 for v in range(len(lengths))}
    uncached = _CountingSource(source)
    plain = list(make_dataset(uncached, lengths, dataclasses.replace(loader, recent_videos=0)))
    assert uncached.reads == dict(enumerate(clips_per_video.tolist()))   # once per clip
    for key in plain[0]:
        np.testing.assert_array_equal(batches[0][key], plain[0][key])


def test_recent_records_share_reads_across_threads_evict_and_retry():
    records = [{"frames": np.full((2, 2), i)} for i in range(4)]
    source = _CountingSource(records, delay=0.05, fail_once=3)
    recent = RecentRecords(source, size=2)
    got = [None] * 8
    threads = [threading.Thread(target=lambda j: got.__setitem__(j, recent[1]), args=(j,))
               for j in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.reads == {1: 1} and all(g is records[1] for g in got)
    recent[0], recent[2]                       # 1 is now the oldest of three: dropped
    assert recent[2] is records[2] and source.reads == {0: 1, 1: 1, 2: 1}
    recent[1]
    assert source.reads[1] == 2
    with pytest.raises(OSError, match="record 3"):
        recent[3]
    assert recent[3] is records[3] and source.reads[3] == 2     # the failure is not kept
    plain = RecentRecords(records, size=2)
    plain[1]
    copy = pickle.loads(pickle.dumps(plain))          # as grain sends it to a worker
    assert copy[1]["frames"][0, 0] == 1 and copy.size == 2 and len(copy) == 4


def test_processes_split_each_global_batch_into_contiguous_blocks(tiny_prepared):
    _, prepared_dir = tiny_prepared
    source, lengths = open_split(prepared_dir, "train")
    loader = LoaderConfig(clip_len=8, clip_stride=4, batch_size=4, num_epochs=1)

    def clips(batches):
        return [[(int(v), int(s)) for v, s in zip(b["video_index"], b["start"])]
                for b in batches]

    whole = clips(make_dataset(source, lengths, loader))
    parts = [clips(make_dataset(source, lengths, loader, process_index=p, process_count=2))
             for p in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) > 0
    for global_batch, first, second in zip(whole, *parts):
        assert first + second == global_batch
    with pytest.raises(ValueError, match="not divisible"):
        make_dataset(source, lengths, dataclasses.replace(loader, batch_size=3), 0, 2)


def test_split_files_and_missing_splits(tiny_prepared, tmp_path):
    _, prepared_dir = tiny_prepared
    assert parse_split_files("train=a.txt+b.txt;test=c.txt") == \
        {"train": ["a.txt", "b.txt"], "test": ["c.txt"]}
    with pytest.raises(ValueError, match="split=file"):
        parse_split_files("train")
    with pytest.raises(DataError, match="split 'holdout' was not prepared"):
        open_split(prepared_dir, "holdout")
    with pytest.raises(DataError, match="no prepared dataset here"):
        open_split(tmp_path, "train")


def test_prepare_writes_annotations(tiny_prepared):
    cfg, prepared_dir = tiny_prepared
    builder = find_builder_dir(prepared_dir)
    lines = (builder / "annotations" / "test.jsonl").read_text().splitlines()
    assert len(lines) == cfg.synth.videos_test


_KILLED_PREPARE = textwrap.dedent("""
    import sys, time
    import tvad_jax.data.tfds_builders as builders
    from tvad_jax.data.prepare import prepare
    from tvad_jax import config, configs  # configs registers "tiny"
    original = builders.to_example
    count = [0]
    def slow(*args):
        count[0] += 1
        if count[0] == 3:
            print("HALFWAY", flush=True)
            time.sleep(60)
        return original(*args)
    builders.to_example = slow
    cfg = config.resolve("tiny", ["synth.out_dir=" + sys.argv[1], "prepare.annotate=false"])
    prepare(cfg, report=lambda m: None)
""")


def test_killed_prepare_leaves_nothing_readable(tiny_synth, tmp_path):
    """SIGKILL in the middle of writing shards: no dataset is visible, and a rerun works."""
    cfg, root = tiny_synth
    copy = tmp_path / "synth"
    subprocess.run(["cp", "-r", root, str(copy)], check=True)
    subprocess.run(["rm", "-rf", str(copy / "prepared")], check=True)
    process = subprocess.Popen([sys.executable, "-c", _KILLED_PREPARE, str(copy)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 120
        while process.stdout.readline().strip() != "HALFWAY":
            assert time.time() < deadline and process.poll() is None
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert list((copy / "prepared").rglob("*incomplete*"))       # the partial write exists...
    with pytest.raises(DataError, match="no prepared dataset"):
        find_builder_dir(copy / "prepared")                       # ...but is never read
    again = dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, out_dir=str(copy)),
                                prepare=dataclasses.replace(cfg.prepare, annotate=False))
    prepare(again, report=lambda m: None)
    source, lengths = open_split(copy / "prepared", "train")
    assert len(source) == cfg.synth.videos_train


def test_worker_processes_give_the_same_batches(tiny_prepared):
    _, prepared_dir = tiny_prepared
    source, lengths = open_split(prepared_dir, "train")
    loader = LoaderConfig(clip_len=8, clip_stride=8, batch_size=2, num_epochs=1, seed=1)
    expected = list(make_dataset(source, lengths, loader))
    parallel = make_dataset(source, lengths, dataclasses.replace(loader, worker_count=2))
    count = 0
    for want, got in zip(expected, parallel):
        for key in want:
            np.testing.assert_array_equal(np.asarray(got[key]), want[key])
        count += 1
    assert count == len(expected) > 0


def test_scatter_clips_averages_overlaps_and_drops_padding():
    # 2 clips of 2 tubelets (4 frames) with stride 2 over a 5-frame video, then a padded clip
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = scatter_clips(values, np.zeros(3, int), np.array([0, 2, 4]), [5])[0]
    # frame: 0 1 2 3 4 ; clip0 covers 0-3 (1,1,2,2), clip1 2-5 (3,3,4,[4]), clip2 4-7 (5,..)
    np.testing.assert_allclose(out, [1, 1, (2 + 3) / 2, (2 + 3) / 2, (4 + 5) / 2])
    with pytest.raises(ValueError, match="in no clip"):   # frame 4 of 5 is never covered
        scatter_clips(np.array([[1.0, 2.0]]), np.zeros(1, int), np.array([0]), [5])


def test_scatter_clips_frame_step_and_max():
    out = scatter_clips(np.array([[1.0, 2.0], [7.0, 0.0]]), np.zeros(2, int),
                        np.array([0, 1]), [8], tubelet=2, frame_step=2, reduce="max")[0]
    # clip 0: frames 0,2 -> 1 ; 4,6 -> 2 ; clip 1: frames 1,3 -> 7 ; 5,7 -> 0
    np.testing.assert_allclose(out, [1, 7, 1, 7, 2, 0, 2, 0])
