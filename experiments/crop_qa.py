"""Does the backbone's decoder read the crop? Single-object QA on held-out object crops.

    .venv/bin/python -m experiments.crop_qa [--backbone DIR] [--split test] [--every 4] \
        [--noun own|person] [--config NAME] [key=value ...]

Pretraining teaches the decoder VLAVAD's three single-object questions (pose, behaviour or
action, appearance) on crop clips (`data.clip_texts`: 8 frames cut around the object by
`object_boxes.crop_box`); paper 004's SPA and any crop QA rest on those answers. This asks
them on the held-out split's objects the same way: every `--every`-th video, a clip every
16 frames, its 4 most visible objects seen in at least 5 of its 8 frames, the question with
the object's own noun (`--noun person`: "person" in every question, so that the class must
come from the pixels), greedy answers. Per question it prints the exact-answer rate per
class, the distinct answers per class and their most common ones, and for the behaviour
question the recall of each direction / speed / zone word of the reference answers; the
JSON goes to `crop_qa.json` in a run folder under `runs_dir`.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

import numpy as np

from tvad_jax import configs  # noqa: F401  (registers the named configs)
from tvad_jax import config as config_lib
from tvad_jax.data.object_boxes import crop_box, crop_frames
from tvad_jax.data.object_text import clip_objects
from tvad_jax.data.pipeline import CLIP_MEAN, CLIP_STD
from tvad_jax.data.readers import make_reader
from tvad_jax.infer.dialogue import Dialogue
from tvad_jax.infer.features import make_encoder
from tvad_jax.models.tvad import load_frozen_backbone, plain_model
from tvad_jax.runs import new_run_dir

CLIP_LEN, CLIP_EVERY, OBJECTS, MIN_SEEN = 8, 16, 4, 5
WORDS = ("left", "right", "up", "down", "fast", "slowly", "road", "sidewalk", "crossing")
KINDS = ("pose", "behaviour", "appearance")     # the order of ClipObject.questions


def crops(cfg, split: str, every: int) -> tuple[np.ndarray, list]:
    """CLIP-normalized crop clips [K, 8, S, S, 3] and (class, questions) per crop."""
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    pixels, info = [], []
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    for name in reader.video_names(split)[::every]:
        record = reader.read(name)
        frames = record.frames
        for start in range(0, len(frames) - CLIP_LEN + 1, CLIP_EVERY):
            ids = np.arange(start, start + CLIP_LEN)
            for obj in clip_objects(record.sidecar, ids)[:OBJECTS]:
                if (~np.isnan(obj.boxes[:, 0])).sum() < MIN_SEEN:
                    continue
                clip = crop_frames(frames[ids], crop_box(obj.boxes, frames.shape[2],
                                                         frames.shape[1]))
                pixels.append((clip / 255.0 - mean) / std)
                info.append((obj.category, obj.questions))
    return np.asarray(pixels, np.float32), info


def ask(model, visual: np.ndarray, info: list, kind: int, noun: str, batch: int = 64) -> list:
    """The greedy answer of every crop to question `kind`, asked per class in batches."""
    answers = [""] * len(info)
    for category in sorted({c for c, _ in info}):
        rows = [i for i, (c, _) in enumerate(info) if c == category]
        question = info[rows[0]][1][kind][0]
        if noun == "person":
            question = question.replace(f" {category} ", " person ")
        for lo in range(0, len(rows), batch):
            chunk = rows[lo:lo + batch]
            chat = Dialogue(model, visual[chunk], None, max_turns=1, max_new_tokens=20)
            for i, answer in zip(chunk, chat.ask(question)):
                answers[i] = answer
    return answers


def score(info: list, answers: list, kind: int) -> dict:
    """Exact answers per class, distinct answers, the most common, word recall."""
    norm = lambda text: text.lower().strip().rstrip(".")  # noqa: E731
    exact, total = Counter(), Counter()
    seen, recall, present = defaultdict(Counter), Counter(), Counter()
    for (category, questions), answer in zip(info, answers):
        reference = norm(questions[kind][1])
        total[category] += 1
        exact[category] += norm(answer) == reference
        seen[category][norm(answer)] += 1
        for word in WORDS:
            if word in reference.split():
                present[word] += 1
                recall[word] += word in norm(answer).split()
    return {"exact": {c: f"{exact[c]}/{total[c]}" for c in total},
            "distinct_answers": {c: len(seen[c]) for c in seen},
            "most_common": {c: seen[c].most_common(3) for c in seen},
            "word_recall": {w: f"{recall[w]}/{present[w]}" for w in WORDS if present[w]}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default")
    parser.add_argument("--backbone", default="", help="backbone folder (default: shipped)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=4, help="every n-th video of the split")
    parser.add_argument("--noun", choices=("own", "person"), default="own")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.resolve(args.config, args.overrides)
    backbone = load_frozen_backbone(args.backbone)
    pixels, info = crops(cfg, args.split, args.every)
    _, visual = make_encoder(backbone.cfg, backbone.params)(pixels)
    model = plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    visual = np.asarray(visual, np.float32)
    results = {"backbone": str(backbone.path), "split": args.split, "crops": len(info),
               "noun": args.noun,
               **{name: score(info, ask(model, visual, info, k, args.noun), k)
                  for k, name in enumerate(KINDS)}}
    run_dir = new_run_dir("crop-qa", cfg, cfg.runs_dir)
    (run_dir / "crop_qa.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"[tvad] crop QA in {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
