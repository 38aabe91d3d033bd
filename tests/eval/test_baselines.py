"""Frame difference: the motion energy of each frame, read through the configured reader."""
import dataclasses

import numpy as np

from tvad_jax.data.readers import make_reader
from tvad_jax.eval.baselines import baseline_scores, frame_difference_scores


def test_frame_difference_is_the_mean_luma_change():
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1] = 255                                  # white: luma 255
    frames[2, 0] = 255                               # half white
    np.testing.assert_allclose(frame_difference_scores(frames), [1.0, 1.0, 0.5], atol=1e-5)


def test_the_split_is_the_configured_one(tiny_synth, tmp_path):
    """A split list given to `tvad data prepare` (prepare.split_files) is the split the
    baselines score too, not the dataset's default list."""
    cfg, root = tiny_synth
    names = make_reader("synthetic", root).video_names("test")[:2]
    listed = tmp_path / "two.txt"
    listed.write_text("\n".join(names) + "\n")
    custom = dataclasses.replace(cfg, prepare=dataclasses.replace(
        cfg.prepare, split_files=f"test={listed}"))
    scores, labels = baseline_scores(custom, "test", report=lambda m: None)
    assert sorted(scores) == sorted(labels) == sorted(names)
    everything, _ = baseline_scores(cfg, "test", report=lambda m: None)
    assert len(everything) > 2
    for name in names:
        np.testing.assert_array_equal(scores[name], everything[name])
