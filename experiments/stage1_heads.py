"""Which per-patch head on the frozen cached features localizes, and does it carry over?

    .venv/bin/python -m experiments.stage1_heads [--backbone DIR] [--head mlp|context] \
        [--steps 600] [--frame-weight 0] [key=value ...]

A fast stand-in for stage 1 to study the features rather than the AHD: a head reads the
ViT layers of the stage-1 feature cache (all layers concatenated per patch) and predicts each
patch's anomaly logit, trained on the `train` split's cached clips with stage 1's pixel loss
(`tvad.stage1.target`, `abnormal_weight`, `focal_gamma`) and, with `--frame-weight`, a
binary cross-entropy of each tubelet's maximum logit against its label (what the frame AUC
scores). Heads: "mlp" (LayerNorm, a hidden layer, one logit: the AHD without its text side)
and "context" (the same plus two residual 3x3x3 convolutions over tubelets and the patch
grid, so that a patch sees its neighbours' motion). Four times during training it scores
`train`, `val`, `test_seen` and `test`: patch AUC (every valid patch), micro / macro frame
AUC (a frame's score = its maximum patch), RBDC / TBDC at 0.5 and the micro AUC per anomaly
type. Writes `heads.jsonl` into a run folder under `runs_dir` and prints each evaluation.
"""
from __future__ import annotations

import argparse
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from experiments.tvad_stage1 import video_types
from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.pipeline import scatter_clips
from tvad_jax.eval.metrics import auc_by_type
from tvad_jax.eval.tvad import RegionScorer, frame_labels, heatmap_auc
from tvad_jax.infer.features import feature_cache
from tvad_jax.models.ahd import patch_targets, pixel_loss
from tvad_jax.models.tvad import load_frozen_backbone
from tvad_jax.runs import new_run_dir

SPLITS = ("train", "val", "test_seen", "test")


class PatchHead(nn.Module):
    """[B, T', h, w, F] concatenated layer features -> [B, T', h, w] anomaly logits."""

    kind: str
    width: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.width)(nn.LayerNorm()(x)))
        if self.kind == "context":
            for _ in range(2):
                x = x + nn.gelu(nn.Conv(self.width, (3, 3, 3), padding="SAME")(
                    nn.LayerNorm()(x)))
        return nn.Dense(1)(x)[..., 0]


def split_arrays(cfg, backbone, split: str):
    """(cache, features [C, T', h, w, I*D] float16, patch targets [C, T', h, w])."""
    cache = feature_cache(cfg, backbone, split, cfg.tvad.stage1.view, lambda msg: None)
    hidden = cache.column("hidden")[:, :, :, 1:]                       # C, I, T', N, D
    C, I, T, N, D = hidden.shape
    side = int(round(N ** 0.5))
    x = np.transpose(hidden, (0, 2, 3, 1, 4)).reshape(C, T, side, side, I * D)
    y = np.asarray(patch_targets(jnp.asarray(cache.column("tubelet_masks")), (side, side),
                                 cfg.tvad.stage1.target))
    return cache, x, y


def make_loss(head: PatchHead, s1, frame_weight: float):
    """Stage 1's pixel loss on the head's logits (as the AHD's two classes [0, z]), plus the
    frame-level cross-entropy of each tubelet's maximum logit with `frame_weight`."""
    def two_class(z):
        return jnp.stack([jnp.zeros_like(z), z], axis=-1)

    def loss_fn(params, x, y):
        z = head.apply(params, x)
        loss = pixel_loss(two_class(z), y, abnormal_weight=s1.abnormal_weight,
                          focal_gamma=s1.focal_gamma)
        if frame_weight:
            label = (y.max(axis=(-2, -1)) > 0).astype(jnp.float32)       # B, T'
            loss += frame_weight * pixel_loss(two_class(z.max(axis=(-2, -1))), label)
        return loss
    return loss_fn


def evaluate(cfg, split: str, cache, x, y, predict) -> dict:
    maps = np.concatenate([predict(x[i:i + 32]) for i in range(0, len(x), 32)])
    valid = np.broadcast_to(cache.column("valid")[:, ::2, None, None], y.shape)
    per_video = scatter_clips(maps, cache.column("video_index"), cache.column("start"),
                              cache.meta["lengths"], frame_step=cache.meta["view"]["frame_step"])
    auc, scores = heatmap_auc(per_video, cache)
    out = {"patch_auc": roc_auc_score(y[valid] > 0, maps[valid]), **auc}
    if split != "train":
        found = RegionScorer(cfg.prepared_dir, split, cache.meta["lengths"])(per_video)
        out.update(rbdc=found.rbdc, tbdc=found.tbdc, auc_by_type=auc_by_type(
            scores, frame_labels(cache, cache.meta["lengths"]), video_types(cfg, split)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--backbone", default="", help="backbone folder (default: shipped)")
    parser.add_argument("--head", choices=("mlp", "context"), default="mlp")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frame-weight", type=float, default=0.0)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    backbone = load_frozen_backbone(args.backbone)
    data = {split: split_arrays(cfg, backbone, split) for split in SPLITS}
    head = PatchHead(args.head)
    _, x_train, y_train = data["train"]
    params = head.init(jax.random.key(0), jnp.zeros((1,) + x_train.shape[1:], jnp.float32))
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, max(1, args.steps // 20),
                                                  args.steps, args.lr * 0.01)
    optimizer = optax.adamw(schedule, weight_decay=0.01)
    loss_fn = make_loss(head, cfg.tvad.stage1, args.frame_weight)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    logits = jax.jit(lambda params, x: jax.nn.sigmoid(head.apply(params, x)))
    run_dir = new_run_dir("stage1-heads", cfg, cfg.runs_dir)
    state, rng = optimizer.init(params), np.random.default_rng(0)
    with (run_dir / "heads.jsonl").open("w") as log:
        for i in range(1, args.steps + 1):
            rows = rng.integers(0, len(x_train), args.batch)
            params, state, loss = step(params, state, jnp.asarray(x_train[rows], jnp.float32),
                                       jnp.asarray(y_train[rows]))
            if i % max(1, args.steps // 4) and i != args.steps:
                continue
            predict = lambda x: np.asarray(logits(params, jnp.asarray(x, jnp.float32)))  # noqa: E731
            result = {"step": i, "loss": float(loss),
                      **{s: evaluate(cfg, s, *data[s], predict) for s in SPLITS}}
            log.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
    print(f"[tvad] head study in {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
