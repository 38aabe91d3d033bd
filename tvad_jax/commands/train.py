"""`tvad train <stage>`: train a stage into a run folder and print the folder's path.

    tvad train s3m [--config NAME] [--run-dir DIR] [key=value ...]
    tvad train tvad [--config NAME] [--run-dir DIR] [--stage1-from MODEL_DIR] [key=value ...]
    tvad train local-patterns [--config NAME] [--run-dir DIR] [key=value ...]
    tvad train vlavad [--config NAME] [--run-dir DIR] [key=value ...]
    tvad train toy --run-dir DIR [--num-devices N] [--params-out F.npz] [key=value ...]

`s3m` trains the box-track baseline: VLAVAD's S3M on per-object box sequences of the
normal-only training split (`s3m.train_split`); evaluate the run with `tvad eval run RUN_DIR`.

`tvad` trains T-VAD (paper 000) on the frozen backbone (`tvad.backbone`, default the shipped
one): stage 1 (the AHD) and stage 2 (RAE + LoRA, phases A and B), and exports the model to
RUN_DIR/model (the path printed) for `tvad detect`, `tvad chat` and `tvad eval run`. The
ablations of Table 4 are `tvad.model.variant=no_ahd` (no anomaly prompts) and
`tvad.model.variant=no_rae` (stage 1 only); `--stage1-from` reuses another run's AHD.

`local-patterns` trains paper 003's detector: ITAM on object crops of normal videos and their
plain descriptions (BLIP-2's losses), then the Reconstruction Module on the normal training
objects' local patterns and motion histograms (`local.*`); evaluate with `tvad eval run`.

`vlavad` trains paper 004's detector: the backbone's answers about every object clip of the
normal training videos, the Selective Prompt Adapter's choice of prompt and answer counts, and
the sequence predictor (S3M) on the answers' embeddings (`vlavad.*`); evaluate with
`tvad eval run`.

`toy` runs the engine on a toy regression task (`tvad_jax.train.toy`; its overrides set the
`ToyConfig`): a smoke test of the mesh, checkpoints and multi-process runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvad_jax.commands.common import add_config_args, config_from_args, number_at_least, output_dir


def add_parser(subparsers) -> None:
    """Add the `train` command group."""
    parser = subparsers.add_parser("train", help="train a stage into a run folder",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="train_command", required=True)
    s3m = commands.add_parser("s3m", help="the box-track S3M baseline (paper 004's S3M on boxes)")
    add_config_args(s3m)
    s3m.add_argument("--run-dir", type=Path,
                     help="train into (or resume) this folder instead of a new one under "
                          "runs_dir")
    s3m.set_defaults(func=run_s3m)

    tvad = commands.add_parser("tvad", help="T-VAD stages 1 and 2 (paper 000)")
    add_config_args(tvad)
    tvad.add_argument("--run-dir", type=Path, help="train into this folder")
    tvad.add_argument("--stage1-from", type=Path, metavar="MODEL_DIR",
                      help="reuse the AHD of this T-VAD model folder instead of stage 1")
    tvad.set_defaults(func=run_tvad)

    local = commands.add_parser("local-patterns", help="paper 003's local-patterns detector")
    add_config_args(local)
    local.add_argument("--run-dir", type=Path, help="train into this folder")
    local.set_defaults(func=run_local_patterns)

    vlavad = commands.add_parser("vlavad", help="paper 004's VLAVAD detector (SPA + S3M)")
    add_config_args(vlavad)
    vlavad.add_argument("--run-dir", type=Path, help="train into this folder")
    vlavad.set_defaults(func=run_vlavad)

    toy = commands.add_parser("toy", help="the engine on a toy regression task")
    toy.add_argument("--run-dir", type=output_dir, required=True)
    toy.add_argument("--num-devices", type=number_at_least(0), default=0,
                     help="use only the first N devices (0 = all)")
    toy.add_argument("--params-out", type=Path,
                     help="write the final trainable params here (.npz)")
    toy.add_argument("--pause-at-step", type=number_at_least(0), default=0,
                     help="testing: after this step (and its pending checkpoint saves), "
                          "write <run-dir>/paused-<process> and sleep until killed")
    toy.add_argument("overrides", nargs="*", metavar="key=value",
                     help="ToyConfig overrides, e.g. train.loop.steps=50")
    toy.set_defaults(func=run_toy)


def run_s3m(args) -> int:
    from tvad_jax.jobs.s3m import train_s3m  # deferred: loads only when the command runs

    run_dir = train_s3m(config_from_args(args), args.run_dir,
                        report=lambda msg: print(msg, file=sys.stderr))
    print(run_dir)
    return 0


def run_tvad(args) -> int:
    from tvad_jax.jobs.tvad import train_tvad  # deferred: loads only when the command runs

    model_dir = train_tvad(config_from_args(args), args.run_dir, args.stage1_from,
                           report=lambda msg: print(msg, file=sys.stderr))
    print(model_dir)
    return 0


def run_local_patterns(args) -> int:
    from tvad_jax.jobs.local_patterns import train_local_patterns  # deferred: loads when run

    run_dir = train_local_patterns(config_from_args(args), args.run_dir,
                                   report=lambda msg: print(msg, file=sys.stderr))
    print(run_dir)
    return 0


def run_vlavad(args) -> int:
    from tvad_jax.jobs.vlavad import train_vlavad  # deferred: loads only when the command runs

    run_dir = train_vlavad(config_from_args(args), args.run_dir,
                           report=lambda msg: print(msg, file=sys.stderr))
    print(run_dir)
    return 0


def run_toy(args) -> int:
    # Imports deferred: the engine loads only when the command runs.
    from tvad_jax import config as config_lib
    from tvad_jax.train import toy

    cfg = config_lib.apply_overrides(toy.ToyConfig(), args.overrides)
    toy.run_process(cfg, args.run_dir, args.num_devices or None, args.params_out,
                    args.pause_at_step)
    print(args.run_dir)
    return 0
