"""Target-level text annotations (paper 000 §3.3): frame-wise instance records are
associated into target timelines, described (appearance, trajectory, temporal anchors) and
turned into the two supervision sets of stage 2:

* narratives: every target of a video, overall + attribute + motion;
* anomaly-focused dialogues: anomaly judgment -> appearance -> trajectory -> temporal anchors,
  each answer with several reference phrasings (BLEU takes the best-matching one).

Frame-wise records come from the simulator's boxes for the synthetic benchmark; for real data
they come from a model's per-frame outputs in the same `Instance` form. The anomaly-focused
variant blurs everything outside the anomaly mask and re-extracts; with the simulator as the
extractor, what survives the blur is exactly the instances overlapping the mask.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
from scipy import ndimage

from tvad_jax.data.regions import box_iou


@dataclasses.dataclass(frozen=True)
class Instance:
    """One detected object in one frame, as a per-frame extractor reports it."""

    frame: int
    box: tuple[int, int, int, int]   # x_min, y_min, x_max, y_max (inclusive pixels)
    category: str                    # person | car | cyclist | object
    attributes: tuple[tuple[str, str | None], ...]  # sorted (name, value) pairs


@dataclasses.dataclass
class Timeline:
    """One target over time: its category, consensus attributes and boxes per frame."""

    category: str
    attributes: dict
    frames: np.ndarray   # [n] frame indices, increasing
    boxes: np.ndarray    # [n, 4] boxes

    @property
    def centres(self) -> np.ndarray:
        return np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2,
                         (self.boxes[:, 1] + self.boxes[:, 3]) / 2], axis=1)


def instances_from_sidecar(sidecar: dict) -> list[list[Instance]]:
    """Per-frame instance records of a synthetic video (identities dropped on purpose)."""
    per_frame: list[list[Instance]] = [[] for _ in range(sidecar["num_frames"])]
    for obj in sidecar["objects"]:
        attrs = tuple(sorted(obj["attributes"].items()))
        for t, x0, y0, x1, y1 in obj["boxes"]:
            per_frame[t].append(Instance(t, (x0, y0, x1, y1), obj["class"], attrs))
    return per_frame


def associate(per_frame: list[list[Instance]], iou_threshold: float = 0.1,
              max_distance: float = 6.0, max_gap: int = 3) -> list[Timeline]:
    """Chain frame-wise records into timelines by identity association: same category, then
    box IoU >= `iou_threshold` or centre distance <= `max_distance` pixels, greedily by
    affinity; a timeline survives up to `max_gap` frames without a match (occlusion)."""
    open_tracks: list[dict] = []
    done: list[dict] = []
    for t, instances in enumerate(per_frame):
        still_open = []
        for track in open_tracks:
            (done if t - track["frames"][-1] > max_gap else still_open).append(track)
        open_tracks = still_open
        candidates = _candidates(instances, open_tracks, iou_threshold, max_distance)
        used_i, used_j = set(), set()
        for *_, i, j in sorted(candidates, reverse=True):
            if i in used_i or j in used_j:
                continue
            used_i.add(i)
            used_j.add(j)
            _extend(open_tracks[j], instances[i])
        for i, inst in enumerate(instances):
            if i not in used_i:
                open_tracks.append({"category": inst.category, "frames": [], "boxes": [],
                                    "attributes": []})
                _extend(open_tracks[-1], inst)
    return [_to_timeline(track) for track in done + open_tracks]


def _candidates(instances: list[Instance], tracks: list[dict], iou_threshold: float,
                max_distance: float) -> list[tuple[bool, float, float, int, int]]:
    """(same look, IoU, -centre distance, i, j) of every instance i and open track j of its
    category whose last box overlaps it or lies near enough: the affinities `associate` ranks."""
    if not instances or not tracks:
        return []
    boxes = np.asarray([inst.box for inst in instances], np.float64)          # I, 4
    last = np.asarray([track["boxes"][-1] for track in tracks], np.float64)   # J, 4
    iou = box_iou(boxes[:, None], last[None])                                 # I, J
    offset = _centres(boxes)[:, None] - _centres(last)[None]                  # I, J, 2
    distance = np.hypot(offset[..., 0], offset[..., 1])
    same_class = (np.asarray([inst.category for inst in instances])[:, None]
                  == np.asarray([track["category"] for track in tracks])[None])
    near = same_class & ((iou >= iou_threshold) | (distance <= max_distance))
    return [(tracks[j]["attributes"][-1] == instances[i].attributes, float(iou[i, j]),
             -float(distance[i, j]), int(i), int(j)) for i, j in zip(*np.nonzero(near))]


def _centres(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] boxes -> [..., 2] centres (x, y)."""
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2],
                    axis=-1)


