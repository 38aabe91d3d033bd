"""The text of T-VAD's stage 2: annotation rows of a split, the chat format of a tokenizer and
the dialogue token arrays.

    rows = read_annotations(prepared_dir, "train")
    fmt = chat_format(tokenizer)          # the ids around the texts (plain, or the template's)
    ids, targets, weights, length, kept = dialogue_arrays(tokenizer, turns, max_len=160)
    texts, left_out = dialogue_texts(tokenizer, rows, "dialogue", max_len=160,  # per video
                                     turn_weights={"judgment": 8.0})

A dialogue is the SFT text of one video: its turns in order, the loss on answer tokens (and
each turn's end) only, with the first reference answer of each turn (`answers[0]`, the
canonical phrasing; the others stay references for BLEU). Each answer token carries a loss
weight, 1 unless `turn_weights` names its turn's type: the judgment's two-word answer would
otherwise be a few percent of the answer tokens.

The chat format (`ChatFormat`): a tokenizer without a `chat_template` (the shipped backbone's)
speaks the plain format, every turn `<s> question answer </s>` after the visual block. One
with a template (Qwen2.5-VL-Instruct's ChatML) speaks the template's: `chat_format` renders a
conversation of sentinel texts with a video item through it and cuts the render into the
texts around each part (system prefix, user-turn openings, the closing that asks for the
answer, the answer's end), so that prompts are laid out as the checkpoint was instruction-
tuned, e.g. `<|im_start|>system ...<|im_end|>\n<|im_start|>user\n` [video] `question
<|im_end|>\n<|im_start|>assistant\n` `answer<|im_end|>` `\n<|im_start|>user\n` ...
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from tvad_jax.data.files import read_json, read_text
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


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """The token ids around a dialogue's texts. A prompt is `prefix`, the visual block (and
    the anomaly prompts), then `opening question closing`; a reply `answer_lead + answer`
    then `end` (the ids generation stops at: `end` ends with the eos); a later turn is
    `later_opening question closing`, a further video in a later user turn (the one-shot
    protocol's test video) comes after `video_opening` and is followed by `opening`."""

    prefix: tuple[int, ...]
    opening: tuple[int, ...]
    later_opening: tuple[int, ...]
    video_opening: tuple[int, ...]
    closing: tuple[int, ...]
    end: tuple[int, ...]
    answer_lead: str


class ChatTemplateError(ValueError):
    """A tokenizer's chat template that does not lay out a video dialogue as `ChatFormat`
    needs (the message says what is missing)."""


def chat_format(tokenizer) -> ChatFormat:
    """The tokenizer's chat format: the plain one without a `chat_template`, else the
    template's (see the module docstring); a ChatTemplateError for a template whose turns
    `ChatFormat` cannot express."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return ChatFormat(prefix=(), opening=(tokenizer.bos_token_id,),
                          later_opening=(tokenizer.bos_token_id,), video_opening=(),
                          closing=(), end=(tokenizer.eos_token_id,), answer_lead=" ")
    return _template_format(tokenizer, template)


_Q = ("tvadquestionone", "tvadquestiontwo", "tvadquestionthree")
_A = ("tvadanswerone", "tvadanswertwo", "tvadanswerthree")


@functools.lru_cache(maxsize=8)
def _template_format(tokenizer, template: str) -> ChatFormat:
    """`chat_format` of a template, from renders of sentinel conversations."""
    def render(messages, prompt=False) -> str:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=prompt)
        except Exception as err:   # jinja's own errors: TemplateError, UndefinedError, ...
            raise ChatTemplateError(f"the chat template fails on a video dialogue: {err}"
                                    ) from None

    def user(text, visual=None):
        items = [{"type": visual}] if visual else []
        return {"role": "user", "content": [*items, {"type": "text", "text": text}]}

    def assistant(text):
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    text_only = render([user(_Q[0])])
    for visual in ("video", "image"):
        with_visual = render([user(_Q[0], visual)])
        if with_visual != text_only:
            break
    else:
        raise ChatTemplateError("the chat template writes nothing for a video or an image item")
    head = len(_common_prefix(text_only, with_visual))
    tail = len(_common_prefix(text_only[head:][::-1], with_visual[head:][::-1]))
    block = with_visual[head:len(with_visual) - tail]    # the template's visual placeholder
    text = render([user(_Q[0], visual), assistant(_A[0]), user(_Q[1], visual),
                   assistant(_A[1]), user(_Q[2]), assistant(_A[2])])
    cuts = [block, _Q[0], _A[0], block, _Q[1], _A[1], _Q[2], _A[2]]
    parts, at = [], 0
    for cut in cuts:
        found = text.find(cut, at)
        if found < 0:
            raise ChatTemplateError(f"the chat template's render lacks {cut!r} in order")
        parts.append(text[at:found])
        at = found + len(cut)
    parts.append(text[at:])
    prefix, opening, closing, end_video, opening_2, closing_2, end_later, closing_3, last = parts
    eos = tokenizer.eos_token
    if not eos or eos not in end_video:
        raise ChatTemplateError(f"the chat template ends an answer with {end_video!r}, "
                                f"not with the tokenizer's eos {eos!r}")
    end = end_video[:end_video.index(eos) + len(eos)]
    if (opening_2, closing_2, closing_3) != (opening, closing, closing) \
            or not end_later.startswith(end) or not last.startswith(end):
        raise ChatTemplateError("the chat template writes its turns differently in a "
                                "conversation's first and later turns")
    if render([user(_Q[0], visual)], prompt=True) != prefix + block + opening + _Q[0] + closing:
        raise ChatTemplateError("the chat template's generation prompt differs from its turns")

    def ids(part: str) -> tuple[int, ...]:
        return tuple(_ids(tokenizer, part))

    return ChatFormat(prefix=ids(prefix), opening=ids(opening),
                      later_opening=ids(end_later[len(end):]),
                      video_opening=ids(end_video[len(end):]), closing=ids(closing),
                      end=ids(end), answer_lead="")


def read_chat_template(path: str | Path) -> str:
    """A chat template from a file: a processor's `chat_template.json` (its "chat_template"
    string) or the template's own text (`chat_template.jinja`)."""
    path = Path(path)
    if path.suffix != ".json":
        template = read_text(path)
    else:
        template = read_json(path)
        if isinstance(template, dict):
            template = template.get("chat_template")
        if not isinstance(template, str):
            raise DataError(path, 'expected {"chat_template": "<the jinja template>"}')
    if not template.strip():
        raise DataError(path, "an empty chat template")
    return template


