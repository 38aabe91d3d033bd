import numpy as np

from tvad_jax.data.annotate import Timeline
from tvad_jax.data.captions import clip_caption, clip_questions, clip_timelines, heading
from tvad_jax.data.readers import make_reader

PERSON = {"top": "red", "bottom": "blue", "bag": None, "height": "medium"}
CAR = {"color": "white", "size": "small"}


def _timeline(category, attrs, xs, y, size=(4, 8)):
    xs = np.asarray(xs, np.float64)
    boxes = np.stack([xs, np.full_like(xs, y), xs + size[0], np.full_like(xs, y + size[1])], 1)
    return Timeline(category, attrs, np.arange(len(xs)), boxes)


def test_caption_ranks_by_visible_area_and_names_motion():
    person = _timeline("person", PERSON, np.linspace(10, 30, 8), 60)
    car = _timeline("car", CAR, np.linspace(80, 40, 8), 40, size=(16, 7))
    still = _timeline("person", {**PERSON, "top": "green"}, np.full(8, 50.0), 10)
    caption = clip_caption([person, still, car], 96, 96, max_targets=2)
    assert caption == ("a small white car moves left in the middle right; "
                       "a person in a red top and blue trousers moves right in the lower left")
    assert heading(still) == "stands still"
    assert clip_caption([], 96, 96) == "an empty street"


def test_questions_count_and_describe():
    person = _timeline("person", PERSON, np.linspace(10, 30, 8), 60)
    car = _timeline("car", CAR, np.linspace(80, 40, 8), 40, size=(16, 7))
    pairs = dict(clip_questions([person, car]))
    assert pairs["How many people are there?"] == "One."
    assert pairs["How many cyclists are there?"] == "No."
    assert pairs["What is the most visible target?"] == "A small white car."
    assert pairs["How does it move?"] == "It moves left."


def test_clip_timelines_stay_inside_the_window(tiny_synth):
    _, root = tiny_synth
    reader = make_reader("synthetic", root)
    record = reader.read(reader.video_names("train")[0])
    timelines = clip_timelines(record.sidecar, 8, 8)
    assert timelines and all(8 <= tl.frames[0] and tl.frames[-1] < 16 for tl in timelines)
    assert clip_caption(timelines, 48, 48)
