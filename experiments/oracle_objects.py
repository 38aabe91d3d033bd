"""How far does knowing every object's true state go? A supervised classifier on the simulator's
per-object state, scored like the heatmap decoder (frame score = max over objects).

    .venv/bin/python -m experiments.oracle_objects [--config NAME] [--train-split train] \
        [--splits test_seen,test] [--features BACKBONE_DIR [--with-true-motion]] \
        [--classifier trees|linear] [key=value ...]

For every object and frame of a split, from its sidecar boxes and the scene's layout: class,
ground zone (road / crossing / sidewalk / ...), box centre and size, velocity over +-2 frames,
speed, motion along the lane's direction (cars) and box aspect (a fallen person lies). A
gradient-boosted classifier (scikit-learn, a test dependency) learns on the training split's
object-frames whether the object is acting its anomaly there; a frame scores the max over its
objects. No pixels are read: this is an upper bound for any detector whose features encode
these attributes (T-VAD's AHD on the frozen tower's patches is one), on the closed-set split
(`test_seen`, the training anomaly types) and the open-set one (`test`, unseen types, where a
classifier of the training types has no reason to transfer). Prints object and frame micro
AUC per split and per anomaly type; writes `oracle.json` into a run folder under `runs_dir`.

`--features DIR` puts a frozen backbone's features in place of the state (the pixels, but the
true boxes): the tower's feature layers (those the AHD reads) pooled under each visible
object's box in every non-overlapping 8-frame clip (`eval.probe.object_features`), an object
counting as acting when its anomaly window meets the clip, and each frame scoring the max over
its clip's objects. Against the state oracle this splits T-VAD's gap in two: what the features
under a perfect localization carry, and what the heatmap decoder loses finding the object.
`--with-true-motion` appends the simulator's speed and direction classes to the features (what
a tower that encoded motion would add). `--classifier linear` fits an L2-regularized logistic
regression on standardized inputs instead of the trees (a probe that overfits hundreds of
feature dimensions less).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.object_text import scene_of
from tvad_jax.data.pipeline import split_names
from tvad_jax.data.readers import make_reader
from tvad_jax.eval.metrics import auc_by_type, frame_auc, roc_auc
from tvad_jax.eval.probe import object_features
from tvad_jax.eval.s3m import anomaly_types
from tvad_jax.models import backbone_io
from tvad_jax.runs import new_run_dir

CLASSES = ("person", "car", "cyclist", "object")
ZONES = ("road", "crossing", "sidewalk", "grass", "buildings")
LAG = 2     # frames either side for the velocity
CLIP_LEN = 8   # frames of the clips whose features `--features` pools
MOTION = {"speed": ("still", "slow", "fast"), "direction": ("none", "left", "right", "up", "down")}


def object_frames(sidecar: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [M, F], is-acting-its-anomaly [M], frame [M]) of every object-frame."""
    scene = scene_of(sidecar)
    rows, labels, frames = [], [], []
    for obj in sidecar["objects"]:
        boxes = {int(r[0]): np.asarray(r[1:], np.float64) for r in obj["boxes"]}
        window = obj["anomaly"]
        for t, (x0, y0, x1, y1) in boxes.items():
            before, after = boxes.get(t - LAG, boxes[t]), boxes.get(t + LAG, boxes[t])
            vx = ((after[0] + after[2]) - (before[0] + before[2])) / (4 * LAG)
            vy = ((after[1] + after[3]) - (before[1] + before[3])) / (4 * LAG)
            cx, w, h = (x0 + x1) / 2, x1 - x0 + 1, y1 - y0 + 1
            lane = 0 if y1 < scene.lane_base(1) - 0.5 * (scene.lane_base(1)
                                                         - scene.lane_base(0)) else 1
            along = vx * scene.lane_direction(lane) if obj["class"] == "car" else 0.0
            rows.append([CLASSES.index(obj["class"]), ZONES.index(scene.zone(cx, y1)),
                         cx, (y0 + y1) / 2, w, h, vx, vy, np.hypot(vx, vy), along, w / h])
            labels.append(window is not None and window[0] <= t <= window[1])
            frames.append(t)
    return np.asarray(rows), np.asarray(labels), np.asarray(frames, np.int64)


def read_split(reader, split: str) -> list[tuple[str, dict, tuple]]:
    return [(name, sc, object_frames(sc)) for name in reader.video_names(split)
            for sc in [reader.read_sidecar(name)]]