def _extend(track: dict, inst: Instance) -> None:
    track["frames"].append(inst.frame)
    track["boxes"].append(inst.box)
    track["attributes"].append(inst.attributes)


def _to_timeline(track: dict) -> Timeline:
    consensus = Counter(track["attributes"]).most_common(1)[0][0]
    return Timeline(track["category"], dict(consensus), np.asarray(track["frames"]),
                    np.asarray(track["boxes"], np.float64).reshape(-1, 4))


# ---------------------------------------------------------------- descriptions
def describe_appearance(timeline: Timeline) -> list[str]:
    """Reference phrasings of what the target looks like."""
    a = timeline.attributes
    if timeline.category == "person":
        build = {"short": "short ", "tall": "tall ", "medium": ""}[a.get("height", "medium")]
        wear = f"{_a(a['top'])} {a['top']} top and {a['bottom']} trousers"
        bag = f", carrying {_a(a['bag'])} {a['bag']} bag" if a.get("bag") else ""
        return [f"a {build}person in {wear}{bag}",
                f"a {build}person wearing {wear}{bag}",
                f"the person dressed in {wear}{bag}"]
    if timeline.category == "car":
        return [f"a {a['size']} {a['color']} car", f"{_a(a['color'])} {a['color']} car",
                f"the {a['color']} {a['size']} car"]
    if timeline.category == "cyclist":
        top, bike = f"{_a(a['top'])} {a['top']} top", f"{_a(a['color'])} {a['color']} bicycle"
        return [f"a cyclist in {top} on {bike}", f"a person in {top} riding {bike}",
                f"the cyclist on the {a['color']} bike"]
    return [f"a small {a['color']} object", f"{_a(a['color'])} {a['color']} object",
            f"the thrown {a['color']} object"]


def describe_trajectory(timeline: Timeline, width: int, height: int) -> list[str]:
    """Reference phrasings of how the target moves: entry side, direction, turns, speed
    changes and exit side, from its box centres."""
    clauses = [_entry(timeline, width, height)]
    clauses += _motion_phases(timeline)
    clauses.append(_exit(timeline, width, height))
    text = ", ".join(c for c in clauses if c)
    return [f"it {text}", f"the target {text}", text]


def describe_time(start: int, end: int, fps: float) -> list[str]:
    """Reference phrasings of a temporal anchor."""
    return [f"from frame {start} to frame {end}",
            f"between {start / fps:.1f} s and {end / fps:.1f} s",
            f"frames {start} to {end}"]


def _side(point, width: int, height: int, margin: float = 2.5) -> str | None:
    x0, y0, x1, y1 = point
    if x0 <= margin:
        return "left"
    if x1 >= width - 1 - margin:
        return "right"
    if y0 <= margin:
        return "top"
    if y1 >= height - 1 - margin:
        return "bottom"
    return None


def _entry(tl: Timeline, width: int, height: int) -> str:
    side = _side(tl.boxes[0], width, height)
    where = region_name(tl.centres[0], width, height)
    if tl.frames[0] == 0:
        return f"is in view from the start in the {where}"
    return f"enters from the {side}" if side else f"appears in the {where}"


def _exit(tl: Timeline, width: int, height: int) -> str:
    side = _side(tl.boxes[-1], width, height)
    if side and _speed(tl)[-3:].mean() > 0.2:
        return f"and leaves at the {side}"
    return f"and ends in the {region_name(tl.centres[-1], width, height)}"


