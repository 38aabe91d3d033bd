"""`tvad eval ...`: score saved outputs; each subcommand prints one JSON object on stdout.

    tvad eval frame-auc --scores DIR --labels DIR [--sigma S]
    tvad eval rbdc-tbdc --tracks DIR --detections DIR --num-frames N [--alpha A --beta B]
    tvad eval text --predictions FILE [FILE ...] --references FILE
    tvad eval run RUN_DIR [--split SPLIT] [--plot] [--one-shot]
    tvad eval backbone [--config NAME] [--split SPLIT] [--one-shot] [key=value ...]

With `--run-dir DIR` the JSON and a markdown table are also written there
(`eval_<name>.json`, `eval_<name>.md`); `--plot` adds PNG curves there (a new run folder
under `--runs-root` is made when no `--run-dir` is given). The markdown table goes to stderr.

`run` evaluates a finished training run (`tvad train s3m`, `tvad`, `local-patterns`, `vlavad`)
on a split of its dataset, beside the frame-difference baseline on the same videos, and writes
`eval_<split>.json`, `eval_<split>.md` (and `roc_<split>.png` with `--plot`) into that run
folder; for T-VAD also the dialogue transcript. `backbone` evaluates the plain frozen backbone
(no AHD, no RAE) on the dialogue, zero-shot or with one in-context example (`--one-shot`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

from tvad_jax import runs
from tvad_jax.commands.common import add_config_args, config_from_args, number_at_least, output_dir
from tvad_jax.errors import InputError
from tvad_jax.eval import metrics, rbdc, report, text_metrics

DEFAULTS = metrics.EvalConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` command group."""
    parser = subparsers.add_parser("eval", help="compute evaluation metrics of saved outputs",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="eval_command", required=True)

    frame = commands.add_parser("frame-auc", help="micro and macro frame-level ROC-AUC")
    frame.add_argument("--scores", type=Path, required=True,
                       help="folder of <video>.npy float scores, one per frame")
    frame.add_argument("--labels", type=Path, required=True,
                       help="folder of <video>.npy 0/1 labels, one per frame")
    frame.add_argument("--sigma", type=number_at_least(0, float),
                       default=DEFAULTS.smoothing_sigma,
                       help="Gaussian temporal smoothing of scores, in frames (0 = off)")
    _add_output_args(frame)
    frame.set_defaults(func=_guarded(_frame_auc))

    region = commands.add_parser("rbdc-tbdc", help="region- and track-based detection criteria")
    region.add_argument("--tracks", type=Path, required=True,
                        help="folder of <video>.txt: track_id,frame_id,x_min,y_min,x_max,y_max")
    region.add_argument("--detections", type=Path, required=True,
                        help="folder of <video>.txt: frame_id,x_min,y_min,x_max,y_max,score")
    region.add_argument("--num-frames", type=number_at_least(1), required=True,
                        help="total frames of all test videos (false positives per frame)")
    region.add_argument("--alpha", type=float, default=DEFAULTS.alpha,
                        help="fraction of a track's regions that must be detected")
    region.add_argument("--beta", type=float, default=DEFAULTS.beta,
                        help="IoU for a detection to match a region")
    _add_output_args(region)
    region.set_defaults(func=_guarded(_rbdc_tbdc))

    text = commands.add_parser("text", help="BLEU-4 and Yes/No accuracy of dialogue answers")
    text.add_argument("--predictions", type=Path, nargs="+", required=True,
                      help="JSON {video: {answer_type: text}}; several files = runs with "
                           "different seeds (mean and std)")
    text.add_argument("--references", type=Path, required=True,
                      help="JSON {video: {answer_type: text or [texts]}}")
    text.add_argument("--yes-no-types", nargs="+", default=list(text_metrics.YES_NO_TYPES),
                      help="answer types scored as yes/no (others by BLEU-4)")
    _add_output_args(text, plots=False)
    text.set_defaults(func=_guarded(_text))

    run = commands.add_parser("run", help="evaluate a finished training run on a split")
    run.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                     help="run folder of `tvad train s3m|tvad|local-patterns|vlavad`")
    run.add_argument("--split", help="split to score (default: the run's eval_split)")
    run.add_argument("--plot", action="store_true", help="also write roc_<split>.png")
    run.add_argument("--one-shot", action="store_true",
                     help="T-VAD: one in-context example before each video")
    run.set_defaults(func=_guarded(_run))

    backbone = commands.add_parser("backbone", help="the plain backbone on the dialogue")
    add_config_args(backbone)
    backbone.add_argument("--split", help="split to score (default: tvad.eval_split)")
    backbone.add_argument("--one-shot", action="store_true",
                          help="one in-context example before each video")
    backbone.set_defaults(func=_guarded(_backbone))