def clip_frames(features: dict[str, np.ndarray], labels: dict[str, list[str]],
                clips: np.ndarray, names: list[str], with_motion: bool
                ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`object_features` outputs -> {video name: (features [M, F], acting [M], frame [M])}, each
    object repeated on every frame of its clip (so a frame scores the max over its clip's
    objects)."""
    x = np.concatenate([features[k] for k in sorted(features)], axis=1)
    if with_motion:
        x = np.concatenate([x] + [np.eye(len(v))[[v.index(y) for y in labels[k]]]
                                  for k, v in MOTION.items()], axis=1)
    acting = np.asarray(labels["anomaly"]) == "acting"
    out = {}
    for v, name in enumerate(names):
        rows = np.flatnonzero(clips[:, 0] == v).repeat(CLIP_LEN)
        frames = clips[rows, 1] + np.tile(np.arange(CLIP_LEN), len(rows) // CLIP_LEN)
        out[name] = (x[rows], acting[rows], frames)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--splits", default="test_seen,test")
    parser.add_argument("--features", metavar="BACKBONE_DIR",
                        help="a backbone's pooled features instead of the true state")
    parser.add_argument("--with-true-motion", action="store_true",
                        help="with --features: append the true speed and direction classes")
    parser.add_argument("--classifier", choices=("trees", "linear"), default="trees",
                        help="gradient-boosted trees (default) or a logistic regression")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    if args.features:
        backbone = backbone_io.load_backbone(args.features, with_tokenizer=False)

    def read(split: str) -> list[tuple[str, dict, tuple]]:
        videos = read_split(reader, split)
        if not args.features:
            return videos
        names = split_names(cfg.prepared_dir, split)
        found = object_features(backbone[0], backbone[1], cfg, split, max_clips=10 ** 9,
                                clip_len=CLIP_LEN)
        pooled = clip_frames(*found, names, args.with_true_motion)
        # Truth per frame stays the state's (an object acting in that very frame).
        return [(name, sc, pooled[name] + (truth_frames(state),))
                for name, sc, state in videos]

    train = read(args.train_split)
    x = np.concatenate([f for *_, (f, *_) in train])
    y = np.concatenate([lab for *_, (_, lab, *_) in train])
    model = (HistGradientBoostingClassifier(max_iter=300, class_weight="balanced",
                                            random_state=0) if args.classifier == "trees" else
             make_pipeline(StandardScaler(), LogisticRegression(C=0.01, class_weight="balanced",
                                                                max_iter=2000))).fit(x, y)
    results = {"source": f"features of {args.features}" if args.features else "true state",
               "with_true_motion": args.with_true_motion, "classifier": args.classifier,
               "train_split": args.train_split, "train_object_frames": len(y),
               "train_abnormal_object_frames": int(y.sum())}
    for split in args.splits.split(","):
        videos = read(split)
        scores, labels, types, obj_p, obj_y = {}, {}, [], [], []
        for name, sidecar, (feats, acting, frames, *truth) in videos:
            p = model.predict_proba(feats)[:, 1] if len(feats) else np.zeros(0)
            score = np.zeros(int(sidecar["num_frames"]))
            np.maximum.at(score, frames, p)
            scores[name] = score
            labels[name] = np.zeros(len(score), np.int64)
            labels[name][truth[0] if truth else frames[acting]] = 1
            types.append(",".join(sorted(anomaly_types(sidecar))))
            obj_p.append(p)
            obj_y.append(acting)
        names = [name for name, *_ in videos]
        results[split] = {
            "object_auc": roc_auc(np.concatenate(obj_y).astype(np.int64), np.concatenate(obj_p)),
            "frame_micro_auc": frame_auc(scores, labels).micro_auc,
            "per_anomaly_type": auc_by_type([scores[n] for n in names],
                                            [labels[n] for n in names], types)}
    run_dir = new_run_dir("oracle", cfg, cfg.runs_dir)
    (run_dir / "oracle.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"[tvad] oracle in {run_dir}", file=sys.stderr)
    return 0


def truth_frames(state: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The frames in which some object acts its anomaly, from `object_frames` outputs."""
    _, acting, frames = state
    return frames[acting]


if __name__ == "__main__":
    sys.exit(main())
