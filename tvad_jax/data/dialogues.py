"""The text of T-VAD's stage 2: annotation rows of a split and their dialogue token arrays.

    rows = read_annotations(prepared_dir, "train")
    ids, targets, weights, length = dialogue_arrays(tokenizer, turns, max_len=160)
    texts = dialogue_texts(tokenizer, rows, "dialogue", max_len=160,  # per-video arrays
                           turn_weights={"judgment": 8.0})

A dialogue is the SFT text of one video: every turn `<s> question answer </s>` in order, the
loss on answer tokens (and each turn's `</s>`) only, with the first reference answer of each
turn (`answers[0]`, the canonical phrasing; the others stay references for BLEU). Each
answer token carries a loss weight, 1 unless `turn_weights` names its turn's type: the
judgment's two-word answer would otherwise be a few percent of the answer tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tvad_jax.data.pipeline import find_builder_dir, split_names
from tvad_jax.errors import DataError


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


def dialogue_arrays(tokenizer, turns: Sequence[dict], max_len: int,
                    turn_weights: Mapping[str, float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """ids [max_len] (right-padded), targets [max_len] (next token where it belongs to an
    answer, else -1), weights [max_len] (each target's loss weight: its turn type's in
    `turn_weights`, else 1; 0 without a target) and the real length, of the whole turns that
    fit in max_len."""
    turn_weights = turn_weights or {}
    ids: list[int] = []
    targets: list[int] = []
    weights: list[float] = []
    for turn in turns:
        prompt, reply = turn_tokens(tokenizer, turn["question"], turn["answers"][0])
        if len(ids) + len(prompt) + len(reply) > max_len:
            break
        seq = prompt + reply
        # position i predicts seq[i + 1]: answer tokens start after the prompt
        targets += [-1] * (len(prompt) - 1) + reply + [-1]
        weight = turn_weights.get(turn.get("type", ""), 1.0)
        weights += [0.0] * (len(prompt) - 1) + [weight] * len(reply) + [0.0]
        ids += seq
    if not ids:
        raise ValueError(f"max_len {max_len} holds no whole dialogue turn")
    length = len(ids)
    pad = max_len - length
    return (np.asarray(ids + [tokenizer.pad_token_id] * pad, np.int32),
            np.asarray(targets + [-1] * pad, np.int32),
            np.asarray(weights + [0.0] * pad, np.float32), length)


def dialogue_texts(tokenizer, annotations: Sequence[dict], part: str, max_len: int,
                   turn_weights: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per-video SFT arrays of a split: part "narratives" (phase A) or "dialogue" (phase B).
    {"ids": [V, L], "targets": [V, L], "weights": [V, L], "lengths": [V]}."""
    out = [dialogue_arrays(tokenizer, row[part], max_len, turn_weights) for row in annotations]
    return {"ids": np.stack([o[0] for o in out]), "targets": np.stack([o[1] for o in out]),
            "weights": np.stack([o[2] for o in out]),
            "lengths": np.asarray([o[3] for o in out], np.int32)}
