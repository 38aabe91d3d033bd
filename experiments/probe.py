"""Linear probe of the frozen backbone's patch features for per-object attributes.

    .venv/bin/python -m experiments.probe [--config default] [--backbone DIR] \
        [--train-split train] [--test-split test] [--clips 256] [--frame-step N] \
        [key=value ...]

Pools each ViT feature layer (the layers the T-VAD heatmap decoder reads) under every visible
object's box in `--clips` clips of each split, fits a logistic regression per (attribute,
layer) on the train split's objects and scores it on the test split's, beside the majority
baseline (see `tvad_jax.eval.probe`). Clips are 8 frames taken every `--frame-step` frames
(default: the step of the clips the heatmap decoder scores, `tvad.stage1.view.frame_step`). Writes `probe.json` and `probe.md` into a run folder
under `runs_dir` and prints the table. `--backbone` defaults to the shipped backbone; the
benchmark must already be prepared (`tvad data prepare`).
"""
from __future__ import annotations

import argparse
import json
import sys

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.pipeline import open_split
from tvad_jax.errors import InputError
from tvad_jax.eval.probe import markdown_table, object_features, probe_report
from tvad_jax.models import backbone_io
from tvad_jax.runs import new_run_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--backbone", default=str(backbone_io.SHIPPED_DIR))
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--clips", type=int, default=256, help="clips per split (at most)")
    parser.add_argument("--frame-step", type=int, default=0,
                        help="frames between clip frames (0: tvad.stage1.view.frame_step)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    try:
        for split in (args.train_split, args.test_split):
            open_split(cfg.prepared_dir, split)
    except InputError as err:
        sys.exit(f"[tvad] {err}")
    bcfg, params, _ = backbone_io.load_backbone(args.backbone, with_tokenizer=False)
    step = args.frame_step or cfg.tvad.stage1.view.frame_step
    train = object_features(bcfg, params, cfg, args.train_split, args.clips, frame_step=step)
    test = object_features(bcfg, params, cfg, args.test_split, args.clips, frame_step=step)
    report = probe_report(*train[:2], *test[:2])
    text = markdown_table(report)
    run_dir = new_run_dir("probe", cfg, cfg.runs_dir)
    results = {"backbone": args.backbone, "clips": args.clips, "frame_step": step,
               "objects": {args.train_split: len(train[1]["class"]),
                           args.test_split: len(test[1]["class"])},
               "probe": report}
    (run_dir / "probe.json").write_text(json.dumps(results, indent=2) + "\n")
    (run_dir / "probe.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
