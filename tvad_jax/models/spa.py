"""VLAVAD's Selective Prompt Adapter (paper 004 §3.3.1): which question's answers pack the normal
objects most tightly, and how rare a test object's answer is under it.

    spa = fit_spa({"pose": answers_p, "behaviour": answers_b, ...}, top_k=5, num_prompts=1)
    spa.prompts                      # the chosen prompt names (most concentrated first)
    spa.scores({"pose": test_answers, ...})   # [K] sum over chosen prompts of 1 / (count + 1)

Answers are compared after `normalize_answer` (lowercase, punctuation dropped, spaces
collapsed) so that "Walking." and "walking" count as one. A prompt's concentration is the
share of the normal training answers that fall on its `top_k` most frequent answers (F_topk /
F_t of the paper); the paper does not give k. A prompt whose normal answers take at most k
distinct values is "saturated": its concentration is 1 by construction and says nothing about
how its answers pack (on the synthetic benchmark the pose question's answers only name the
object's class: 3 values). Not in the paper, whose BLIP-2 answers are far more varied:
`skip_saturated` ranks saturated prompts after every other one. An object's score under a
chosen prompt is the reciprocal of (the number of normal training objects that gave its
answer + 1): an answer never seen in training scores 1, the commonest answer scores least.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def concentration(answers: Sequence[str], top_k: int) -> float:
    """Share of `answers` (normalized) that are one of their top_k most frequent answers."""
    if not answers:
        raise ValueError("no answers to measure")
    counts = Counter(normalize_answer(a) for a in answers)
    return sum(n for _, n in counts.most_common(top_k)) / len(answers)


@dataclasses.dataclass(frozen=True)
class SPA:
    """A fitted adapter: the chosen prompts, each with its answer counts on normal objects,
    and every prompt's concentration (for the record)."""

    prompts: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]       # prompt -> normalized answer -> count
    concentrations: Mapping[str, float]           # prompt -> F_topk / F_t
    top_k: int

    def scores(self, answers: Mapping[str, Sequence[str]]) -> np.ndarray:
        """[K] static anomaly score of K objects: sum over the chosen prompts of
        1 / (count of the object's answer + 1). `answers` maps each chosen prompt to the K
        answers (others are ignored)."""
        missing = [p for p in self.prompts if p not in answers]
        if missing:
            raise ValueError(f"answers to the chosen prompts {missing} are missing")
        sizes = {len(answers[p]) for p in self.prompts}
        if len(sizes) != 1:
            raise ValueError(f"the chosen prompts have different numbers of answers: {sizes}")
        total = np.zeros(sizes.pop(), np.float64)
        for prompt in self.prompts:
            counts = self.counts[prompt]
            total += [1.0 / (counts.get(normalize_answer(a), 0) + 1) for a in answers[prompt]]
        return total

    def to_json(self) -> dict:
        return {"prompts": list(self.prompts), "top_k": self.top_k,
                "concentrations": dict(self.concentrations),
                "counts": {p: dict(c) for p, c in self.counts.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "SPA":
        return cls(tuple(data["prompts"]), data["counts"], data["concentrations"],
                   int(data["top_k"]))


def fit_spa(answers: Mapping[str, Sequence[str]], top_k: int, num_prompts: int = 1,
            skip_saturated: bool = True) -> SPA:
    """Choose the `num_prompts` prompts whose normal answers concentrate most (ties: the
    earlier prompt; with `skip_saturated`, prompts with at most `top_k` distinct answers come
    last) and keep their answer counts."""
    if not answers:
        raise ValueError("no prompts to choose from")
    if top_k < 1 or not 1 <= num_prompts <= len(answers):
        raise ValueError(f"top_k {top_k} must be >= 1 and num_prompts {num_prompts} in "
                         f"1..{len(answers)}")
    conc = {p: concentration(a, top_k) for p, a in answers.items()}
    counts = {p: Counter(normalize_answer(a) for a in answers[p]) for p in answers}
    saturated = {p: skip_saturated and len(counts[p]) <= top_k for p in answers}
    order = sorted(answers, key=lambda p: (saturated[p], -conc[p]))   # stable: ties keep order
    chosen = tuple(order[:num_prompts])
    return SPA(chosen, {p: dict(counts[p]) for p in chosen}, conc, top_k)
