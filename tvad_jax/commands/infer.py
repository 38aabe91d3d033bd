"""`tvad detect` and `tvad chat`: a trained T-VAD model on video files.

    tvad detect MODEL_DIR VIDEO [VIDEO ...] [--no-overlay] [--runs-root DIR]
    tvad chat MODEL_DIR VIDEO [--questions FILE] [--max-new-tokens N] [--runs-root DIR]

MODEL_DIR is the `model/` folder of a `tvad train tvad` run. `detect` writes, per video,
`<name>.scores.npy` (per-frame anomaly scores), `<name>.overlay.mp4` (the heatmap video) and
one line of `detections.jsonl` (the yes/no judgment, with no threshold to set) into a new run
folder, and prints that folder. `chat` holds a multi-turn dialogue about one video, reusing
the KV cache across turns: questions from --questions (one per line), or typed at the prompt
(an empty line or EOF ends); the transcript goes to `transcript.json` in a new run folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add the `detect` and `chat` commands."""
    detect = subparsers.add_parser("detect", help="anomaly scores, heatmap video and judgment",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    detect.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    detect.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    detect.add_argument("--no-overlay", action="store_true", help="skip the heatmap videos")
    detect.add_argument("--max-new-tokens", type=int, default=48)
    detect.add_argument("--runs-root", type=Path, default=Path("runs"))
    detect.set_defaults(func=run_detect)

    chat = subparsers.add_parser("chat", help="multi-turn dialogue about one video",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    chat.add_argument("video", type=Path, metavar="VIDEO")
    chat.add_argument("--questions", type=Path, help="a file of questions, one per line")
    chat.add_argument("--max-new-tokens", type=int, default=48)
    chat.add_argument("--max-turns", type=int, default=8)
    chat.add_argument("--runs-root", type=Path, default=Path("runs"))
    chat.set_defaults(func=run_chat)


def run_detect(args) -> int:
    import numpy as np

    from tvad_jax import runs
    from tvad_jax.errors import DataError
    from tvad_jax.data.video_io import read_video
    from tvad_jax.infer.detect import Detector, write_overlay
    from tvad_jax.jobs.tvad import load_model

    model = load_model(args.model_dir)
    for path in args.videos:        # before any output: a typo costs no half-made run
        if not path.is_file():
            raise DataError(path, "video file not found")
    run_dir = runs.new_run_dir("detect", {"model": str(args.model_dir),
                                          "videos": [str(v) for v in args.videos]},
                               args.runs_root)
    detector = Detector(model, max_new_tokens=args.max_new_tokens)
    with (run_dir / "detections.jsonl").open("w") as out:
        for path in runs.progress(args.videos, "detect", unit="video"):
            frames = read_video(path)
            result = detector(frames, name=path.stem)
            np.save(run_dir / f"{path.stem}.scores.npy", result.scores)
            if result.heatmaps is not None and not args.no_overlay:
                write_overlay(run_dir / f"{path.stem}.overlay.mp4", frames, result.heatmaps)
            out.write(json.dumps(result.summary()) + "\n")
            print(json.dumps(result.summary()), file=sys.stderr)
    print(run_dir)
    return 0


def run_chat(args) -> int:
    from tvad_jax import runs
    from tvad_jax.errors import DataError
    from tvad_jax.data.video_io import read_video
    from tvad_jax.infer.detect import Detector
    from tvad_jax.infer.dialogue import Dialogue
    from tvad_jax.jobs.tvad import load_model

    model = load_model(args.model_dir)
    if model.cfg.variant == "no_rae":
        raise DataError(args.model_dir, "this model (variant no_rae) has no dialogue")
    if args.questions is not None:
        if not args.questions.is_file():
            raise DataError(args.questions, "questions file not found")
        questions = [q.strip() for q in args.questions.read_text().splitlines() if q.strip()]
        ask = iter(questions).__next__
    else:
        ask = _prompt_user
    feats = Detector(model).features(read_video(args.video))
    chat = Dialogue(model, feats.video_visual[None], feats.video_hidden[None],
                    max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
                    question_len=64)
    run_dir = runs.new_run_dir("chat", {"model": str(args.model_dir), "video": str(args.video)},
                               args.runs_root)
    transcript = []
    for _ in range(args.max_turns):
        try:
            question = ask()
        except StopIteration:
            break
        if not question:
            break
        answer = chat.ask(question)[0]
        transcript.append({"question": question, "answer": answer})
        print(f"Q: {question}\nA: {answer}", flush=True)
    (run_dir / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    print(f"[tvad] transcript in {run_dir / 'transcript.json'}", file=sys.stderr)
    return 0


def _prompt_user() -> str:
    try:
        return input("you> ").strip()
    except EOFError:
        raise StopIteration from None
