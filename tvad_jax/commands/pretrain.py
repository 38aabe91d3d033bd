"""`tvad pretrain [--ship]`: pretrain the default backbone on the synthetic benchmark."""
from __future__ import annotations

import sys

from tvad_jax.commands.common import add_config_args, config_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the small default backbone on the synthetic benchmark")
    add_config_args(parser)
    parser.add_argument("--ship", action="store_true",
                        help="also install the result as the package's shipped default")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tvad_jax.jobs.pretrain import pretrain  # deferred: loads only when the command runs

    run_dir = pretrain(config_from_args(args), ship=args.ship,
                       report=lambda msg: print(msg, file=sys.stderr))
    print(run_dir)
    return 0