def region_name(centre, width: int, height: int) -> str:
    """Which ninth of the frame a point is in: "upper left" ... "centre"."""
    col = ("left", "centre", "right")[min(int(3 * centre[0] / width), 2)]
    row = ("upper", "middle", "lower")[min(int(3 * centre[1] / height), 2)]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _speed(tl: Timeline) -> np.ndarray:
    """Per-frame speed in pixels/frame, smoothed over 3 frames."""
    if len(tl.frames) < 2:
        return np.zeros(1)
    step = np.diff(tl.centres, axis=0) / np.diff(tl.frames)[:, None]
    return ndimage.uniform_filter1d(np.hypot(*step.T), 3, mode="nearest")


def _motion_phases(tl: Timeline) -> list[str]:
    """Heading and speed phases: 'moves right', 'turns up the street', 'speeds up', 'stops'.

    Box centres jitter with gait and partial occlusion, so steps are smoothed over 9 frames
    and vertical headings need at least 0.3 px/frame of vertical motion. Speed changes are
    relative: a pace level is log base 1.8 of the speed over the first moving speed, so
    only a change by a factor of about 1.8 counts. 'quickly' marks >= 1.5 px/frame."""
    if len(tl.frames) < 4:
        return ["barely moves"]
    step = np.diff(tl.centres, axis=0) / np.diff(tl.frames)[:, None]
    step = ndimage.uniform_filter1d(step, 9, axis=0, mode="nearest")
    speed = np.hypot(step[:, 0], step[:, 1])
    moving = speed >= 0.15
    base = speed[moving][0] if moving.any() else 1.0
    phases = []
    for (dx, dy), v in zip(step, speed):
        if v < 0.15:
            phases.append(("stops", 0, False))
            continue
        vertical = abs(dy) > abs(dx) and abs(dy) >= 0.3
        heading = ("down" if dy > 0 else "up") if vertical else ("right" if dx > 0 else "left")
        phases.append((heading, int(np.floor(np.log(v / base) / np.log(1.8) + 0.5)), v >= 1.5))
    clauses, previous = [], None
    for heading, level, quick in _runs(phases, min_len=4):
        if heading == "stops":
            clauses.append("stops")
        elif previous and previous[0] == heading:
            if level != previous[1]:
                clauses.append("speeds up" if level > previous[1] else "slows down")
        else:
            verb = "moves" if previous is None or previous[0] == "stops" else "turns"
            where = {"right": "right", "left": "left", "up": "up the street",
                     "down": "down the street"}[heading]
            clauses.append(f"{verb} {where}" + (" quickly" if quick else ""))
        previous = (heading, level)
    return clauses or ["stays in place"]


def _runs(labels: list, min_len: int) -> list:
    """Collapse a label sequence to its runs, dropping runs shorter than `min_len`."""
    runs, count = [], 0
    for i, label in enumerate(labels):
        count += 1
        if i == len(labels) - 1 or labels[i + 1] != label:
            if count >= min_len and (not runs or runs[-1] != label):
                runs.append(label)
            count = 0
    return runs or [max(set(labels), key=labels.count)]


