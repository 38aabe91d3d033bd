"""Plain object descriptions: generic words only, statements that hold, zones of the scene."""
import json
from pathlib import Path

import numpy as np

from tvad_jax.data.object_text import (ATTRIBUTE_PHRASES, STATEMENTS, ZONES, clip_objects, scene_of,
                                       zone_question, zone_statement)


def _sidecars(root):
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob("Scene*/*.json"))]


def test_descriptions_say_what_objects_do_without_anomaly_words(tiny_synth):
    _, root = tiny_synth
    seen = 0
    for sidecar in _sidecars(root):
        objects = clip_objects(sidecar, np.arange(0, 8))
        areas = [o.visible_area for o in objects]
        assert areas == sorted(areas, reverse=True)
        for obj in objects:
            seen += 1
            words = set(obj.description.replace(",", " ").split())
            assert not words & {"normal", "abnormal", "anomaly", "anomalous"}
            assert obj.description.endswith(f"on {ZONES[obj.zone]}") and obj.zone in obj.zones
            assert {"direction", "speed", "pose"} == set(obj.motion)
            phrase = {name: ATTRIBUTE_PHRASES[name][i] if i >= 0 else None
                      for name, i in zip(ATTRIBUTE_PHRASES, obj.attributes)}
            assert phrase["zone"] == f"on {ZONES[obj.zone]}"
            assert phrase["action"] is None or phrase["action"] in obj.description
            speed, direction = obj.motion["speed"], obj.motion["direction"]
            assert phrase["speed"] == {"still": "standing still", "slow": "moving slowly",
                                       "fast": "moving fast"}[speed]
            assert phrase["direction"] == {
                "none": "staying in place", "left": "moving to the left",
                "right": "moving to the right", "up": "moving up the street",
                "down": "moving down the street"}[direction]
            assert (phrase["pose"] is None) == (obj.category != "person"
                                                or obj.motion["pose"] == "other")
            assert len(obj.questions) == 3
            assert all(q.endswith("?") and a.endswith(".") for q, a in obj.questions)
    assert seen > 0


def test_zone_statements_hold_and_negate(tiny_synth):
    _, root = tiny_synth
    for sidecar in _sidecars(root):
        objects = clip_objects(sidecar, np.arange(8, 16))
        for k in range(len(STATEMENTS)):
            text, present = zone_statement(objects, k)
            category, zone = STATEMENTS[k]
            truth = any(o.category == category and zone in o.zones for o in objects)
            assert present == truth and text.startswith("a " if truth else "no ")
            question, answer = zone_question(objects, k)
            assert answer == ("Yes." if truth else "No.") and category in question


def test_scene_zones_follow_the_layout(tiny_synth):
    _, root = tiny_synth
    scene = scene_of(_sidecars(root)[0])
    middle = (scene.road_top + scene.road_bottom) / 2
    far = scene.crossing_x + scene.crossing_half + 5 if scene.crossing_x < 24 else 2.0
    assert scene.zone(far, middle) == "road"
    assert scene.zone(scene.crossing_x, middle) == "crossing"
    assert scene.zone(far, scene.road_top - scene.sidewalk / 2) == "sidewalk"
    assert scene.zone(far, scene.road_top - scene.sidewalk - 1) == "buildings"


def test_an_object_acts_in_a_clip_that_meets_its_anomaly_window(tiny_synth):
    from tvad_jax.data.object_text import describe_object

    _, root = tiny_synth
    sidecar, obj = next((s, o) for s in _sidecars(root) for o in s["objects"]
                        if o["anomaly"] is not None)
    first, last = obj["anomaly"]
    seen = [int(r[0]) for r in obj["boxes"]]
    scene = scene_of(sidecar)

    def acting(frames):
        return describe_object(obj, np.asarray(frames), scene).acting

    assert acting([f for f in seen if first <= f <= last][:1])
    assert not any(acting([f]) for f in seen if not first <= f <= last)
    normal = next(o for s in _sidecars(root) for o in s["objects"] if o["anomaly"] is None)
    assert not describe_object(normal, np.asarray([int(r[0]) for r in normal["boxes"]]),
                               scene).acting
