"""The linear probe: the fit on synthetic problems, object features on the tiny benchmark, and
the experiment script end to end."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tvad_jax.eval.probe import ATTRIBUTES, fit_probe, markdown_table, object_features, probe_report


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """n points of 3 well separated Gaussian classes in 5-D."""
    centres = {"a": np.zeros(5), "b": np.full(5, 4.0), "c": np.r_[4.0, -4.0, 0, 0, 0]}
    names = rng.choice(sorted(centres), n)
    x = np.stack([centres[c] for c in names]) + rng.normal(size=(n, 5))
    return x, list(names)


def test_fit_probe_separable_classes():
    rng = np.random.default_rng(0)
    (train_x, train_y), (test_x, test_y) = _blobs(rng, 150), _blobs(rng, 150)
    m = fit_probe(train_x, train_y, test_x, test_y)
    assert m["accuracy"] >= 0.98 and m["balanced_accuracy"] >= 0.98
    assert m["majority_accuracy"] < 0.5
    assert sum(m["train_counts"].values()) == 150 and set(m["test_counts"]) == {"a", "b", "c"}


def test_fit_probe_counts_unseen_classes_as_errors():
    rng = np.random.default_rng(1)
    (train_x, train_y), (test_x, test_y) = _blobs(rng, 90), _blobs(rng, 90)
    m = fit_probe(train_x, train_y, np.vstack([test_x, test_x[:10]]),
                  test_y + ["d"] * 10)
    assert m["accuracy"] <= 90 / 100
    assert m["balanced_accuracy"] <= 3 / 4


def test_fit_probe_random_labels_stay_near_majority():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 8))
    y = list(rng.choice(["a", "b", "c"], 1000, p=[0.5, 0.3, 0.2]))
    m = fit_probe(x[:500], y[:500], x[500:], y[500:])
    assert m["majority_class"] == "a"
    assert abs(m["accuracy"] - m["majority_accuracy"]) < 0.08


@pytest.fixture(scope="module")
def tiny_objects(tiny_backbone):
    """(cfg, backbone config, features, labels, clips) of every clip of the tiny test split."""
    from tvad_jax.models.backbone_io import load_backbone

    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory, with_tokenizer=False)
    return (cfg, bcfg, *object_features(bcfg, params, cfg, "test", max_clips=1000))


def _visible_objects(cfg, split: str, clip_len: int = 8) -> list:
    """Every object of every non-overlapping clip of `split`, straight from the sidecars."""
    import dataclasses

    from tvad_jax.data.object_text import clip_objects
    from tvad_jax.data.pipeline import clip_index, open_split, split_names
    from tvad_jax.data.readers import make_reader

    loader = dataclasses.replace(cfg.loader, clip_len=clip_len, clip_stride=clip_len)
    _, lengths = open_split(cfg.prepared_dir, split)
    names = split_names(cfg.prepared_dir, split)
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    objects = []
    for video, start in clip_index(lengths, loader):
        sidecar = reader.read_sidecar(names[video])
        frame_ids = np.minimum(start + np.arange(clip_len) * loader.frame_step,
                               sidecar["num_frames"] - 1)
        objects += clip_objects(sidecar, frame_ids)
    return objects


def test_object_features_one_row_per_visible_object(tiny_objects):
    cfg, bcfg, features, labels, clips = tiny_objects
    assert set(features) == {f"layer_{i}" for i in bcfg.vision.layer_indices}
    assert set(labels) == set(ATTRIBUTES)
    objects = _visible_objects(cfg, "test")
    rows = len(labels["class"])
    assert rows == len(objects) > 0
    assert Counter(labels["class"]) == Counter(o.category for o in objects)
    assert all(len(v) == rows for v in labels.values())
    for x in features.values():
        assert x.shape == (rows, bcfg.vision.width) and x.dtype == np.float32
        assert np.isfinite(x).all()
    assert set(labels["speed"]) <= {"still", "slow", "fast"}
    assert Counter(labels["anomaly"]) == Counter("acting" if o.acting else "not acting"
                                                 for o in objects)
    assert clips.shape == (rows, 2) and (np.diff(clips[:, 0]) >= 0).all()


def test_probe_report_and_table(tiny_objects):
    _, _, features, labels, _ = tiny_objects
    report = probe_report(features, labels, features, labels)
    assert list(report) == list(ATTRIBUTES)
    assert all(set(layers) == set(features) for layers in report.values())
    table = markdown_table(report)
    assert table.count("\n") == 2 + len(ATTRIBUTES) * len(features)
    assert "| class | layer_" in table


def test_experiment_writes_report(tiny_backbone, tmp_path, capsys):
    from experiments.probe import main

    cfg, directory = tiny_backbone
    overrides = [f"synth.out_dir={cfg.synth.out_dir}", f"runs_dir={tmp_path}"]
    assert main(["--config", "tiny", "--backbone", str(directory), "--train-split", "val",
                 "--clips", "4", *overrides]) == 0
    (run_dir,) = tmp_path.glob("probe-*")
    results = json.loads((run_dir / "probe.json").read_text())
    assert set(results["probe"]) == set(ATTRIBUTES)
    assert (run_dir / "probe.md").read_text() in capsys.readouterr().out


def test_experiment_needs_prepared_benchmark(tmp_path):
    from experiments.probe import main

    with pytest.raises(SystemExit, match="no prepared dataset"):
        main(["--config", "tiny", f"synth.out_dir={tmp_path / 'missing'}"])


def test_oracle_spreads_each_clip_object_over_its_clip_frames():
    from experiments.oracle_objects import CLIP_LEN, clip_frames

    features = {"layer_1": np.asarray([[1.0], [2.0], [3.0]]), "layer_0": np.zeros((3, 1))}
    labels = {"anomaly": ["not acting", "acting", "not acting"],
              "speed": ["slow", "fast", "still"], "direction": ["left", "none", "up"]}
    clips = np.asarray([[0, 0], [0, 8], [1, 0]])          # (video, first frame) per object
    out = clip_frames(features, labels, clips, ["a", "b"], with_motion=True)
    x, acting, frames = out["a"]
    np.testing.assert_array_equal(frames, np.r_[np.arange(8), np.arange(8, 16)])
    np.testing.assert_array_equal(acting, [False] * CLIP_LEN + [True] * CLIP_LEN)
    # layers in name order, then one-hot speed (still, slow, fast), direction (none, ..., down)
    np.testing.assert_array_equal(x[0], [0, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(x[-1], [0, 2, 0, 0, 1, 1, 0, 0, 0, 0])
    assert out["b"][0].shape == (CLIP_LEN, 10) and (out["b"][2] == np.arange(8)).all()