def _common_prefix(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a[:n]


def turn_tokens(tokenizer, question: str, answer: str | None, first: bool = True
                ) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids; [] when answer is None) of a turn in the tokenizer's
    `chat_format`: the plain format's `<s> question` and ` answer </s>`. `first`: the turn
    right after a visual block, else a later turn of the conversation."""
    fmt = chat_format(tokenizer)
    opening = fmt.opening if first else fmt.later_opening
    prompt = [*opening, *_ids(tokenizer, question), *fmt.closing]
    if answer is None:
        return prompt, []
    return prompt, [*_ids(tokenizer, fmt.answer_lead + answer), *fmt.end]


def question_length(tokenizer, question: str) -> int:
    """The most prompt ids `question` takes as a turn (first or later)."""
    return max(len(turn_tokens(tokenizer, question, None, first)[0]) for first in (True, False))


def _ids(tokenizer, text: str) -> list[int]:
    """The ids of `text` alone: no special tokens added (a Llama tokenizer would add `<s>`)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class DialogueArrays(NamedTuple):
    """The SFT arrays of one dialogue: ids [max_len] (right-padded), targets [max_len] (next
    token where it belongs to an answer, else -1), weights [max_len] (each target's loss
    weight), the real length and how many of its turns (whole, from the first) they hold."""

    ids: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    length: int
    turns: int


def dialogue_arrays(tokenizer, turns: Sequence[dict], max_len: int,
                    turn_weights: Mapping[str, float] | None = None,
                    other_weight: float = 1.0) -> DialogueArrays:
    """The `DialogueArrays` of the whole turns that fit in max_len; each target's weight is
    its turn type's in `turn_weights`, else `other_weight` (0 without a target)."""
    turn_weights = turn_weights or {}
    ids: list[int] = []
    targets: list[int] = []
    weights: list[float] = []
    kept = 0
    for turn in turns:
        prompt, reply = turn_tokens(tokenizer, turn["question"], turn["answers"][0], kept == 0)
        if len(ids) + len(prompt) + len(reply) > max_len:
            break
        kept += 1
        seq = prompt + reply
        # position i predicts seq[i + 1]: answer tokens start after the prompt
        targets += [-1] * (len(prompt) - 1) + reply + [-1]
        weight = turn_weights.get(turn.get("type", ""), other_weight)
        weights += [0.0] * (len(prompt) - 1) + [weight] * len(reply) + [0.0]
        ids += seq
    if not ids:
        raise ValueError(f"max_len {max_len} holds no whole dialogue turn")
    length = len(ids)
    pad = max_len - length
    return DialogueArrays(np.asarray(ids + [tokenizer.pad_token_id] * pad, np.int32),
                          np.asarray(targets + [-1] * pad, np.int32),
                          np.asarray(weights + [0.0] * pad, np.float32), length, kept)


def dialogue_texts(tokenizer, annotations: Sequence[dict], part: str, max_len: int,
                   turn_weights: Mapping[str, float] | None = None, other_weight: float = 1.0
                   ) -> tuple[dict[str, np.ndarray], int]:
    """Per-video SFT arrays of a split, part "narratives" (phase A) or "dialogue" (phase B):
    ({"ids": [V, L], "targets": [V, L], "weights": [V, L], "lengths": [V]}, the number of
    turns left out because they do not fit max_len); weights as `dialogue_arrays`'."""
    out = [dialogue_arrays(tokenizer, row[part], max_len, turn_weights, other_weight)
           for row in annotations]
    left_out = sum(len(row[part]) - o.turns for row, o in zip(annotations, out))
    return {"ids": np.stack([o.ids for o in out]), "targets": np.stack([o.targets for o in out]),
            "weights": np.stack([o.weights for o in out]),
            "lengths": np.asarray([o.length for o in out], np.int32)}, left_out
