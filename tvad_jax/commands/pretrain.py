"""`tvad pretrain [--ship] [--run-dir DIR]`: pretrain the default backbone on the synthetic
benchmark (an interrupted run resumes from its checkpoint when given its folder again)."""
from __future__ import annotations

import sys
from pathlib import Path

from tvad_jax.commands.common import add_config_args, config_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the small default backbone on the synthetic benchmark")
    add_config_args(parser)
    parser.add_argument("--ship", action="store_true",
                        help="the shipped recipe: this config's run, then its continuations "
                             "(jobs.pretrain.SHIPPED_CONTINUATIONS), the last installed as the "
                             "package's default backbone")
    parser.add_argument("--run-dir", type=Path,
                        help="train into (or resume) this folder instead of a new one under "
                             "runs_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tvad_jax.jobs.pretrain import pretrain, pretrain_shipped  # deferred: loads on use

    job = pretrain_shipped if args.ship else pretrain
    run_dir = job(config_from_args(args), run_dir=args.run_dir,
                  report=lambda msg: print(msg, file=sys.stderr))
    print(run_dir)
    return 0