# ---------------------------------------------------------------- anomaly focus
def anomaly_focus(frames: np.ndarray, masks: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Gaussian-blur everything outside the anomaly mask: uint8 [T, H, W, 3] -> same."""
    blurred = ndimage.gaussian_filter(frames.astype(np.float32), sigma=(0, sigma, sigma, 0))
    keep = masks.astype(bool)[..., None]
    return np.where(keep, frames, np.clip(blurred + 0.5, 0, 255)).astype(np.uint8)


def focused_instances(per_frame: list[list[Instance]], masks: np.ndarray,
                      min_overlap: float = 0.3) -> list[list[Instance]]:
    """Re-extraction on the focused video: the instances whose box is at least
    `min_overlap` covered by unblurred (anomalous) pixels."""
    out = []
    for t, instances in enumerate(per_frame):
        kept = []
        for inst in instances:
            x0, y0, x1, y1 = inst.box
            if masks[t, y0:y1 + 1, x0:x1 + 1].mean() >= min_overlap:
                kept.append(inst)
        out.append(kept)
    return out


# ---------------------------------------------------------------- supervision sets
JUDGMENT_QUESTION = "Is there any anomaly in this video?"
APPEARANCE_QUESTION = "What does the anomalous target look like?"
TRAJECTORY_QUESTION = "How does the anomalous target move?"
TIME_QUESTION = "When does the anomaly happen?"


def anomaly_dialogue(timelines: list[Timeline], abnormal: bool, width: int, height: int,
                     fps: float) -> list[dict]:
    """The evaluation/SFT dialogue in the paper's order; each turn has reference answers."""
    if not abnormal or not timelines:
        return [{"type": "judgment", "question": JUDGMENT_QUESTION,
                 "answers": ["No.", "No, nothing abnormal happens.",
                             "No, the scene is normal."]}]
    main = max(timelines, key=lambda tl: len(tl.frames))
    looks = describe_appearance(main)
    others = [describe_appearance(tl)[0] for tl in timelines if tl is not main]
    also = f" together with {' and '.join(others)}" if others else ""
    start = int(min(tl.frames[0] for tl in timelines))
    end = int(max(tl.frames[-1] for tl in timelines))
    return [
        {"type": "judgment", "question": JUDGMENT_QUESTION,
         "answers": ["Yes.", "Yes, there is an anomaly.", f"Yes, {looks[0]} behaves abnormally."]},
        {"type": "target", "question": APPEARANCE_QUESTION,
         "answers": [f"{_cap(look)}{also}." for look in looks]},
        {"type": "trajectory", "question": TRAJECTORY_QUESTION,
         "answers": [f"{_cap(t)}." for t in describe_trajectory(main, width, height)]},
        {"type": "time", "question": TIME_QUESTION,
         "answers": [f"{_cap(t)}." for t in describe_time(start, end, fps)]},
    ]


def narratives(timelines: list[Timeline], width: int, height: int, fps: float,
               max_targets: int = 4) -> list[dict]:
    """Phase-A narratives: an overall count, then appearance + motion of each main target."""
    counts = Counter(tl.category for tl in timelines)
    nouns = {"person": ("person", "people"), "car": ("car", "cars"),
             "cyclist": ("cyclist", "cyclists"), "object": ("object", "objects")}
    parts = [f"{n} {nouns[c][n != 1]}" for c, n in sorted(counts.items())]
    turns = [{"type": "overall", "question": "What can you see in this video?",
              "answers": [f"The street shows {', '.join(parts)}." if parts else
                          "The street is empty."]}]
    for tl in sorted(timelines, key=lambda tl: -len(tl.frames))[:max_targets]:
        look = describe_appearance(tl)
        move = describe_trajectory(tl, width, height)
        time = describe_time(int(tl.frames[0]), int(tl.frames[-1]), fps)
        turns.append({"type": "target_narrative",
                      "question": f"Describe {look[0]}.",
                      "answers": [f"{_cap(look[0])} {move[2]}, {time[0]}.",
                                  f"{_cap(look[1])}: {move[0]}, {time[1]}."]})
    return turns


def _a(word: str) -> str:
    """The indefinite article for `word`."""
    return "an" if word[:1] in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def annotate_video(sidecar: dict, masks: np.ndarray) -> dict:
    """Both supervision sets of one synthetic video (masks: [T, H, W] anomaly pixels)."""
    per_frame = instances_from_sidecar(sidecar)
    w, h, fps = sidecar["width"], sidecar["height"], sidecar["fps"]
    everyone = associate(per_frame)
    focused = associate(focused_instances(per_frame, masks)) if masks.any() else []
    return {
        "video": sidecar["video"],
        "abnormal": bool(masks.any()),
        "narratives": narratives(everyone, w, h, fps),
        "dialogue": anomaly_dialogue(focused, bool(masks.any()), w, h, fps),
    }
