"""Generic clip captions and question-answer pairs for backbone pretraining.

Pretraining teaches the towers and the decoder to talk about the scene, not about anomalies:
a caption names the most visible targets of a clip window with their appearance and overall
motion ("a red car moves left in the middle left; a person in a blue top and black trousers
moves right in the lower centre"), and the QA pairs ask for counts, colours and directions.
Both come from the same target timelines as the stage-2 annotations (`annotate.associate`),
restricted to the clip's frames.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from tvad_jax.data.annotate import (Timeline, associate, describe_appearance,
                                    instances_from_sidecar, region_name)

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PLURAL = {"person": "people", "car": "cars", "cyclist": "cyclists", "object": "objects"}


def clip_timelines(sidecar: dict, start: int, length: int) -> list[Timeline]:
    """Target timelines of frames [start, start + length) of a synthetic video (frame numbers
    stay those of the video)."""
    per_frame = instances_from_sidecar(sidecar)[start:start + length]
    return associate(per_frame)


def heading(timeline: Timeline) -> str:
    """Overall motion of a target over its timeline: 'moves left' ... or 'stands still'."""
    if len(timeline.frames) < 2:
        return "stands still"
    dx, dy = (timeline.centres[-1] - timeline.centres[0]) / (timeline.frames[-1] -
                                                               timeline.frames[0])
    if np.hypot(dx, dy) < 0.15:
        return "stands still"
    if abs(dx) >= abs(dy):
        return "moves right" if dx > 0 else "moves left"
    return "moves down the street" if dy > 0 else "moves up the street"


def clip_caption(timelines: list[Timeline], width: int, height: int,
                 max_targets: int = 3) -> str:
    """The most visible targets (by summed box area), with appearance, motion and place."""
    if not timelines:
        return "an empty street"
    ranked = sorted(timelines, key=lambda tl: -_visible_area(tl))[:max_targets]
    parts = [f"{describe_appearance(tl)[0]} {heading(tl)} in the "
             f"{region_name(tl.centres[len(tl.centres) // 2], width, height)}" for tl in ranked]
    return "; ".join(parts)


def clip_questions(timelines: list[Timeline]) -> list[tuple[str, str]]:
    """Generic (question, answer) pairs: counts per class, the main target's look and motion."""
    counts = Counter(tl.category for tl in timelines)
    pairs = [(f"How many {_PLURAL[c]} are there?", f"{_number(counts.get(c, 0))}.")
             for c in ("person", "car", "cyclist")]
    if timelines:
        main = max(timelines, key=_visible_area)
        pairs.append(("What is the most visible target?", f"{describe_appearance(main)[0]}."))
        pairs.append(("How does it move?", f"It {heading(main)}."))
    return [(q, a[:1].upper() + a[1:]) for q, a in pairs]


def _visible_area(tl: Timeline) -> float:
    return float(((tl.boxes[:, 2] - tl.boxes[:, 0] + 1) * (tl.boxes[:, 3] - tl.boxes[:, 1] + 1))
                 .sum())


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)
