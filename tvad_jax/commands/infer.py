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
import functools
import json
import sys
from pathlib import Path
from typing import Callable

from tvad_jax.commands.common import number_at_least, output_dir


def add_parser(subparsers) -> None:
    """Add the `detect` and `chat` commands."""
    detect = subparsers.add_parser("detect", help="anomaly scores, heatmap video and judgment",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    detect.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    detect.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    detect.add_argument("--no-overlay", action="store_true", help="skip the heatmap videos")
    detect.add_argument("--max-new-tokens", type=number_at_least(1), default=48)
    detect.add_argument("--runs-root", type=output_dir, default=Path("runs"))
    detect.set_defaults(func=run_detect)

    chat = subparsers.add_parser("chat", help="multi-turn dialogue about one video",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    chat.add_argument("video", type=Path, metavar="VIDEO")
    chat.add_argument("--questions", type=Path, help="a file of questions, one per line")
    chat.add_argument("--max-new-tokens", type=number_at_least(1), default=48)
    chat.add_argument("--max-turns", type=number_at_least(1), default=8)
    chat.add_argument("--runs-root", type=output_dir, default=Path("runs"))
    chat.set_defaults(func=run_chat)


def run_detect(args) -> int:
    # Imports deferred: the command's heavy modules load only when it runs.
    from tvad_jax import runs
    from tvad_jax.data.video_io import read_video
    from tvad_jax.infer.detect import detect_videos
    from tvad_jax.infer.dialogue import check_answer_budget
    from tvad_jax.models.tvad import load_model

    model = load_model(args.model_dir)
    check_answer_budget(model.backbone.cfg.decoder, args.max_new_tokens)
    for path in args.videos:        # decoded once before any output: a bad one costs nothing
        read_video(path)
    run_dir = runs.new_run_dir("detect", {"model": str(args.model_dir),
                                          "videos": [str(v) for v in args.videos]},
                               args.runs_root)
    for summary in detect_videos(model, args.videos, run_dir, args.max_new_tokens,
                                 overlay=not args.no_overlay):
        print(json.dumps(summary), file=sys.stderr)
    print(run_dir)
    return 0


def run_chat(args) -> int:
    # Imports deferred: the command's heavy modules load only when it runs.
    from tvad_jax import runs
    from tvad_jax.errors import DataError
    from tvad_jax.infer.detect import CHAT_QUESTION_LEN, chat_about_video
    from tvad_jax.infer.dialogue import check_answer_budget, question_problem, read_questions
    from tvad_jax.models.tvad import load_model

    model = load_model(args.model_dir)
    if model.cfg.variant == "no_rae":
        raise DataError(args.model_dir, "this model (variant no_rae) has no dialogue")
    check_answer_budget(model.backbone.cfg.decoder, args.max_new_tokens, CHAT_QUESTION_LEN)
    if not args.video.is_file():
        raise DataError(args.video, "video file not found")
    ask = functools.partial(_prompt_user, lambda q: question_problem(
        model.backbone.tokenizer, q, CHAT_QUESTION_LEN))
    if args.questions is not None:
        if not args.questions.is_file():
            raise DataError(args.questions, "questions file not found")
        ask = iter(read_questions(args.questions, model.backbone.tokenizer, args.max_turns,
                                  CHAT_QUESTION_LEN)).__next__
    turns = chat_about_video(model, args.video, ask, args.max_turns, args.max_new_tokens)
    run_dir = runs.new_run_dir("chat", {"model": str(args.model_dir), "video": str(args.video)},
                               args.runs_root)
    transcript = []
    for question, answer in turns:
        transcript.append({"question": question, "answer": answer})
        print(f"Q: {question}\nA: {answer}", flush=True)
    (run_dir / "transcript.json").write_text(json.dumps(transcript, indent=2) + "\n")
    print(f"[tvad] transcript in {run_dir / 'transcript.json'}", file=sys.stderr)
    return 0


def _prompt_user(problem: Callable[[str], str | None]) -> str:
    """The next typed question, asked again while `problem` finds one (a question too long
    for a turn is refused here, not in the middle of the dialogue)."""
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            raise StopIteration from None
        why = problem(question)
        if why is None:
            return question
        print(f"[tvad] {why}: ask a shorter one", file=sys.stderr)
