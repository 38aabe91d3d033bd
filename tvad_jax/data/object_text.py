"""Plain text about single objects of a synthetic clip: what each looks like and does.

Backbone pretraining (v2) aligns patch features pooled under each object's box with its
description, the way web captions taught CLIP, and teaches the decoder single-object QA on
crops (pose, behaviour, appearance: the prompt pool of VLAVAD, paper 004). The words stay
generic: class, appearance, action, speed, direction, pose and the ground zone (road, zebra
crossing, sidewalk, grass), never normal / abnormal / anomaly. Zone statements with negation
("no car is on the sidewalk") teach the text tower what "no" means.

    objects = clip_objects(sidecar, frame_ids)      # ranked by visible area
    objects[0].description   # "a person in a red top and blue trousers running fast to the
                             #  right on the sidewalk"
    objects[0].questions     # ((question, answer), ...) pose / behaviour / appearance
    zone_statement(objects, k)                   # "no car is on the sidewalk"
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from tvad_jax.data.annotate import Timeline, describe_appearance
from tvad_jax.data.synthetic.scene import Scene, make_scene

# Timeline labels -> what the object does, in plain words (train labels and every other one,
# so that any split can be described).
ACTIONS = {
    "walking": "walking", "standing": "standing", "crossing": "crossing the road",
    "driving": "driving", "yielding": "slowing down", "riding": "riding", "flying": "flying",
    "running": "running", "jaywalking": "crossing the road", "fighting": "scuffling",
    "loitering": "walking in circles", "wrong_way": "driving against the traffic",
    "car_on_sidewalk": "driving", "cyclist_on_sidewalk": "riding", "sudden_stop": "stopping",
    "falling": "falling", "throwing": "throwing something",
}
ZONES = {"road": "the road", "crossing": "the zebra crossing", "sidewalk": "the sidewalk",
         "grass": "the grass", "buildings": "the pavement by the buildings"}
# Speed (pixels per frame at 96 px) above which an object of a class moves "fast".
FAST = {"person": 0.75, "cyclist": 1.5, "car": 2.4, "object": 1e9}
STILL = 0.12
# The attribute phrases of pretraining's attribute-text objective, per attribute: a region's
# pooled feature must be nearer its own phrase than the attribute's other phrases. A whole
# description is told apart from the batch's others by its colours alone, so without this
# nothing forces speed or direction into the patch features.
ATTRIBUTE_PHRASES = {
    "class": ("a person", "a car", "a cyclist", "a thrown object"),
    "action": tuple(sorted(set(ACTIONS.values()))),
    "speed": ("standing still", "moving slowly", "moving fast"),
    "direction": ("staying in place", "moving to the left", "moving to the right",
                  "moving up the street", "moving down the street"),
    "pose": ("standing upright", "lying on the ground"),
    "zone": tuple(f"on {z}" for z in ZONES.values()),
}
# Single-object questions (VLAVAD's prompt pool, paper 004 §4.1, with the object's own noun
# for the paper's "person"): pretraining teaches the decoder these, VLAVAD asks them.
QUESTIONS = {
    "pose": "What is the pose of the {noun} in the picture?",
    "behaviour": "What is the behavior or action of the {noun} in the picture?",
    "appearance": "What does the {noun} in the picture look like?",
}


def question(kind: str, noun: str) -> str:
    """The `kind` question (a key of QUESTIONS) about an object called `noun`."""
    if kind not in QUESTIONS:
        raise ValueError(f"unknown question {kind!r}; choose from {sorted(QUESTIONS)}")
    return QUESTIONS[kind].format(noun=noun)


CLASSES = ("person", "car", "cyclist", "object")    # the simulator's object classes
_SPEEDS = ("still", "slow", "fast")
_DIRECTIONS = ("none", "left", "right", "up", "down")
# (class, zone) pairs of the zone statements.
STATEMENTS = tuple((c, z) for c in ("person", "car", "cyclist")
                   for z in ("road", "crossing", "sidewalk"))


@dataclasses.dataclass(frozen=True)
class ClipObject:
    """One object over a clip's frames."""

    category: str
    description: str
    questions: tuple[tuple[str, str], ...]
    zone: str                    # key of ZONES at the object's middle visible frame
    zones: frozenset[str]        # every zone it stands in during the clip
    motion: dict                 # {"direction": left|right|up|down|none,
                                 #  "speed": still|slow|fast, "pose": upright|lying|other}
    attributes: tuple[int, ...]  # per ATTRIBUTE_PHRASES key, the index of its phrase, -1: none
    boxes: np.ndarray            # [clip_len, 4] float (x0, y0, x1, y1 inclusive), NaN if absent
    visible_area: float
    acting: bool = False         # acts its anomaly (the sidecar's window) in a clip frame


def scene_of(sidecar: dict) -> Scene:
    """The layout a synthetic video was rendered on (scene numbers start at 1)."""
    return make_scene(sidecar["scene"] - 1, sidecar["height"], sidecar["width"],
                      sidecar["seed"][0])


def clip_objects(sidecar: dict, frame_ids: np.ndarray, scene: Scene | None = None
                 ) -> list[ClipObject]:
    """The objects visible in `frame_ids` of a synthetic video, most visible first."""
    scene = scene or scene_of(sidecar)
    described = (describe_object(obj, frame_ids, scene) for obj in sidecar["objects"])
    return sorted((o for o in described if o is not None), key=lambda o: -o.visible_area)


def describe_object(obj: dict, frame_ids: np.ndarray, scene: Scene) -> ClipObject | None:
    """One sidecar object over `frame_ids` (None where it is not seen in any of them)."""
    position = {int(f): i for i, f in enumerate(frame_ids)}
    boxes = np.full((len(frame_ids), 4), np.nan)
    for t, *box in obj["boxes"]:
        if t in position:
            boxes[position[t]] = box
    seen = ~np.isnan(boxes[:, 0])
    if not seen.any():
        return None
    return _describe(obj, boxes, seen, frame_ids, scene)


