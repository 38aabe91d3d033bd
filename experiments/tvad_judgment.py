"""Where T-VAD's yes/no judgment comes from: video-level evidence in the heatmaps and in the
decoder's first answer word, per split.

    .venv/bin/python -m experiments.tvad_judgment MODEL_DIR [--splits train,val,test_seen,test]
        [--config default] [key=value ...]

For every video of each split (normal vs abnormal, from the annotations): the AUC of the AHD's
highest heat over the whole video (can the heatmaps tell the videos apart at all?), and the
AUC and balanced accuracy (at 0) of the decoder's log p("Yes") - log p("No") at the judgment
answer's deciding token, teacher-forced after the judgment question (does the decoder read that
evidence, and is its threshold where the classes split?). Prints one markdown table and writes
`judgment.json` / `judgment.md` into a run folder under `runs_dir`.
"""
from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.dialogues import chat_format, read_annotations
from tvad_jax.eval.metrics import judgment_scores, roc_auc
from tvad_jax.infer.features import feature_cache
from tvad_jax.infer.heatmaps import decoder_view, video_heatmaps
from tvad_jax.infer.judgment import judgment_gap, judgment_prompt
from tvad_jax.jobs.config import Config
from tvad_jax.models.tvad import TVADModel, load_model
from tvad_jax.runs import new_run_dir

COLUMNS = ("max_heat_auc", "yes_no_logit_auc", "yes_no_logit_balanced_accuracy",
           "yes_rate_abnormal", "yes_rate_normal")


def judgment_logits(model: TVADModel):
    """f(visual [1, S_v, D], maps [1, T', h, w, 2] or None) -> [1]: the trained model's
    `infer.judgment.judgment_gap`, compiled once."""
    prompt = judgment_prompt(model.backbone.tokenizer)
    prefix = chat_format(model.backbone.tokenizer).prefix
    cfg, params, bcfg = model.cfg, model.params, model.backbone.cfg
    return jax.jit(lambda visual, maps: judgment_gap(
        cfg, bcfg, model.backbone.params["decoder"], params.get("rae"), params.get("special"),
        visual, maps, prompt, prefix=prefix))


def score(model: TVADModel, cfg: Config, split: str, report, logit_gap) -> dict:
    """COLUMNS on one split; `logit_gap` is `judgment_logits(model)` (compiled once for all
    splits), None for a model without a dialogue."""
    abnormal = np.asarray([row["abnormal"] for row in read_annotations(cfg.prepared_dir, split)])
    out = {}
    if model.cfg.has_ahd:
        cache = feature_cache(cfg, model.backbone, split, model.clip_view, report)
        maps = video_heatmaps(model.cfg, model.params["ahd"], model.params["text"], cache)
        out["max_heat_auc"] = roc_auc(abnormal, np.asarray([m.max() for m in maps]))
    if logit_gap is not None:
        videos = decoder_view(model, cfg, split, report)
        rows = (videos[i] for i in range(len(videos)))
        gap = np.asarray([float(logit_gap(row["visual"][None],
                                          row["maps"][None] if "maps" in row else None)[0])
                          for row in rows])
        out.update(judgment_scores(abnormal, gap))
    return out


def markdown(results: dict) -> str:
    lines = ["| split | " + " | ".join(COLUMNS) + " |", "|---" * (1 + len(COLUMNS)) + "|"]
    for split, row in results.items():
        cells = " | ".join(f"{row[c]:.3f}" if c in row else "–" for c in COLUMNS)
        lines.append(f"| {split} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a T-VAD model folder (`RUN_DIR/model`)")
    parser.add_argument("--config", default="default")
    parser.add_argument("--splits", default="train,val,test_seen,test")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --splits
    cfg = config_lib.resolve(args.config, args.overrides)
    report = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    model = load_model(args.model)
    logit_gap = judgment_logits(model) if model.cfg.variant != "no_rae" else None
    results = {s: score(model, cfg, s, report, logit_gap)
               for s in args.splits.split(",") if s}
    root = new_run_dir("judgment", cfg, cfg.runs_dir)
    (root / "judgment.json").write_text(json.dumps(results, indent=2) + "\n")
    (root / "judgment.md").write_text(markdown(results))
    report(f"[tvad] judgment study in {root}")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