def _add_output_args(parser: argparse.ArgumentParser, plots: bool = True) -> None:
    parser.add_argument("--run-dir", type=output_dir,
                        help="also write JSON and markdown here")
    if plots:
        parser.add_argument("--plot", action="store_true", help="also write PNG curves")
        parser.add_argument("--runs-root", type=output_dir, default=Path("runs"),
                            help="where a new run folder goes for --plot without --run-dir")


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn bad-input errors into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except InputError as err:
            print(f"tvad eval {args.eval_command}: error: {err}", file=sys.stderr)
            return 2

    return run


def _frame_auc(args: argparse.Namespace) -> int:
    scores, labels = metrics.read_frame_arrays(args.scores, args.labels)
    result = metrics.frame_auc(scores, labels, args.sigma)
    run_dir = _finish(args, "frame_auc", result.summary(),
                      dataclasses.replace(DEFAULTS, smoothing_sigma=args.sigma))
    if args.plot:
        fpr, tpr = metrics.micro_roc_curve(scores, labels, args.sigma)
        report.plot_roc({"micro": (fpr, tpr, result.micro_auc)}, run_dir / "roc.png")
    return 0


def _rbdc_tbdc(args: argparse.Namespace) -> int:
    result = rbdc.rbdc_tbdc_from_dirs(args.tracks, args.detections, args.num_frames, args.alpha,
                                      args.beta)
    run_dir = _finish(args, "rbdc_tbdc", result.summary(),
                      dataclasses.replace(DEFAULTS, alpha=args.alpha, beta=args.beta))
    if args.plot:
        report.plot_detection_curves(result, run_dir / "rbdc_tbdc.png")
    return 0


def _text(args: argparse.Namespace) -> int:
    summary = text_metrics.text_scores_from_files(args.predictions, args.references,
                                                  args.yes_no_types)
    _finish(args, "text", summary, DEFAULTS)
    return 0


def _run(args: argparse.Namespace) -> int:
    # Imports deferred: the jobs' heavy modules load only when the command runs.
    from tvad_jax.jobs.local_patterns import evaluate_local_patterns_run, is_local_patterns_run
    from tvad_jax.jobs.s3m import evaluate_run
    from tvad_jax.jobs.tvad import evaluate_tvad_run, is_tvad_run
    from tvad_jax.jobs.vlavad import evaluate_vlavad_run, is_vlavad_run

    evaluate = evaluate_tvad_run if is_tvad_run(args.run_dir) else \
        evaluate_local_patterns_run if is_local_patterns_run(args.run_dir) else \
        evaluate_vlavad_run if is_vlavad_run(args.run_dir) else evaluate_run
    kwargs = {"one_shot": args.one_shot} if is_tvad_run(args.run_dir) else {}
    try:
        summary = evaluate(args.run_dir, args.split, args.plot,
                           report=lambda msg: print(msg, file=sys.stderr), **kwargs)
    except InputError as err:  # a bad run folder or dataset: one line, exit 2
        print(f"tvad eval run: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    print(report.markdown_table(summary, title=f"eval {summary['split']}"), file=sys.stderr)
    return 0


def _backbone(args: argparse.Namespace) -> int:
    from tvad_jax.jobs.tvad import evaluate_backbone  # deferred: loads only when it runs

    cfg = config_from_args(args)
    split = args.split or cfg.tvad.eval_split
    summary = evaluate_backbone(cfg, split, args.one_shot,
                                report=lambda msg: print(msg, file=sys.stderr))
    print(json.dumps(summary, sort_keys=True))
    print(report.markdown_table(summary, title=f"plain backbone, {split}"), file=sys.stderr)
    return 0


def _finish(args: argparse.Namespace, name: str, summary: dict, config: metrics.EvalConfig
            ) -> Path | None:
    """Print JSON (stdout) and markdown (stderr); write both into the run folder if any."""
    print(json.dumps(summary, sort_keys=True))
    print(report.markdown_table(summary, title=name), file=sys.stderr)
    run_dir = args.run_dir
    if run_dir is None and getattr(args, "plot", False):
        run_dir = runs.new_run_dir(f"eval-{name}", config, root=args.runs_root)
    if run_dir is not None:
        report.write_summary(run_dir, f"eval_{name}", summary)
    return run_dir
