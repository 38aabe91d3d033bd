"""Linear probe of frozen backbone patch features: does the vision tower encode per-object
attributes?

The T-VAD heatmap decoder reads the ViT layers `VisionConfig.feature_layers` through small
learned maps. A frozen feature from which a linear map cannot read an attribute (class, zone,
direction, speed, pose) cannot feed the decoder that attribute either, so a probe near the
majority baseline points at the backbone, not at the decoder.

Each visible object of a held-out clip becomes one row per layer: the layer's patch tokens
averaged under the object's box (coverage-weighted over patches and tubelets, as in the
region-text pretraining objective). A multinomial logistic regression per (attribute, layer) is
fit on one split and scored on another.

    train = object_features(bcfg, params, cfg, "train", max_clips=256)
    test = object_features(bcfg, params, cfg, "test", max_clips=256)
    report = probe_report(*train, *test)        # report[attribute][layer] -> metrics
    print(markdown_table(report))
"""
from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import TYPE_CHECKING

import jax
import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from tvad_jax.data.object_boxes import box_coverage
from tvad_jax.data.object_text import ClipObject, clip_objects, scene_of
from tvad_jax.data.pipeline import ClipLoader, LoaderConfig, clip_index, open_split, split_names
from tvad_jax.data.readers import source_reader
from tvad_jax.models.vlm import Backbone

if TYPE_CHECKING:
    from tvad_jax.data.synthetic.scene import Scene
    from tvad_jax.models.configs import VisionConfig

# Attribute name -> its label on an object.
ATTRIBUTES = {
    "class": lambda obj: obj.category,
    "zone": lambda obj: obj.zone,
    "direction": lambda obj: obj.motion["direction"],
    "speed": lambda obj: obj.motion["speed"],
    "pose": lambda obj: obj.motion["pose"],
    "anomaly": lambda obj: "acting" if obj.acting else "not acting",   # its anomaly, in the clip
}


# ------------------------------------------------------------------ features
def object_features(bcfg, params, cfg, split: str, max_clips: int, clip_len: int = 8,
                    frame_step: int = 1
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray]:
    """Pooled features and labels of every visible object of up to `max_clips` evenly spaced,
    non-overlapping clips (`clip_len` frames taken every `frame_step`) of the prepared `split`
    (a synthetic benchmark: labels come from its sidecars).

    Returns ({"layer_<i>": [M, D] float32} for each ViT hidden state i of
    `bcfg.vision.feature_layers`, {attribute: M labels}, clips [M, 2] int: the object's video
    index in the split and its clip's first frame); row m of each is the same object.
    Objects whose boxes cover no patch are skipped."""
    vision = bcfg.vision
    loader = dataclasses.replace(cfg.loader, clip_len=clip_len, frame_step=frame_step,
                                 clip_stride=(clip_len - 1) * frame_step + 1, shuffle=False,
                                 worker_count=0)
    source, lengths = open_split(cfg.prepared_dir, split)
    index = clip_index(lengths, loader)                                 # [C, 2]
    rows = np.linspace(0, len(index), min(max_clips, len(index)), endpoint=False).astype(int)
    load = ClipLoader(source, index, loader)
    names = split_names(cfg.prepared_dir, split)
    reader = source_reader(cfg)

    @functools.cache
    def video(v: int) -> tuple[dict, Scene]:
        sidecar = reader.read_sidecar(names[v])
        return sidecar, scene_of(sidecar)

    model = Backbone(bcfg)
    encode = jax.jit(lambda p, frames: model.apply({"params": p}, frames,
                                                   method=Backbone.encode_video).hidden)
    layers = {f"layer_{i}": k for k, i in enumerate(vision.layer_indices)}  # repeats once
    pooled = {name: [] for name in layers}
    objects: list[ClipObject] = []
    where: list[tuple[int, int]] = []
    for first in range(0, len(rows), loader.batch_size):
        clips = [load(r) for r in rows[first:first + loader.batch_size]]
        frames = np.stack([c["frames"] for c in clips])                 # [B, T, H, W, 3]
        if frames.shape[2:4] != (vision.image_size,) * 2:
            raise ValueError(f"{split}: frames are {frames.shape[2]}x{frames.shape[3]} px, the "
                             f"backbone takes {vision.image_size}x{vision.image_size}")
        hidden = jax.device_get(encode(params, frames))         # per layer [B, T', 1+N, D]
        for b, clip in enumerate(clips):
            found, weights = _visible(*video(int(clip["video_index"])), int(clip["start"]),
                                      loader, vision)
            objects += found
            where += [(int(clip["video_index"]), int(clip["start"]))] * len(found)
            for name, k in layers.items():
                pooled[name].append(_pool(hidden[k][b], weights))
    features = {name: np.concatenate(p).astype(np.float32) for name, p in pooled.items()}
    labels = {name: [get(obj) for obj in objects] for name, get in ATTRIBUTES.items()}
    return features, labels, np.asarray(where, np.int64).reshape(-1, 2)


