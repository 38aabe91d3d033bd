import numpy as np

from tvad_jax.data.annotate import (Instance, Timeline, annotate_video, anomaly_dialogue,
                                    anomaly_focus, associate, describe_appearance,
                                    describe_trajectory, focused_instances, instances_from_sidecar)
from tvad_jax.data.readers import make_reader

PERSON = (("bag", None), ("bottom", "blue"), ("height", "tall"), ("top", "red"))
CAR = (("color", "white"), ("size", "small"))


def _line(start, stop, y, frames, size=(4, 8)):
    """Boxes of an object moving in a straight line from x=start to x=stop."""
    xs = np.linspace(start, stop, len(frames))
    return np.array([[x, y, x + size[0], y + size[1]] for x in xs]).round()


def test_associate_recovers_two_crossing_paths_of_different_classes():
    frames = list(range(20))
    person = _line(0, 40, 10, frames)
    car = _line(40, 0, 12, frames, size=(12, 6))
    per_frame = [[Instance(t, tuple(person[t]), "person", PERSON),
                  Instance(t, tuple(car[t]), "car", CAR)] for t in frames]
    timelines = associate(per_frame)
    assert sorted(tl.category for tl in timelines) == ["car", "person"]
    for tl in timelines:
        assert tl.frames.tolist() == frames
        expected = person if tl.category == "person" else car
        np.testing.assert_array_equal(tl.boxes, expected)


def test_associate_keeps_each_look_where_two_people_cross():
    frames = range(20)
    walkers = {PERSON: _line(0, 40, 10, frames),
               (("bag", None), ("bottom", "black"), ("height", "short"), ("top", "green")):
                   _line(40, 0, 11, frames)}
    per_frame = [[Instance(t, tuple(boxes[t]), "person", look) for look, boxes in
                  walkers.items()] for t in frames]
    timelines = associate(per_frame)
    assert len(timelines) == 2
    for tl in timelines:      # where they overlap, the other's box is nearer: the look decides
        np.testing.assert_array_equal(tl.boxes, walkers[tuple(sorted(tl.attributes.items()))])


def test_associate_bridges_short_occlusions_only():
    boxes = _line(0, 30, 10, range(30))
    per_frame = [[] if 10 <= t < 12 or 20 <= t < 26 else
                 [Instance(t, tuple(boxes[t]), "person", PERSON)] for t in range(30)]
    timelines = associate(per_frame, max_gap=3)
    assert [(tl.frames[0], tl.frames[-1]) for tl in timelines] == [(0, 19), (26, 29)]


def test_associate_matches_the_simulator_identities(tiny_synth):
    """Association without ids reproduces the simulator's object tracks on real output."""
    _, root = tiny_synth
    reader = make_reader("synthetic", root)
    record = reader.read(reader.video_names("train")[0])
    timelines = associate(instances_from_sidecar(record.sidecar))
    truth = [[row for row in obj["boxes"]] for obj in record.sidecar["objects"]]
    matched = sum(
        [[int(t), *map(int, box)] for t, box in zip(tl.frames, tl.boxes)] in truth
        for tl in timelines)
    assert matched >= 0.6 * len(record.sidecar["objects"])


def test_trajectory_of_a_crossing_object():
    boxes = _line(0, 91, 40, range(1, 31))  # enters at frame 1 from the left edge
    tl = Timeline("person", dict(PERSON), np.arange(1, 31), boxes)
    text = describe_trajectory(tl, width=96, height=96)[0]
    assert text == "it enters from the left, moves right quickly, and leaves at the right"


def test_trajectory_speed_change_and_stop():
    xs = np.concatenate([np.linspace(20, 30, 20), np.full(10, 30.0), np.linspace(31, 79, 16)])
    boxes = np.stack([xs, np.full_like(xs, 40), xs + 4, np.full_like(xs, 48)], 1)
    tl = Timeline("person", dict(PERSON), np.arange(len(xs)), boxes)
    text = describe_trajectory(tl, width=96, height=96)[2]
    assert text.startswith("is in view from the start in the")
    assert "moves right, stops, moves right quickly" in text


def test_appearance_phrasings():
    tl = Timeline("person", {"top": "orange", "bottom": "black", "bag": "green",
                             "height": "short"}, np.arange(2), np.zeros((2, 4)))
    assert describe_appearance(tl)[0] == \
        "a short person in an orange top and black trousers, carrying a green bag"
    car = Timeline("car", dict(CAR), np.arange(2), np.zeros((2, 4)))
    assert describe_appearance(car)[1] == "a white car"


def test_anomaly_focus_blurs_only_outside_the_mask():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 4:8, 4:8] = 1
    focused = anomaly_focus(frames, masks, sigma=2.0)
    np.testing.assert_array_equal(focused[masks == 1], frames[masks == 1])
    outside = masks == 0
    assert focused[outside].std() < 0.5 * frames[outside].std()   # blurred = smoother


def test_focused_instances_keep_what_overlaps_the_mask():
    masks = np.zeros((1, 20, 20), np.uint8)
    masks[0, 0:10, 0:10] = 1
    inside = Instance(0, (1, 1, 6, 6), "person", PERSON)
    outside = Instance(0, (12, 12, 18, 18), "car", CAR)
    assert focused_instances([[inside, outside]], masks) == [[inside]]


def test_dialogue_order_and_normal_videos(tiny_synth):
    tl = Timeline("person", dict(PERSON), np.arange(5, 15), _line(10, 20, 30, range(10)))
    turns = anomaly_dialogue([tl], True, 96, 96, 30.0)
    assert [t["type"] for t in turns] == ["judgment", "target", "trajectory", "time"]
    assert all(len(t["answers"]) >= 2 for t in turns)
    assert turns[0]["answers"][0] == "Yes."
    assert turns[3]["answers"][0] == "From frame 5 to frame 14."
    normal = anomaly_dialogue([], False, 96, 96, 30.0)
    assert [t["type"] for t in normal] == ["judgment"] and normal[0]["answers"][0] == "No."


def test_annotate_video_on_synthetic_output(tiny_synth):
    _, root = tiny_synth
    reader = make_reader("synthetic", root)
    for name in reader.video_names("test"):
        record = reader.read(name)
        out = annotate_video(record.sidecar, record.masks)
        assert out["abnormal"] == name.startswith("abnormal")
        assert out["narratives"][0]["type"] == "overall"
        if out["abnormal"]:
            assert [t["type"] for t in out["dialogue"]] == \
                ["judgment", "target", "trajectory", "time"]
            first, last = np.flatnonzero(record.labels)[[0, -1]]
            assert out["dialogue"][3]["answers"][0] == f"From frame {first} to frame {last}."
