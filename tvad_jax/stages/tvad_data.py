"""Data of the T-VAD stages: feature-cache streams, dialogue token arrays, clips -> frames.

    ds = cache_stream(cache, batch_size=4, keys=("hidden", "tubelet_masks", "valid"))
    ids, targets, length = dialogue_arrays(tokenizer, turns, max_len=160)
    per_video = scatter_clips(values, video_index, start, lengths)   # [C, T', ...] -> frames

A dialogue is the SFT text of one video: every turn `<s> question answer </s>` in order, the
loss on answer tokens (and each turn's `</s>`) only, with the first reference answer of each
turn (`answers[0]`, the canonical phrasing; the others stay references for BLEU).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import grain
import numpy as np

from tvad_jax.errors import DataError
from tvad_jax.data.pipeline import find_builder_dir, split_names
from tvad_jax.stages.features import FeatureCache


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


def cache_stream(cache: FeatureCache, batch_size: int, keys: Sequence[str], seed: int = 0,
                 shuffle: bool = True, texts: dict[str, np.ndarray] | None = None
                 ) -> grain.DatasetIterator:
    """Batches of cache rows: endless and shuffled per epoch for training, or one ordered
    pass (last batch partial) for evaluation. `texts`
    maps a name to an array indexed by video (`[num_videos, ...]`) attached to each row.
    A checkpointable grain iterator."""
    ds = grain.MapDataset.source(cache)
    if shuffle:
        ds = ds.shuffle(seed=seed).repeat()
    ds = ds.map(_Select(keys, texts)).batch(batch_size, drop_remainder=shuffle)
    return iter(ds.to_iter_dataset())


# ---------------------------------------------------------------------------------------------
# Dialogues

def read_annotations(prepared_dir: str | Path, split: str) -> list[dict]:
    """The annotation rows of a split in the split's video order (`tvad data prepare`)."""
    path = find_builder_dir(prepared_dir) / "annotations" / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(path, "missing: prepare the data with annotations (prepare.annotate)")
    rows = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            rows[row["video"]] = row
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(path, f"line {n}: not an annotation row ({err})") from None
    names = split_names(prepared_dir, split)
    missing = [n for n in names if n not in rows]
    if missing:
        raise DataError(path, f"no annotation for {len(missing)} videos, e.g. {missing[0]}")
    return [rows[n] for n in names]


def turn_tokens(tokenizer, question: str, answer: str | None) -> tuple[list[int], list[int]]:
    """(prompt ids `<s> question`, reply ids ` answer </s>`; [] when answer is None)."""
    prompt = [tokenizer.bos_token_id, *tokenizer(question)["input_ids"]]
    if answer is None:
        return prompt, []
    return prompt, [*tokenizer(" " + answer)["input_ids"], tokenizer.eos_token_id]


def dialogue_arrays(tokenizer, turns: Sequence[dict], max_len: int
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """ids [max_len] (right-padded), targets [max_len] (next token where it belongs to an
    answer, else -1) and the real length, of the whole turns that fit in max_len."""
    ids: list[int] = []
    targets: list[int] = []
    for turn in turns:
        prompt, reply = turn_tokens(tokenizer, turn["question"], turn["answers"][0])
        if len(ids) + len(prompt) + len(reply) > max_len:
            break
        seq = prompt + reply
        # position i predicts seq[i + 1]: answer tokens start after the prompt
        targets += [-1] * (len(prompt) - 1) + reply + [-1]
        ids += seq
    if not ids:
        raise ValueError(f"max_len {max_len} holds no whole dialogue turn")
    length = len(ids)
    pad = max_len - length
    return (np.asarray(ids + [tokenizer.pad_token_id] * pad, np.int32),
            np.asarray(targets + [-1] * pad, np.int32), length)


def dialogue_texts(tokenizer, annotations: Sequence[dict], part: str, max_len: int
                   ) -> dict[str, np.ndarray]:
    """Per-video SFT arrays of a split: part "narratives" (phase A) or "dialogue" (phase B).
    {"ids": [V, L], "targets": [V, L], "lengths": [V]}."""
    out = [dialogue_arrays(tokenizer, row[part], max_len) for row in annotations]
    return {"ids": np.stack([o[0] for o in out]), "targets": np.stack([o[1] for o in out]),
            "lengths": np.asarray([o[2] for o in out], np.int32)}


# ---------------------------------------------------------------------------------------------
# Clip outputs -> per-video frames

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