def _describe(obj: dict, boxes: np.ndarray, seen: np.ndarray, frame_ids: np.ndarray,
              scene: Scene) -> ClipObject:
    frames = np.asarray(frame_ids)[seen]
    timeline = Timeline(obj["class"], obj["attributes"], frames, boxes[seen])
    labels = Counter(_label_at(obj["timeline"], int(t)) for t in frames)
    action = ACTIONS.get(labels.most_common(1)[0][0], "moving")
    zones = [scene.zone((b[0] + b[2]) / 2, b[3]) for b in boxes[seen]]
    zone = zones[len(zones) // 2]
    motion = _motion(timeline)
    attributes = _motion_attributes(timeline, boxes[seen])
    appearance = describe_appearance(timeline)[0]
    where = f"on {ZONES[zone]}"
    doing = " ".join(w for w in (action, motion) if w)
    pose = _pose(timeline, boxes[seen])
    noun = "object" if obj["class"] == "object" else obj["class"]
    answers = {"pose": pose, "behaviour": f"{doing} {where}", "appearance": appearance}
    questions = tuple((question(kind, noun), _cap(answers[kind]) + ".") for kind in QUESTIONS)
    area = ((boxes[seen, 2] - boxes[seen, 0] + 1) * (boxes[seen, 3] - boxes[seen, 1] + 1)).sum()
    return ClipObject(obj["class"], f"{appearance} {doing} {where}", questions, zone,
                      frozenset(zones), attributes,
                      attribute_ids(obj["class"], action, attributes, zone), boxes, float(area),
                      _acting(obj.get("anomaly"), frames))


def _acting(window: list[int] | None, frames: np.ndarray) -> bool:
    """Whether one of `frames` lies in the inclusive anomaly `window` ([first, last] or None)."""
    return window is not None and bool(((frames >= window[0]) & (frames <= window[1])).any())


def attribute_ids(category: str, action: str, motion: dict, zone: str) -> tuple[int, ...]:
    """The index of each attribute's phrase in ATTRIBUTE_PHRASES (-1 where it has none: the
    pose of anything but a person, an action outside the vocabulary)."""
    actions = ATTRIBUTE_PHRASES["action"]
    pose = ("upright", "lying").index(motion["pose"]) if category == "person" and \
        motion["pose"] != "other" else -1
    return (CLASSES.index(category), actions.index(action) if action in actions else -1,
            _SPEEDS.index(motion["speed"]), _DIRECTIONS.index(motion["direction"]), pose,
            tuple(ZONES).index(zone))


def _label_at(timeline: list[dict], t: int) -> str:
    for seg in timeline:
        if seg["start"] <= t <= seg["end"]:
            return seg["label"]
    return ""


def _velocity(tl: Timeline) -> tuple[float, float]:
    """Mean (dx, dy) in pixels per frame over the clip."""
    if len(tl.frames) < 2:
        return 0.0, 0.0
    dx, dy = (tl.centres[-1] - tl.centres[0]) / (tl.frames[-1] - tl.frames[0])
    return float(dx), float(dy)


def _motion_attributes(tl: Timeline, boxes: np.ndarray) -> dict:
    dx, dy = _velocity(tl)
    speed = float(np.hypot(dx, dy))
    direction = ("none" if speed < STILL else
                 ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else
                 ("down" if dy > 0 else "up"))
    pace = "still" if speed < STILL else "fast" if speed > FAST[tl.category] else "slow"
    pose = _pose(tl, boxes)
    return {"direction": direction, "speed": pace,
            "pose": "lying" if "lying" in pose else "upright" if "upright" in pose else "other"}


def _motion(tl: Timeline) -> str:
    """Speed and direction over the clip: "fast to the left", "slowly down the street", ""."""
    if len(tl.frames) < 2:
        return ""
    dx, dy = _velocity(tl)
    speed = float(np.hypot(dx, dy))
    if speed < STILL:
        return "in place"
    direction = (("to the right" if dx > 0 else "to the left") if abs(dx) >= abs(dy)
                 else ("down the street" if dy > 0 else "up the street"))
    pace = "fast" if speed > FAST.get(tl.category, 1e9) else "slowly"
    return f"{pace} {direction}"


def _pose(tl: Timeline, boxes: np.ndarray) -> str:
    if tl.category != "person":
        return {"cyclist": "riding upright", "car": "on its wheels"}.get(tl.category,
                                                                          "in the air")
    w, h = boxes[-1, 2] - boxes[-1, 0] + 1, boxes[-1, 3] - boxes[-1, 1] + 1
    return "lying on the ground" if w > 1.2 * h else "standing upright"


def zone_statement(objects: list[ClipObject], k: int) -> tuple[str, bool]:
    """Statement `k` (mod 9) about a (class, zone) pair of the clip and whether it holds:
    ("a car is on the sidewalk", True) or ("no car is on the sidewalk", False)."""
    category, zone = STATEMENTS[k % len(STATEMENTS)]
    present = any(o.category == category and zone in o.zones for o in objects)
    article = "a" if present else "no"
    return f"{article} {category} is on {ZONES[zone]}", present


def zone_question(objects: list[ClipObject], k: int) -> tuple[str, str]:
    """A yes/no question about statement `k`: ("Is there a car on the sidewalk?", "No.")."""
    category, zone = STATEMENTS[k % len(STATEMENTS)]
    _, present = zone_statement(objects, k)
    return f"Is there a {category} on {ZONES[zone]}?", "Yes." if present else "No."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