def _visible(sidecar: dict, scene: Scene, start: int, loader: LoaderConfig,
             vision: VisionConfig) -> tuple[list[ClipObject], np.ndarray]:
    """The objects of the clip at `start` that cover some patch, and their coverage
    [K, T', N]."""
    frame_ids = np.minimum(start + np.arange(loader.clip_len) * loader.frame_step,
                           sidecar["num_frames"] - 1)
    objects = clip_objects(sidecar, frame_ids, scene)
    # Sidecar boxes are at the rendered resolution; frames at the prepared one (square).
    size = vision.image_size
    scale = np.asarray([size / sidecar["width"], size / sidecar["height"]] * 2)
    boxes = np.asarray([obj.boxes for obj in objects]).reshape(-1, loader.clip_len, 4)
    boxes = (boxes + (0, 0, 1, 1)) * scale - (0, 0, 1, 1)              # inclusive x1, y1
    cover = box_coverage(boxes, size, vision.patch_size, vision.tubelet)   # [K, T', g, g]
    cover = cover.reshape(len(objects), cover.shape[1], -1)              # [K, T', N]
    keep = cover.sum(axis=(1, 2)) > 0
    return [obj for obj, k in zip(objects, keep) if k], cover[keep]


def _pool(hidden: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """hidden [T', 1+N, D] (CLS first), weights [K, T', N] -> weighted mean patch token
    [K, D]."""
    total = np.einsum("tnd,ktn->kd", hidden[:, 1:], weights)
    return total / weights.sum(axis=(1, 2))[:, None]


# ------------------------------------------------------------------ the probe
def fit_probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray,
              test_y: list[str], l2: float = 1e-3) -> dict:
    """Multinomial logistic regression on standardized features (train statistics), L2 on the
    weights (not the bias), fit by L-BFGS-B on the exact mean cross-entropy and gradient.

    train_x [M, D], test_x [M', D]; labels are strings, and test classes never seen in
    training count as errors. Returns accuracy, balanced_accuracy (mean recall over the test
    classes), majority_accuracy (the most common train label predicted for every test row),
    majority_class and the train / test class counts."""
    classes = sorted(set(train_y))
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def design(x: np.ndarray) -> np.ndarray:                        # [M, D + 1], bias last
        return np.hstack([(x - mean) / std, np.ones((len(x), 1))])

    x = design(np.asarray(train_x, np.float64))
    onehot = np.eye(len(classes))[[classes.index(y) for y in train_y]]          # [M, C]
    penalized = np.ones((x.shape[1], 1))
    penalized[-1] = 0.0

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(x.shape[1], len(classes))                           # [D + 1, C]
        logits = x @ w
        logp = logits - logsumexp(logits, axis=1, keepdims=True)
        value = -(onehot * logp).sum() / len(x) + 0.5 * l2 * (penalized * w ** 2).sum()
        grad = x.T @ (np.exp(logp) - onehot) / len(x) + l2 * penalized * w
        return value, grad.ravel()

    fit = minimize(loss, np.zeros(x.shape[1] * len(classes)), jac=True, method="L-BFGS-B")
    w = fit.x.reshape(x.shape[1], len(classes))
    scores = design(np.asarray(test_x, np.float64)) @ w                    # [M', C]
    predicted = np.asarray(classes)[np.argmax(scores, axis=1)]
    truth = np.asarray(test_y)
    majority = Counter(train_y).most_common(1)[0][0]
    recalls = [np.mean(predicted[truth == c] == c) for c in sorted(set(test_y))]
    return {"accuracy": float(np.mean(predicted == truth)),
            "balanced_accuracy": float(np.mean(recalls)),
            "majority_accuracy": float(np.mean(truth == majority)),
            "majority_class": majority,
            "train_counts": dict(sorted(Counter(train_y).items())),
            "test_counts": dict(sorted(Counter(test_y).items()))}


def probe_report(train_feats: dict[str, np.ndarray], train_labels: dict[str, list[str]],
                 test_feats: dict[str, np.ndarray], test_labels: dict[str, list[str]]
                 ) -> dict[str, dict[str, dict]]:
    """`fit_probe` for every attribute and layer of `object_features` outputs:
    report[attribute][layer] -> metrics."""
    return {attribute: {layer: fit_probe(train_feats[layer], train_labels[attribute],
                                         test_feats[layer], test_labels[attribute])
                        for layer in train_feats}
            for attribute in train_labels}


def markdown_table(report: dict[str, dict[str, dict]]) -> str:
    """One row per (attribute, layer): accuracies beside the majority baseline and the
    train class counts."""
    lines = ["| attribute | layer | accuracy | balanced accuracy | majority baseline | "
             "train classes |", "|---|---|---|---|---|---|"]
    for attribute, layers in report.items():
        for layer, m in layers.items():
            counts = ", ".join(f"{c} {n}" for c, n in m["train_counts"].items())
            lines.append(f"| {attribute} | {layer} | {m['accuracy']:.3f} | "
                         f"{m['balanced_accuracy']:.3f} | {m['majority_accuracy']:.3f} | "
                         f"{counts} |")
    return "\n".join(lines) + "\n"
